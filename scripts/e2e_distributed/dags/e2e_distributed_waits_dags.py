"""The DAG of `make e2e-distributed`'s rolling restart (scenario 3), in a file of its own.

Each of its waits is a task run on a worker (mapped tasks cannot start in the triggerer), and
each task run parses the DAG's file: this one imports only the sensor and the hook, not the
``@task`` decorators (about 0.15 s of CPU per import on this machine) nor every operator.
scripts/e2e_distributed/deployment.py copies it into the deployment's DAG folder.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from airflow.sdk import DAG, BaseOperator, Param

from airflow_provider_mindvideo.client.idempotency import task_instance_key
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.sensors import MindVideoTaskSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

MODEL = "gpt-image-2"


class SubmitPrompts(BaseOperator):
    """Create one remote task per prompt of the run's config; return their ids.

    Each create sends its task-instance key (the same on every try): a retry after a lost
    answer or a killed worker gets the tasks back instead of paying twice.
    """

    def execute(self, context: Context) -> list[str]:
        ti = context["ti"]
        requests = [{"prompt": prompt, "size": "1:1"} for prompt in context["params"]["prompts"]]
        with MindVideoHook() as hook:
            return [
                hook.create_task(MODEL, request, idempotency_key=task_instance_key(ti, MODEL, request)).task_id
                for request in requests
            ]


with DAG(
    dag_id="mindvideo_dist_waits",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    params={"prompts": Param(["a lighthouse"], type="array", minItems=1)},
    default_args={"retries": 3, "retry_delay": timedelta(seconds=5)},
    max_active_tasks=2048,
    doc_md="Scenario 3: many waits deferred at once, held by the emulator while the triggerers restart.",
):
    submit = SubmitPrompts(task_id="submit")
    # Every wait ends in the triggerer once its task succeeds: one worker run per wait, not two.
    MindVideoTaskSensor.partial(
        task_id="wait",
        deferrable=True,
        end_from_trigger=True,
        poke_interval=5,
        max_poll_interval=20,
        timeout=3600,
    ).expand(mindvideo_task_id=submit.output)
