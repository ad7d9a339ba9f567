"""Stand-ins the tests share for what Airflow hands an operator at run time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Ti:
    """What the operators and the batch's work list read of Airflow's task instance, and its XComs.

    The identity fields feed the idempotency keys; a test that runs a task again, or several
    tasks, says which field differs (``try_number``, ``task_id``).
    """

    try_number: int = 1
    dag_id: str = "mv_test"
    task_id: str = "generate"
    run_id: str = "manual__test"
    map_index: int = -1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get(key)
