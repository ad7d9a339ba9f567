"""Spend across DAGs: the spend ledger (every create reserved, settled or released), budgets and their calendar windows.

Imports only the client core (errors), SQLAlchemy and the standard library; Airflow's config and
connections are read in one module alone, :mod:`airflow_provider_mindvideo.spend.location`.
"""
