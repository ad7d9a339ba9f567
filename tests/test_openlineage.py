"""Lineage: what OpenLineage hears about a MindVideo run.

The pure parts (which strings are reference files, how a URL or a stored file is named, what
the run facet says) are checked directly; the whole path -- the OpenLineage provider's listener,
its extractor calling the operators' ``get_openlineage_facets_on_*``, a file transport -- runs in
a real ``dag.test()`` in its own process, configured as a user would configure it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo.emulator import MindVideoEmulator
from airflow_provider_mindvideo.outputs.lineage import (
    RUN_FACET_NAME,
    dataset_id,
    operator_lineage,
    reference_urls,
    run_facet_fields,
    web_urls,
)
from tests.dags.mindvideo_native_dags import REFERENCE

ROOT = Path(__file__).resolve().parents[1]


def test_reference_urls_are_the_urls_under_url_fields_only() -> None:
    request = {
        "prompt": "like https://example.com/not-an-input.png",
        "image_urls": ["https://cdn.example/a.png", "data:image/png;base64,AAAA", "https://cdn.example/b.png"],
        "mask_url": "https://cdn.example/a.png",
        "image_with_roles": [{"url": "http://cdn.example:8080/c.png?sig=1", "role": "style"}],
        "video_url": "ftp://cdn.example/v.mp4",
        "size": "16:9",
    }
    assert reference_urls(request) == [
        "https://cdn.example/a.png",
        "https://cdn.example/b.png",
        "http://cdn.example:8080/c.png?sig=1",
    ]
    assert reference_urls("not a mapping") == []
    assert web_urls([["https://a.example/1.png"], "file:///etc/passwd", "https://a.example/1.png"]) == [
        "https://a.example/1.png"
    ]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("https://cdn.example:8443/out/0.png?X-Amz-Signature=secret", ("https://cdn.example:8443", "/out/0.png")),
        ("file:///data/media/t_0.png", ("file", "/data/media/t_0.png")),
        ("/data/media/t_0.png", ("file", "/data/media/t_0.png")),
        ("s3://bucket/media/t_0.png", ("s3://bucket", "media/t_0.png")),
        ("gcs://bucket/media/t_0.png", ("gs://bucket", "media/t_0.png")),
        ("abfs://container/media/t_0.png", ("abfs://container", "/media/t_0.png")),
    ],
)
def test_dataset_names_follow_openlineage_conventions_and_drop_signatures(uri: str, expected: tuple[str, str]) -> None:
    assert dataset_id(uri) == expected


def test_run_facet_lists_every_task_and_totals_only_known_costs() -> None:
    done = {
        "task_id": "t1",
        "model": "gpt-image-2",
        "status": "succeeded",
        "cost_estimate": 0.0135,
        "cost_actual": 0.0135,
        "key_generation": 1,
        "idempotency_key": "af-x",
    }
    waiting = {"task_id": "t2", "model": "gpt-image-2", "status": "processing", "cost_estimate": 0.0135}
    fields = run_facet_fields([done, waiting])
    assert fields["model"] == "gpt-image-2"
    assert fields["taskIds"] == ["t1", "t2"]
    assert fields["costEstimate"] == 0.027
    assert "costActual" not in fields  # t2's is unknown: a partial sum would read as the whole bill
    assert fields["tasks"][0] == {
        "taskId": "t1",
        "model": "gpt-image-2",
        "status": "succeeded",
        "costEstimate": 0.0135,
        "costActual": 0.0135,
        "keyGeneration": 1,
    }
    assert "idempotency_key" not in json.dumps(fields)
    assert "model" not in run_facet_fields([done, {**waiting, "model": "veo3-1-fast"}])


def test_stored_files_are_named_as_airflows_own_lineage_names_them() -> None:
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset
    from airflow.sdk import Asset

    path = "file:///data/media/t_0.png"
    lineage = operator_lineage(outputs=[path, path])
    airflows = translate_airflow_asset(Asset(path), None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(airflows.namespace, airflows.name)]
    assert lineage.run_facets == {}


def test_the_operators_report_what_their_try_did() -> None:
    from airflow_provider_mindvideo.operators import MindVideoDownloadOperator, MindVideoGenerateOperator

    generate = MindVideoGenerateOperator(
        task_id="generate", model="gpt-image-2", input={"prompt": "x", "image_urls": ["https://cdn.example/ref.png"]}
    )
    before = generate.get_openlineage_facets_on_failure(None)  # failed before it created anything
    assert (before.outputs, before.run_facets) == ([], {})
    assert [(d.namespace, d.name) for d in before.inputs] == [("https://cdn.example", "/ref.png")]
    generate._record = {
        "task_id": "t1",
        "model": "gpt-image-2",
        "status": "succeeded",
        "cost_estimate": 0.01,
        "cost_actual": 0.01,
        "key_generation": 0,
    }
    generate._outputs = ["file:///data/t1_0.png"]
    after = generate.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in after.outputs] == [("file", "/data/t1_0.png")]
    assert after.run_facets[RUN_FACET_NAME].taskIds == ["t1"]

    download = MindVideoDownloadOperator(
        task_id="copy", urls=[["https://cdn.example/0.png"]], destination="file:///data"
    )
    download._outputs = ["file:///data/url-abc_0.png"]
    copied = download.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in copied.inputs] == [("https://cdn.example", "/0.png")]
    assert [(d.namespace, d.name) for d in copied.outputs] == [("file", "/data/url-abc_0.png")]


# -- The whole path, as a user runs it --------------------------------------------------------


@pytest.fixture
def lineage_run(airflow_db: str, emulator: MindVideoEmulator, tmp_path: Path) -> Any:
    """Run a DAG of tests/dags/mindvideo_native_dags.py with OpenLineage on; returns its events by task."""

    def run(dag_id: str, **params: Any) -> dict[str, dict[str, dict[str, Any]]]:
        events_file = tmp_path / f"{dag_id}-openlineage.jsonl"
        conf = {"folder": f"file://{tmp_path}/media", "copies": f"file://{tmp_path}/copies", **params}
        # A metadata database of its own: the OpenLineage listener forks with SQLite connections
        # open, which corrupted the database the rest of the suite shares ("disk image is malformed").
        home = tmp_path / "airflow-home"
        home.mkdir()
        shutil.copy(Path(airflow_db) / "airflow.db", home / "airflow.db")
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(events_file), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "mindvideo-tests",
        }
        code = (
            "import json, sys\n"
            "from tests.dags.mindvideo_native_dags import DAGS\n"
            "print(DAGS[sys.argv[1]].test(run_conf=json.loads(sys.argv[2])).state)\n"
        )
        subprocess.run(
            [sys.executable, "-c", code, dag_id, json.dumps(conf)], cwd=ROOT, env=env, check=True, capture_output=True
        )
        events: dict[str, dict[str, dict[str, Any]]] = {}
        for line in events_file.read_text().splitlines():
            event = json.loads(line)
            task = event["job"]["name"].split(".", 1)[-1]  # "<dag_id>.<task_id>"; the DAG's own is "<dag_id>"
            events.setdefault(task, {})[event["eventType"]] = event
        return events

    return run


def datasets(event: dict[str, Any], side: str) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in event[side]]


def test_generate_and_download_report_inputs_outputs_and_the_generation(
    lineage_run: Any, emulator: MindVideoEmulator, tmp_path: Path
) -> None:
    events = lineage_run("mv_generate_and_copy", prompt="a lineage fox")
    (remote,) = emulator.state.snapshot()["tasks"]
    stored = sorted((tmp_path / "media").iterdir())
    copies = sorted((tmp_path / "copies").iterdir())
    assert [f.name for f in stored] == [f"{remote['task_id']}_0.png"]
    assert [f.name for f in copies] == ["copy_0.png"]
    output_url = f"{emulator.base_url}/files/{remote['task_id']}/0.png"

    generate = events["generate"]["COMPLETE"]
    assert datasets(generate, "inputs") == [("https://images.example.com", "/refs/fox.png")]
    assert REFERENCE.endswith("?signature=abc")  # ...and the signature stayed out of the lineage store
    assert datasets(generate, "outputs") == [("file", str(stored[0]))]  # the final name, never a temporary one
    facet = generate["run"]["facets"][RUN_FACET_NAME]
    assert facet["model"] == "gpt-image-2"
    assert facet["taskIds"] == [remote["task_id"]]
    assert (facet["costEstimate"], facet["costActual"]) == (0.0135, 0.0135)
    (task,) = facet["tasks"]
    assert (task["status"], task["keyGeneration"]) == ("succeeded", 0)
    assert "idempotency" not in json.dumps(facet) and emulator.api_key not in json.dumps(events)

    copy = events["copy"]["COMPLETE"]
    assert datasets(copy, "inputs") == [(emulator.base_url, f"/files/{remote['task_id']}/0.png")]
    assert output_url.startswith(emulator.base_url)
    assert datasets(copy, "outputs") == [("file", str(copies[0]))]
    assert RUN_FACET_NAME not in copy["run"]["facets"]  # a download of links creates no MindVideo task


def test_a_failed_generation_still_reports_what_it_cost(lineage_run: Any, emulator: MindVideoEmulator) -> None:
    emulator.script("doomed", "failed", error="GPU fell over", queued_seconds=0, processing_seconds=0.2)
    events = lineage_run("mv_generate_fails", prompt="a doomed fox")
    failed = events["generate"]["FAIL"]
    facet = failed["run"]["facets"][RUN_FACET_NAME]
    (task,) = facet["tasks"]
    assert task["status"] == "failed"
    assert facet["costActual"] == emulator.state.total_charged
    assert failed["outputs"] == []
