"""DAGs the provider's tests run with ``dag.test()`` against the emulator.

Prompts carry the scenario: the tests script the emulator by prompt text (see
``MindVideoEmulator.script``), e.g. a prompt containing "doomed" makes the remote task fail.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta

from airflow.sdk import DAG, AssetAlias, task

from airflow_provider_mindvideo.operators import (
    MindVideoDownloadOperator,
    MindVideoGenerateOperator,
    MindVideoSubmitOperator,
)
from airflow_provider_mindvideo.sensors import MindVideoTaskSensor

START = datetime(2026, 1, 1)
FAST = {"poll_interval": 0.1, "max_poll_interval": 0.3}
PROMPTS = [{"prompt": f"test image {i}", "size": "16:9"} for i in range(5)]
DOWNLOADS = "file://" + os.environ.get("MINDVIDEO_TEST_DOWNLOADS", os.path.join(tempfile.gettempdir(), "mv-downloads"))


DAGS: dict[str, DAG] = {}


def _dag(dag_id: str, **kwargs: object) -> DAG:
    dag = DAG(dag_id, schedule=None, start_date=START, catchup=False, params={"prompt": "a red fox"}, **kwargs)  # type: ignore[arg-type]
    DAGS[dag_id] = dag
    return dag


with _dag("mv_submit_and_wait"):
    submit = MindVideoSubmitOperator(
        task_id="submit", model="gpt-image-2", input={"prompt": "{{ params.prompt }}", "size": "16:9"}
    )
    MindVideoTaskSensor(task_id="wait", mindvideo_task_id=submit.output, deferrable=True, poke_interval=0.1)

with _dag("mv_submit_and_poke"):
    submit = MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"})
    MindVideoTaskSensor(task_id="wait", mindvideo_task_id=submit.output, deferrable=False, poke_interval=0.1)

with _dag("mv_mapped"):
    submit = MindVideoSubmitOperator.partial(task_id="submit", model="gpt-image-2").expand(input=PROMPTS)
    MindVideoTaskSensor.partial(task_id="wait", deferrable=True, poke_interval=0.1).expand(
        mindvideo_task_id=submit.output
    )
    MindVideoGenerateOperator.partial(task_id="generate", model="gpt-image-2", deferrable=True, **FAST).expand(
        input=PROMPTS
    )

with _dag("mv_generate_retry", default_args={"retries": 2, "retry_delay": timedelta(0)}):
    MindVideoGenerateOperator(
        task_id="generate", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"}, deferrable=True, **FAST
    )

with _dag("mv_generate_sync", default_args={"retries": 1, "retry_delay": timedelta(0)}):
    MindVideoGenerateOperator(
        task_id="generate", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"}, deferrable=False, **FAST
    )

with _dag("mv_explicit_key", default_args={"retries": 3, "retry_delay": timedelta(0)}):
    MindVideoSubmitOperator(
        task_id="submit",
        model="gpt-image-2",
        input={"prompt": "{{ params.prompt }}"},
        idempotency_key="shared-key-{{ dag.dag_id }}",
    )

with _dag("mv_invalid_input", default_args={"retries": 3, "retry_delay": timedelta(0)}):
    MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input={"prompt": "x", "size": "{{ params.prompt }}"})

with _dag("mv_sensor_soft_fail"):
    submit = MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"})
    MindVideoTaskSensor(
        task_id="wait", mindvideo_task_id=submit.output, deferrable=True, poke_interval=0.1, soft_fail=True
    )

with _dag("mv_sensor_never_fail"):
    submit = MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"})
    MindVideoTaskSensor(
        task_id="wait", mindvideo_task_id=submit.output, deferrable=True, poke_interval=0.1, never_fail=True
    )

with _dag("mv_sensor_soft_fail_poke"):
    submit = MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"})
    MindVideoTaskSensor(
        task_id="wait", mindvideo_task_id=submit.output, deferrable=False, poke_interval=0.1, soft_fail=True
    )

with _dag("mv_sensor_timeout"):
    submit = MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"})
    MindVideoTaskSensor(task_id="wait", mindvideo_task_id=submit.output, deferrable=True, poke_interval=0.1, timeout=1)

with _dag("mv_taskflow"):

    @task
    def prompts() -> list[dict[str, str]]:
        return [{"prompt": f"taskflow {colour}"} for colour in ("red", "green", "blue")]

    MindVideoGenerateOperator.partial(task_id="generate", model="gpt-image-2", deferrable=True, **FAST).expand(
        input=prompts()
    )

with _dag("mv_download"):
    submit = MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"})
    wait = MindVideoTaskSensor(task_id="wait", mindvideo_task_id=submit.output, deferrable=True, poke_interval=0.1)
    MindVideoDownloadOperator(
        task_id="download", urls=wait.output, destination=DOWNLOADS + "/static", mindvideo_task_id=submit.output
    )

with _dag("mv_download_urls", render_template_as_native_obj=True):
    # URLs and folder from the run's conf: re-running over the same links must not rewrite.
    MindVideoDownloadOperator(
        task_id="download",
        urls="{{ dag_run.conf['urls'] }}",
        destination="{{ dag_run.conf['folder'] }}",
        file_name="{{ dag_run.conf.get('file_name', '{url_name}') }}",
        outlets=[AssetAlias("mv-test-downloads")],
    )

with _dag("mv_generate_download", default_args={"retries": 1, "retry_delay": timedelta(0)}):
    MindVideoGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        input={"prompt": "{{ params.prompt }}"},
        deferrable=True,
        download_to=DOWNLOADS + "/generated",
        **FAST,
    )

with _dag("mv_submit_retry", default_args={"retries": 2, "retry_delay": timedelta(0)}):
    MindVideoSubmitOperator(task_id="submit", model="gpt-image-2", input={"prompt": "{{ params.prompt }}"})

with _dag("mv_generate_capped", default_args={"retries": 4, "retry_delay": timedelta(0)}):
    MindVideoGenerateOperator(
        task_id="generate",
        model="gpt-image-2",
        input={"prompt": "{{ params.prompt }}"},
        max_generations=2,
        deferrable=True,
        **FAST,
    )

with _dag("mv_hook_in_task", default_args={"retries": 2, "retry_delay": timedelta(0)}):
    # The README's pattern: the hook inside a user's own task, keyed by the task instance.

    @task
    def generate_with_the_hook() -> str:
        from airflow.sdk import get_current_context

        from airflow_provider_mindvideo.client.idempotency import task_instance_key
        from airflow_provider_mindvideo.hooks import MindVideoHook

        request = {"prompt": "a fox made of paper"}
        key = task_instance_key(get_current_context()["ti"], "gpt-image-2", request)
        with MindVideoHook() as hook:
            return hook.create_task("gpt-image-2", request, idempotency_key=key).task_id

    generate_with_the_hook()
