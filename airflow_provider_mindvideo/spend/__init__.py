"""What money may be spent: the ceiling of one task instance (max_cost), the ledger of every create
across DAGs (reserved, settled, released) and the budgets over it with their calendar windows.
May import client/ only, SQLAlchemy and the standard library; Airflow config and connections only in spend.location.
"""
