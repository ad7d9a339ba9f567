"""Budgets: named spending limits per calendar window, read from a MindVideo connection's extras. Pure.

The extras hold them, so a team edits a limit in the Airflow UI (Admin > Connections) without a
code change or a deploy::

    {"budgets": {"account": {"day": 50, "month": 1000}, "marketing": {"month": 200}},
     "budget_timezone": "Europe/Berlin"}

``account`` counts every create made through the connection; any other name counts only the
creates of operators that opt in (``budget="marketing"``). Limits are in the API's cost unit.
Windows are calendar days, ISO weeks and months in ``budget_timezone`` (default UTC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_provider_mindvideo.client.errors import InputValidationError

# Checked where DAG files are parsed, so kept in a module that imports nothing heavy (no zoneinfo).
from airflow_provider_mindvideo.spend.arguments import ACCOUNT as ACCOUNT
from airflow_provider_mindvideo.spend.arguments import ON_BUDGET_EXHAUSTED as ON_BUDGET_EXHAUSTED
from airflow_provider_mindvideo.spend.arguments import check_budget_arguments as check_budget_arguments
from airflow_provider_mindvideo.spend.windows import Period

#: Amounts are kept as whole micro-units (1e-6 of the API's cost unit): sums in SQL are then exact
#: on every database, and a create that fits a limit exactly is never refused for a rounding error.
MICROS = 1_000_000


#: The most one amount is held as (about 9 billion in the API's unit): a cost a server sends past it
#: (1e308 is a finite number) counts as this much, so it fills every window it is in, and a
#: thousand of them still sum within the databases' 64-bit integers.
MOST_MICROS = 2**53


def to_micros(amount: float) -> int:
    """An amount in the API's cost unit, as whole micro-units (at most :data:`MOST_MICROS`)."""
    micros = amount * MICROS
    return MOST_MICROS if not micros < MOST_MICROS else round(micros)


def from_micros(micros: int) -> float:
    """Whole micro-units, back in the API's cost unit."""
    return micros / MICROS


@dataclass(frozen=True)
class BudgetLimit:
    """One limit: at most ``limit`` (micro-units) per ``period`` window, counted as ``name``."""

    name: str
    period: Period
    limit: int


@dataclass(frozen=True)
class BudgetConfig:
    """The budgets of one MindVideo connection (the account)."""

    account: str
    budgets: tuple[BudgetLimit, ...] = ()
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(budget.name for budget in self.budgets)

    def applicable(self, budget: str | None = None) -> tuple[BudgetLimit, ...]:
        """The limits a create counts against: the account's, and ``budget``'s when an operator names one.

        :raises InputValidationError: ``budget`` is not configured on this connection (a typo must
            not go uncounted).
        """
        if budget is not None and budget not in self.names:
            known = ", ".join(sorted(self.names - {ACCOUNT})) or "none"
            raise InputValidationError(
                f"budget = {budget!r}: MindVideo connection {self.account!r} has no such budget in its extra "
                f"'budgets' (named budgets there: {known})"
            )
        return tuple(b for b in self.budgets if b.name == ACCOUNT or b.name == budget)


_EXAMPLE = '{"account": {"day": 50}}'
_LIMITS_EXAMPLE = '{"day": 50, "month": 1000}'


def budgets_from_extras(extras: Mapping[str, Any] | None, account: str) -> BudgetConfig:
    """Read ``budgets`` and ``budget_timezone`` from a connection's extras; every problem named in one error.

    :param account: the connection id: budgets count per connection.
    """
    extras = extras or {}
    where = f"MindVideo connection {account!r}"
    problems: list[str] = []
    timezone = _timezone(extras.get("budget_timezone"), problems)
    raw = extras.get("budgets")
    budgets: list[BudgetLimit] = []
    if raw in (None, "", {}):
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append(f'extra budgets = {raw!r} must be an object of budget names, e.g. {{"account": {{"day": 50}}}}')
        raw = {}
    for name, limits in raw.items():
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            problems.append(f"extra budgets has a name {name!r}: must be a non-empty text of at most 100 characters")
            continue
        if not isinstance(limits, Mapping) or not limits:
            problems.append(f'extra budgets.{name} = {limits!r} must be an object such as {{"day": 50, "month": 1000}}')
            continue
        for period, limit in limits.items():
            field = f"extra budgets.{name}.{period}"
            if period not in {p.value for p in Period}:
                problems.append(f"{field}: {period!r} is no window; use day, week or month")
            elif isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit) or limit < 0:
                problems.append(f"{field} = {limit!r} must be a number >= 0 (the most to spend per {period})")
            else:
                budgets.append(BudgetLimit(name, Period(period), to_micros(limit)))
    if problems:
        raise InputValidationError(f"{where}: " + "; ".join(problems))
    return BudgetConfig(account, tuple(budgets), timezone)


def _timezone(value: Any, problems: list[str]) -> ZoneInfo:
    if value in (None, ""):
        return ZoneInfo("UTC")
    if isinstance(value, str):
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    problems.append(f"extra budget_timezone = {value!r} must be an IANA timezone name such as 'Europe/Berlin'")
    return ZoneInfo("UTC")
