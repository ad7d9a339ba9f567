"""What a task instance may spend: the ceiling (max_cost: predict, reserve, settle); the ledger and
budgets come here too.
May import client/ only.
"""
