"""``mindvideo-spend``: the ledger in a terminal (plain tables) or for alerting (``--json``).

    mindvideo-spend                      budget windows in force now: limit, spent, reserved, left, reset
    mindvideo-spend by dag|model|account|day [--since 2026-05-01] [--until 2026-06-01]
    mindvideo-spend recent [-n 20] [--dag DAG_ID]
    mindvideo-spend refused [-n 20] [--dag DAG_ID] [--model MODEL]   creates a budget refused (never sent)
    mindvideo-spend reconcile [--older-than 30] [--task KEY=TASK_ID ...]   settle creates left reserved
    mindvideo-spend schema [--dialect postgresql|sqlite]

The ledger is the one the workers use (``[mindvideo] ledger_conn_id``, else the SQLite file under
$AIRFLOW_HOME); ``--ledger-url`` reads another. Exit status 0, or 2 for a bad argument;
``reconcile`` exits 1 when it left any reservation open (alerting can watch for it).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_mindvideo.spend.schema import schema_sql
from airflow_provider_mindvideo.spend.windows import UTC

#: ``(account, task_id)`` -> the task as the API tells it (the hook's ``get_task``, given by spend_command).
TaskLookup = Callable[[str, str], Any]


def main(argv: Sequence[str] | None = None, lookup: TaskLookup | None = None) -> int:
    """The command; ``reconcile`` needs ``lookup`` (this room may not import the hook: spend_command gives it)."""
    parser = argparse.ArgumentParser(prog="mindvideo-spend", description="What MindVideo creates have cost.")
    parser.add_argument("--ledger-url", help="a SQLAlchemy URL (default: the ledger Airflow's settings name)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--account", help="only this MindVideo connection id")
    commands = parser.add_subparsers(dest="command")
    windows = commands.add_parser("windows", help="budget windows in force (the default)")
    windows.add_argument("--at", type=_instant, help="an ISO time (UTC if no offset); default now")
    by = commands.add_parser("by", help="totals per dag, model, account or UTC day")
    by.add_argument("grouping", choices=["dag", "model", "account", "day"])
    by.add_argument("--since", type=_instant)
    by.add_argument("--until", type=_instant)
    recent = commands.add_parser("recent", help="the newest creates")
    recent.add_argument("-n", type=int, default=20)
    recent.add_argument("--dag")
    refused = commands.add_parser("refused", help="the newest creates a budget refused")
    refused.add_argument("-n", type=int, default=20)
    refused.add_argument("--dag")
    refused.add_argument("--model")
    settle = commands.add_parser("reconcile", help="settle creates left reserved by a process that died")
    settle.add_argument("--older-than", type=float, default=30.0, help="minutes (default 30)")
    settle.add_argument("--task", action="append", default=[], type=_key_and_task, help="KEY=TASK_ID")
    schema = commands.add_parser("schema", help="print the ledger's SQL")
    schema.add_argument("--dialect", choices=["postgresql", "sqlite"], default="postgresql")
    args = parser.parse_args(argv)

    if args.command == "schema":
        sys.stdout.write(schema_sql(args.dialect))
        return 0
    from airflow_provider_mindvideo.spend import reading
    from airflow_provider_mindvideo.spend.engines import engine_for_url
    from airflow_provider_mindvideo.spend.ledger import Ledger

    if args.ledger_url:
        url = args.ledger_url
    else:
        from airflow_provider_mindvideo.spend.location import ledger_url

        url = ledger_url()
    engine = Ledger(engine_for_url(url)).engine
    rows: list[Any]
    if args.command == "reconcile":
        if lookup is None:
            parser.error(
                "reconcile looks tasks up: run it as mindvideo-spend (airflow_provider_mindvideo.spend_command)"
            )
        return _reconcile(Ledger(engine), lookup, dict(args.task), dt.timedelta(minutes=args.older_than), args.json)
    if args.command == "by":
        rows = reading.spend_totals(engine, args.grouping, since=args.since, until=args.until, account=args.account)
        columns = ["key", "creates", "settled", "reserved", "counted", "refused"]
    elif args.command == "recent":
        rows = reading.recent_creates(engine, limit=args.n, account=args.account, dag_id=args.dag)
        columns = ["created_at", "dag_id", "task_id", "map_index", "model", "state", "reserved", "cost", "budgets"]
    elif args.command == "refused":
        rows = reading.refused_creates(engine, limit=args.n, account=args.account, dag_id=args.dag, model=args.model)
        columns = ["created_at", "dag_id", "run_id", "task_id", "map_index", "model", "budgets", "reserved"]
    else:
        rows = reading.budget_windows(engine, account=args.account, at=getattr(args, "at", None))
        columns = ["account", "budget", "period", "start", "limit", "spent", "reserved", "left", "resets_at"]
    records = [_record(row, columns) for row in rows]
    if args.json:
        json.dump(records, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_table(columns, records))
    return 0


def _reconcile(
    ledger: Any, lookup: TaskLookup, task_ids: dict[str, str], older_than: dt.timedelta, as_json: bool
) -> int:
    from airflow_provider_mindvideo.spend.reconcile import reconcile

    done = reconcile(ledger, lookup, older_than=older_than, task_ids=task_ids)
    columns = ["created_at", "idempotency_key", "dag_id", "task_id", "map_index", "outcome", "cost", "why"]
    records = [_record(r.row, columns) | {"outcome": r.outcome, "why": r.why, "cost": r.row.cost} for r in done]
    if as_json:
        json.dump(records, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_table(columns, records))
    return 1 if any(r.outcome != "settled" for r in done) else 0


def _key_and_task(text: str) -> tuple[str, str]:
    key, sep, task_id = text.partition("=")
    if not (sep and key and task_id):
        raise argparse.ArgumentTypeError(f"--task {text!r}: write KEY=TASK_ID (the create's idempotency key)")
    return key, task_id


def _instant(text: str) -> dt.datetime:
    try:
        instant = dt.datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is no ISO date or time (e.g. 2026-05-01)") from error
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def _record(row: Any, columns: list[str]) -> dict[str, Any]:
    values = dataclasses.asdict(row) | {c: getattr(row, c) for c in columns if hasattr(row, c)}
    shown = {c: values.get(c) for c in columns}
    for name, value in shown.items():
        if isinstance(value, dt.datetime):
            shown[name] = value.isoformat()
        elif isinstance(value, tuple):
            shown[name] = " ".join(value)
    return shown


def _table(columns: list[str], records: list[dict[str, Any]]) -> str:
    cells = [columns] + [[_cell(record[c]) for c in columns] for record in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    if not records:
        lines.append("(nothing recorded)")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
