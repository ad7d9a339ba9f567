"""Airflow's fast-resume race, counted: every example triggered together, N rounds, on `airflow standalone`.

A deferred task whose trigger fires within seconds of the deferral can be failed by the
scheduler: "Executor ... reported that the task instance ... finished with state success, but
the task instance's state attribute is running/queued" (the resumed try overtook the processing
of the deferring try's exit). This script starts the emulator and `airflow standalone` (SQLite,
LocalExecutor) in a throwaway home on 127.0.0.1, triggers the six examples together (through
the REST API, without a logical date, as a person triggering from the UI would), waits for every
run (a review run: until it waits for a person, then marks it done), ``--rounds`` times, and reports

- tasks the scheduler failed with that message, and the runs they belong to;
- runs that ended failed, and task tries beyond the first;
- the load average before and after, and the seconds the provider's triggers held an early
  event back (their "Holding the event" log lines).

Run it on a busy machine (both cores loaded, e.g. ``stress --cpu 2`` beside it):

    .venv/bin/python scripts/fast_resume_race.py --rounds 20

``--code DIR`` puts another copy of the provider first on the path of every Airflow process
(e.g. a checkout of an earlier commit), to count the same on code without a fix.
Stops everything it started by process group, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLES: dict[str, dict[str, Any]] = {
    "mindvideo_content_pipeline": {"destination": True},
    "mindvideo_daily_batch": {"destination": True},
    "mindvideo_image_edit": {},
    "mindvideo_review_pipeline": {"destination": True},
    "mindvideo_taskflow": {},
    "mindvideo_video": {},
}
RACE = re.compile(r"finished with state success, but the task instance's state attribute is (\w+)")
RACE_TI = re.compile(r"<TaskInstance: ([\w.-]+)\.([\w-]+) (\S+)(?: map_index=(-?\d+))? \[")
HELD = re.compile(r"Holding the event ([0-9.]+) s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def trigger(url: str, body: dict[str, Any]) -> None:
    """POST a run; SQLite on a busy machine answers "database is locked" (a 500) now and then: try again."""
    for _ in range(30):
        try:
            answer = httpx.post(url, json=body, timeout=60)
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.status_code in (200, 409):  # 409: an earlier try got through
            return
        time.sleep(2)
    raise RuntimeError(f"could not trigger {url}: {answer.text if answer is not None else 'no answer'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--image-seconds", type=float, default=0.8, help="the emulator's (its default)")
    parser.add_argument("--code", type=Path, help="a folder holding another airflow_provider_mindvideo")
    parser.add_argument("--dags", type=Path, default=ROOT / "example_dags", help="the examples to run")
    parser.add_argument("--home", type=Path, help="the Airflow home (default: a new temporary folder)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for one round to finish")
    args = parser.parse_args()
    # A background job ignores Ctrl-C's signal: stop cleanly on SIGTERM too (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    home = args.home or Path(tempfile.mkdtemp(prefix="mindvideo-race-"))
    home.mkdir(parents=True, exist_ok=True)
    # A copy of the examples: editing the checkout during a long count does not change what it runs.
    dags = home / "dags"
    shutil.copytree(args.dags, dags, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS": "true",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    if args.code:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.code.resolve()), env.get("PYTHONPATH")]))
    load_before = os.getloadavg()
    port_file = home / "emulator.port"
    emulator = start(
        [sys.executable, "-m", "airflow_provider_mindvideo.emulator", "--port", "0", "--port-file", str(port_file),
         "--image-seconds", str(args.image_seconds)],
        env, home / "emulator.log",
    )  # fmt: skip
    airflow: subprocess.Popen[bytes] | None = None
    spare: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    try:
        emulator_url = (
            f"http://127.0.0.1:{wait_for(lambda: port_file.exists() and port_file.read_text(), 'emulator', 60)}"
        )
        env["AIRFLOW_CONN_MINDVIDEO_DEFAULT"] = json.dumps(
            {"conn_type": "mindvideo", "host": emulator_url, "password": "mv_test_emulator"}
        )
        airflow = start([str(BIN / "airflow"), "standalone"], env, home / "standalone.log")
        api = f"http://127.0.0.1:{port}/api/v2"

        def parsed() -> bool:
            try:
                dags = httpx.get(f"{api}/dags", params={"limit": 100}, timeout=10).json()["dags"]
            except (httpx.HTTPError, KeyError, ValueError):
                return False
            return set(EXAMPLES) <= {dag["dag_id"] for dag in dags}

        wait_for(parsed, "the API and the examples", 600)

        def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
            with sqlite3.connect(home / "airflow.db", timeout=60) as db:
                return db.execute(sql, params).fetchall()

        #: How standalone's log says a component of its own ended.
        ended = {"triggerer": "Finished server process", "scheduler": "Exited execute loop"}

        def keep_components() -> None:
            # SQLite on a busy machine: standalone's triggerer or scheduler can die of "database is
            # locked", and standalone does not restart them. Start one of our own then (and again).
            log = (home / "standalone.log").read_text(errors="replace").splitlines()
            for name, last_words in ended.items():
                died = any(line.startswith(name) and last_words in line for line in log)
                mine = spare.get(name)
                if died and (mine is None or mine.poll() is not None):
                    print(f"starting a {name} (the previous one died)", flush=True)
                    spare[name] = start([str(BIN / "airflow"), name], env, home / f"{name}-{time.time_ns()}.log")

        def settle_reviews() -> None:
            # A review waits for a person; once it does, its run is done for this count.
            waiting = query(
                "select distinct run_id from task_instance where dag_id = 'mindvideo_review_pipeline'"
                " and state = 'awaiting_input'"
            )
            for (run_id,) in waiting:
                # A failed PATCH (SQLite busy) is tried again on the next look.
                with contextlib.suppress(httpx.HTTPError):
                    httpx.patch(
                        f"{api}/dags/mindvideo_review_pipeline/dagRuns/{run_id}", json={"state": "success"}, timeout=60
                    )

        runs: list[tuple[str, str]] = []
        for number in range(args.rounds):
            # Each round triggers the six examples together, then waits for them all.
            for dag_id, options in EXAMPLES.items():
                conf = {"destination": (home / "media" / dag_id / str(number)).as_uri()} if options else {}
                run_id = f"race_{number:02d}"
                trigger(f"{api}/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})
                runs.append((dag_id, run_id))

            def round_done() -> bool:
                keep_components()
                settle_reviews()
                states = query("select state from dag_run")
                return len(states) == len(runs) and all(state in ("success", "failed") for (state,) in states)

            wait_for(round_done, f"round {number + 1} to finish", args.timeout)
            print(f"round {number + 1} of {args.rounds} done at {time.monotonic() - started:.0f} s", flush=True)
        elapsed = time.monotonic() - started
        failed_runs = query("select dag_id, run_id from dag_run where state = 'failed'")
        retried = query("select dag_id, task_id, run_id, map_index, try_number from task_instance where try_number > 1")
    finally:
        for process in [*spare.values(), *([airflow] if airflow else [])]:
            stop(process)
        stop(emulator)

    raced: set[tuple[str, ...]] = set()
    states: dict[str, int] = {}
    for line in (home / "standalone.log").read_text(errors="replace").splitlines():
        if found := RACE.search(line):
            states[found.group(1)] = states.get(found.group(1), 0) + 1
            if ti := RACE_TI.search(line):
                raced.add(ti.groups())
    held = [float(m) for log in (home / "logs").rglob("*.log*") for m in HELD.findall(log.read_text(errors="replace"))]
    report = {
        "rounds": args.rounds,
        "runs": len(runs),
        "minutes": round(elapsed / 60, 1),
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "tasks_failed_by_the_scheduler": len(raced),
        "their_state_when_failed": states,
        "runs_with_such_a_task": len({(dag, run) for dag, _, run, _ in raced}),
        "runs_failed": len(failed_runs),
        "task_tries_beyond_the_first": len(retried),
        "events_held": len(held),
        "seconds_held_mean": round(sum(held) / len(held), 2) if held else 0.0,
        "seconds_held_max": round(max(held), 2) if held else 0.0,
        "airflow_home": str(home),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
