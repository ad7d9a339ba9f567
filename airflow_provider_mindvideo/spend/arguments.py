"""An operator's ``budget`` and ``on_budget_exhausted``, checked when the DAG is parsed.

Apart from :mod:`airflow_provider_mindvideo.spend.budgets` (windows, timezones) because every DAG
file that names an operator imports this at every parse.
"""

from __future__ import annotations

#: The budget every create through a connection counts against.
ACCOUNT = "account"

#: What a refused create does: fail the task (default), or wait for the window's reset (deferred).
ON_BUDGET_EXHAUSTED = ("fail", "wait")


def check_budget_arguments(budget: object, on_budget_exhausted: object) -> None:
    """Refuse an operator's ``budget`` or ``on_budget_exhausted`` no connection could accept, when the DAG is parsed.

    Whether the connection defines the name is known only when the task runs (it may be edited
    in the UI): :meth:`BudgetConfig.applicable` checks it then, before anything is sent.
    """
    if budget is not None and (not isinstance(budget, str) or not budget.strip() or len(budget) > 100):
        raise ValueError(
            f"budget = {budget!r}: must be the name of a budget in the MindVideo connection's extra 'budgets' "
            "(a non-empty text of at most 100 characters), or None for the account's budgets alone"
        )
    if budget == ACCOUNT:
        raise ValueError(f"budget = {budget!r}: every create counts against {ACCOUNT!r} already; name another budget")
    if on_budget_exhausted not in ON_BUDGET_EXHAUSTED:
        raise ValueError(f"on_budget_exhausted = {on_budget_exhausted!r}: must be 'fail' or 'wait'")
