"""The fault matrix: every fault the emulator can produce, at the submit step and at the wait step.

Each scenario runs a real DAG (``dag.test()``) against an emulator of its own, with a secret
API key, and asserts the outcome, what was charged, the cause reported and that no run
outlived its deadline; the last test then scans everything a user could see for the API key.

``docs/reliability.md`` is rendered from the scenarios (what these tests assert, so the page
is true whenever they pass), never from timings: ``make reliability-report`` writes it, and
``test_the_reliability_page_is_current`` fails when the committed page is stale.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mindvideo.emulator import EmulatorConfig, MindVideoEmulator
from airflow_provider_mindvideo.hooks import MindVideoHook
from airflow_provider_mindvideo.triggers import MindVideoTaskTrigger
from tests.dags.mindvideo_reliability_dags import WAIT_TIMEOUT, generate_dag, sensor_dag

SECRET_KEY = "mv_live_SECRET_9f8e7d6c5b4a_do_not_leak"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
CAUSE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Timeout)): (.+)$")
# The longest a run may take: three tries, each at most one wait plus its in-call retries.
DEADLINE = 3 * (WAIT_TIMEOUT + 5)


@dataclass(frozen=True)
class Scenario:
    fault: str
    step: str  # "submit", "wait" or "remote"
    inject: Callable[[MindVideoEmulator], None]
    succeeds: bool
    charged: int = 1
    cause: str = ""  # a regex the failure's message must match
    dag: str = "generate"
    wait_conn_dead: bool = False


def fault(kind: str, **options: Any) -> Callable[[MindVideoEmulator], None]:
    return lambda emulator: emulator.add_fault(kind, **options)


def faults(*injections: Callable[[MindVideoEmulator], None]) -> Callable[[MindVideoEmulator], None]:
    def inject(emulator: MindVideoEmulator) -> None:
        for one in injections:
            one(emulator)

    return inject


def retry_after_date(route: str) -> Callable[[MindVideoEmulator], None]:
    def inject(emulator: MindVideoEmulator) -> None:
        when = email.utils.formatdate(time.time() + 1, usegmt=True)
        emulator.add_fault("status", route=route, status=429, retry_after=when, times=2)

    return inject


def script(outcome: str, **options: Any) -> Callable[[MindVideoEmulator], None]:
    return lambda emulator: emulator.script("", outcome, **options)


def nothing(emulator: MindVideoEmulator) -> None:
    pass


def both_steps(name: str, kind: str, succeeds: bool = True, cause: str = "", **options: Any) -> list[Scenario]:
    return [
        Scenario(name, step, fault(kind, route=route, **options), succeeds, cause=cause)
        for step, route in (("submit", "create"), ("wait", "get"))
    ]


SCENARIOS: list[Scenario] = [
    *both_steps("429 storm, Retry-After in seconds", "status", status=429, retry_after="1", times=3),
    Scenario("429, Retry-After as an HTTP date", "submit", retry_after_date("create"), True),
    Scenario("429, Retry-After as an HTTP date", "wait", retry_after_date("get"), True),
    *both_steps("429 without Retry-After", "status", status=429, times=3),
    Scenario(
        "500, 502, 503, 504 in a row",
        "submit",
        faults(*(fault("status", route="create", status=s) for s in (500, 502, 503, 504))),
        True,
    ),
    Scenario(
        "500, 502, 503, 504 in a row",
        "wait",
        faults(*(fault("status", route="get", status=s) for s in (500, 502, 503, 504))),
        True,
    ),
    *both_steps("502 with a proxy's HTML page", "html", times=2),
    Scenario(
        "503 that does not end",
        "submit",
        fault("status", route="create", status=503, times=10_000),
        False,
        charged=0,
        cause=r"ServerError: .*503",
    ),
    # The retry's replayed POST answers with the task's final state: no wait is needed.
    Scenario("503 that does not end", "wait", fault("status", route="get", status=503, times=10_000), True),
    Scenario(
        "503 that does not end",
        "wait",
        # The sensor's first look passes and sees the task still working (held: a task that ended
        # before that look, as a busy machine allows, would be seen done and the 503s never met).
        faults(fault("status", route="get", status=503, times=10_000, after=1), script("never")),
        False,
        cause=r"did not finish in time; the last check failed: .*503",
        dag="sensor",
    ),
    Scenario("connection refused (outage)", "submit", nothing, False, charged=0, cause=r"Could not reach MindVideo"),
    Scenario(
        "connection refused (outage)",
        "wait",
        nothing,
        False,
        cause=r"Could not reach MindVideo",
        dag="sensor",
        wait_conn_dead=True,
    ),
    *both_steps("connection cut mid-response", "drop"),
    Scenario(
        "POST answered late: read timeout after the task was created",
        "submit",
        fault("delay", route="create", seconds=2.5),
        True,
    ),
    Scenario("read timeout", "wait", fault("delay", route="get", seconds=2.5), True),
    # One byte every 0.2 s: about a minute for the whole answer, cut at the 1 s attempt budget.
    *both_steps("answer trickled a byte at a time", "trickle", seconds=0.2, times=3),
    Scenario(
        "create answer already says failed (refused at once)",
        "remote",
        script("failed", queued_seconds=0, processing_seconds=0),
        False,
        charged=3,  # one per try, never more
        cause=r"as soon as it was created",
    ),
    *both_steps("slow server (answers within the timeout)", "delay", seconds=0.4, times=3),
    *both_steps("malformed JSON", "malformed_json"),
    *both_steps("truncated JSON body", "truncated"),
    *both_steps("body missing required fields", "missing_fields"),
    *both_steps("unknown status value", "unknown_status", times=3),
    Scenario(
        "task id disappears (404 while waiting)",
        "wait",
        fault("status", route="get", status=404, times=10_000),
        False,
        cause=r"TaskNotFoundError: MindVideo task not found",
    ),
    Scenario(
        "succeeded with no output URLs",
        "remote",
        script("no_output"),
        False,
        cause=r"EmptyOutputError: .*succeeded but returned no output URLs",
    ),
    Scenario("remote task failed once", "remote", script("failed", times=1), True, charged=2),
    Scenario("remote task cancelled once", "remote", script("cancelled", times=1), True, charged=2),
    Scenario(
        "remote task failed every time",
        "remote",
        script("failed"),
        False,
        charged=3,
        cause=r"failed: The model could not",
    ),
    Scenario("remote task never finishes", "remote", script("never"), False, cause=r"did not finish in time"),
]


@dataclass
class Record:
    scenario: Scenario
    state: str
    cause: str
    charged: int
    seconds: float


TASKS = {"generate": "Generate", "sensor": "Submit + Sensor"}
RECORDS: list[Record] = []
OUTPUT: list[str] = []  # everything the runs printed, for the secrets scan


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connection(base_url: str) -> str:
    extra = {"timeout": 1.0, "max_retries": 2}
    return json.dumps({"conn_type": "mindvideo", "host": base_url, "password": SECRET_KEY, "extra": extra})


@pytest.fixture(scope="module")
def emulator(airflow_db: str) -> Iterator[MindVideoEmulator]:
    config = EmulatorConfig(api_keys=(SECRET_KEY,), queued_seconds=0.1, processing_seconds={"image": 0.3})
    with MindVideoEmulator(config=config) as server:
        # The first dag.test() of a process parses the DAGs folder and warms Airflow up; that
        # is not the provider's time, and the matrix bounds each run's time.
        os.environ["AIRFLOW_CONN_MINDVIDEO_RELIABILITY"] = connection(server.base_url)
        os.environ["AIRFLOW_CONN_MINDVIDEO_RELIABILITY_WAIT"] = connection(server.base_url)
        try:
            assert str(generate_dag.test(run_conf={"prompt": "warm-up"}).state) == "success"
        finally:
            del os.environ["AIRFLOW_CONN_MINDVIDEO_RELIABILITY"], os.environ["AIRFLOW_CONN_MINDVIDEO_RELIABILITY_WAIT"]
        yield server


@pytest.fixture
def connections(emulator: MindVideoEmulator, monkeypatch: pytest.MonkeyPatch) -> MindVideoEmulator:
    emulator.state.reset()
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_RELIABILITY", connection(emulator.base_url))
    monkeypatch.setenv("AIRFLOW_CONN_MINDVIDEO_RELIABILITY_WAIT", connection(emulator.base_url))
    return emulator


def last_cause(output: str) -> str:
    causes = [m.group(1) + ": " + m.group(2) for line in output.splitlines() if (m := CAUSE.match(line.strip()))]
    return causes[-1] if causes else ""


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s.step}: {s.fault}")
def test_fault(
    scenario: Scenario,
    connections: MindVideoEmulator,
    airflow_db: str,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator = connections
    if scenario.fault.startswith("connection refused"):
        dead = connection(f"http://127.0.0.1:{dead_port()}")
        name = (
            "AIRFLOW_CONN_MINDVIDEO_RELIABILITY_WAIT"
            if scenario.wait_conn_dead
            else "AIRFLOW_CONN_MINDVIDEO_RELIABILITY"
        )
        monkeypatch.setenv(name, dead)
    dag = generate_dag if scenario.dag == "generate" else sensor_dag
    prompt = f"matrix {scenario.step} {scenario.fault}"
    scenario.inject(emulator)
    started = time.monotonic()
    dag_run = dag.test(run_conf={"prompt": prompt})
    seconds = time.monotonic() - started
    out, err = capfd.readouterr()
    OUTPUT.append(out + err)
    record = Record(
        scenario,
        str(dag_run.state),
        last_cause(out + err) if str(dag_run.state) != "success" else "",
        emulator.state.charged_tasks,
        seconds,
    )
    RECORDS.append(record)

    assert record.state == ("success" if scenario.succeeds else "failed"), record
    assert record.charged == scenario.charged, record
    if scenario.cause:
        assert re.search(scenario.cause, record.cause), record


def render() -> str:
    lines = [
        "# Reliability: the fault matrix",
        "",
        "<!-- Generated from tests/reliability/test_fault_matrix.py by `make reliability-report`; do not edit. -->",
        "",
        "Every fault the [emulator](emulator.md) can produce, injected at the submit step (the",
        "`POST` that creates the task) and at the wait step (the polls), each in a real Airflow run",
        "(`dag.test()`) of a deferrable `MindVideoGenerateOperator` (or a submit and a deferrable",
        "`MindVideoTaskSensor`, where it says so) with `retries=2`, a connection",
        f'with a 1 s timeout and 2 in-call retries, and a {WAIT_TIMEOUT:.0f} s wait timeout. "Charged" is',
        "the number of remote tasks the emulator billed; a retry after the remote task *failed*",
        "creates a new one by design, every other retry finds the original. Each row is asserted",
        "by the test suite on every run. Every run must also end by itself: each try is bounded by one",
        f"wait plus its in-call retries (about {DEADLINE:.0f} s for the three tries here), so a fault that",
        "held a worker or a trigger past its deadline would hang the run, and the suite's timeout fails it.",
        "",
        "The rules behind the numbers: [paying once](paying-once.md). Each try creates at most one",
        "remote task; an unreadable or lost create answer is replayed under the same key; every call",
        "has a deadline that bounds the whole answer, retries and waits included.",
        "",
        "| fault | step | task | outcome | charged | the failure names |",
        "|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        outcome = "success" if scenario.succeeds else "failed"
        names = f"`{scenario.cause}`" if scenario.cause else "-"
        lines.append(
            f"| {scenario.fault} | {scenario.step} | {TASKS[scenario.dag]} | {outcome} | {scenario.charged} | {names} |"
        )
    lines += ["", *bad_input_section()]
    lines += [
        "",
        "After the matrix, [the secrets scan](#secrets) reads every file under the Airflow home",
        "(task and trigger logs, the metadata database with its XComs, rendered template fields and",
        "serialized trigger kwargs) and everything the runs printed: the API key appears nowhere.",
        "",
        "## Secrets",
        "",
        "- The key is masked in Airflow's logs (`mask_secret`), kept out of `repr()` of the hook's",
        "  settings, never put in trigger kwargs (they hold the connection id), and cut out of",
        "  everything a server writes where answers become models: errors of any shape, outputs,",
        "  events, request ids, status text, unknown fields and dict keys, whole, escaped (JSON,",
        "  HTML, repr, URL) or cut short. Trigger events, XComs, manifests, exceptions and logs so",
        "  hold none of it, also where Airflow's masker never saw the key (a resumed task).",
        "- Plain `http://` is refused for anything but a loopback host unless the connection sets",
        "  `allow_insecure_http`.",
        "- API calls never follow redirects, so the `Authorization` header cannot reach another host;",
        "  output downloads carry no credentials at all.",
        "- A task created under one key is invisible to another: the provider reports it as not found.",
        "- Text a server sends is capped (2,000 characters) in errors, logs and trigger events, and",
        "  what one task stores (its trigger event, its XComs, its manifest row) at 64 KiB",
        "  (`STORED_ANSWER_LIMIT`): a larger answer loses unknown fields, then its error's details,",
        "  then its output's fields other than the URLs, and says so in the task's `cut` field.",
        "  Output URLs are never cut; an answer they alone overfill fails, not retried.",
        "",
    ]
    return "\n".join(lines)


def test_the_reliability_page_is_current() -> None:
    if os.environ.get("MINDVIDEO_WRITE_DOCS"):
        DOCS.write_text(render())
    assert DOCS.read_text() == render(), "docs/reliability.md is stale: run `make reliability-report`"


def bad_input_section() -> list[str]:
    from airflow_provider_mindvideo.client.catalog import input_problems
    from tests.reliability.test_bad_input import NAMED

    lines = [
        "## Bad input: refused before any request",
        "",
        "Checked against the model's schema before anything is sent (so nothing is charged), and",
        "failing without retries. Property-based tests (hypothesis) compare the check with an",
        "independent reading of gpt-image-2's rules on valid and mutated inputs; these are the",
        "named cases, with the message a task log shows:",
        "",
        "| case | message |",
        "|---|---|",
    ]
    for case, data, _ in NAMED:
        message = "; ".join(input_problems("gpt-image-2", data)).replace("|", "\\|")
        lines.append(f"| {case} | {message if len(message) < 200 else message[:197] + '...'} |")
    return lines


def test_the_api_key_appears_nowhere(connections: MindVideoEmulator, airflow_db: str) -> None:
    assert RECORDS, "run the whole module: the scan reads what the matrix left behind"
    needle = SECRET_KEY.encode()
    leaks = [str(path) for path in Path(airflow_db).rglob("*") if path.is_file() and needle in path.read_bytes()]
    assert leaks == []
    assert not [text for text in OUTPUT if SECRET_KEY in text]
    with sqlite3.connect(os.path.join(airflow_db, "airflow.db")) as db:
        stored = [row[0] for row in db.execute("select kwargs from trigger")]
        stored += [row[0] for row in db.execute("select rendered_fields from rendered_task_instance_fields")]
        stored += [row[0] for row in db.execute("select value from xcom")]
    assert stored
    assert all(SECRET_KEY not in str(value) for value in stored)
    trigger = MindVideoTaskTrigger("task_1", "mindvideo_reliability")
    assert SECRET_KEY not in json.dumps(trigger.serialize())
    with MindVideoHook("mindvideo_reliability") as hook:
        client = hook.get_conn()
        shown = [repr(hook), repr(hook.settings), str(hook.settings), repr(client), repr(client.headers)]
        assert client.headers["Authorization"] == f"Bearer {SECRET_KEY}"  # it is there, and shown nowhere
    assert not [text for text in shown if SECRET_KEY in text]
