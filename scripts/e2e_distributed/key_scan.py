"""Scenario 4, always last: the API key in no log file, XCom row, trigger row or rendered field."""

from __future__ import annotations

import json
import shutil
from typing import Any

from scripts.e2e_distributed.checks import files_with_key, key_forms, trigger_kwargs_text
from scripts.e2e_distributed.config import check, log
from scripts.e2e_distributed.deployment import Deployment


def scenario_no_key_anywhere(deployment: Deployment, figures: dict[str, Any]) -> None:
    """4. No API key in any log file, XCom row, trigger row or rendered field (or any other table)."""
    forms = key_forms(deployment.api_key)
    # The scan must be able to fail: a planted escaped key is found.
    canary = deployment.home / "canary"
    canary.mkdir()
    (canary / "planted.log").write_text(f'{{"auth": "{json.dumps(deployment.api_key)[1:-1]}"}}')
    check(files_with_key(canary, forms) == [str(canary / "planted.log")], "the key scan misses a planted key")
    shutil.rmtree(canary)

    # Not scanned as files: the database's own (its tables are scanned below) and the emulator's
    # log, which is MindVideo's side: it prints the keys it accepts.
    skipped = (str(deployment.pg_data), str(deployment.home / "logs" / "emulator.log"))
    leaks = [f for f in files_with_key(deployment.home, forms) if not f.startswith(skipped)]
    tables = [row[0] for row in deployment.query("select tablename from pg_tables where schemaname = 'public'")]
    scanned = 0
    for table in tables:
        conditions = " or ".join(["t::text like %s"] * len(forms))
        rows = deployment.query(
            f'select count(*) from "{table}" t where {conditions}',  # our own table names
            *[f"%{form}%" for form in forms],
        )
        scanned += 1
        if rows[0][0]:
            leaks.append(f"table {table}: {rows[0][0]} row(s)")
    # Trigger kwargs are encrypted with the Fernet key: read them decrypted too.
    from airflow.models.crypto import get_fernet

    fernet = get_fernet()
    for (kwargs,) in deployment.query("select kwargs from trigger"):
        text = trigger_kwargs_text(fernet, kwargs)
        if any(form in text for form in forms):
            leaks.append("a trigger's decrypted kwargs")
    counted = {
        name: deployment.query(f'select count(*) from "{name}"')[0][0]
        for name in ("xcom", "trigger", "rendered_task_instance_fields", "task_instance")
    }
    log_files = sum(1 for p in deployment.home.rglob("*.log") if p.is_file())
    check(not leaks, f"the API key leaked into: {leaks}")
    log(f"scenario 4: no key in {log_files} log files or {scanned} tables ({counted})")
    figures.update(key_scan_tables=scanned, key_scan_log_files=log_files, key_scan_rows=counted)
