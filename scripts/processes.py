"""Processes on 127.0.0.1 for the real-process runs: tests/e2e, the benchmarks, `make e2e-distributed`.

Every process leads a session (a process group) of its own and is stopped by that group or by
pid, never by name: other people's Airflow, Postgres or Redis on the machine are left alone.
Imports only httpx beyond the standard library: .venv, .venv-floor and .venv-dist all have it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 300, every: float = 0.5) -> Any:
    """The condition's first truthy value, polled every `every` s; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def api_ready(port: int) -> bool:
    """Airflow's API server on this port answers its health check."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers kill(0); it has stopped all the same.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[-1].startswith("Z"))


def process_tree(root: int) -> set[int]:
    """The pids of root's descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


class ProcessGroups:
    """Named processes, each in a session of its own, with their output in `<logs>/<name>.log`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def env(self) -> dict[str, str]:
        """The environment every process starts with (subclasses add their settings)."""
        return dict(os.environ)

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the file descriptor: ours can close at once.
        with open(self.logs / f"{name}.log", "ab") as out:
            process = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes[name] = process
        return process

    def start_emulator(self, name: str, *options: str) -> str:
        """The MindVideo emulator as one of these processes; its base URL once it listens."""
        port_file = self.logs / f"{name}.port"
        port_file.unlink(missing_ok=True)
        process = self.start(
            name, sys.executable, "-m", "airflow_provider_mindvideo.emulator", "--port", "0",
            "--port-file", str(port_file), *options,
        )  # fmt: skip

        def port() -> str:
            if process.poll() is not None:
                raise RuntimeError(f"the emulator {name} exited ({process.returncode}): {self.logs / name}.log")
            return port_file.exists() and port_file.read_text()  # type: ignore[return-value]

        return f"http://127.0.0.1:{wait_for(port, f'the emulator {name}', timeout=120, every=0.1)}"

    def _groups(self, process: subprocess.Popen[bytes]) -> set[int]:
        """The process's group and every group of its descendants: Airflow puts each task process
        in a group of its own, and a crashed host loses those too."""
        groups = {process.pid} | {group for pid in process_tree(process.pid) if (group := group_of(pid))}
        groups.discard(os.getpgrp())
        return groups

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, grace: float = 120) -> None:
        """SIGKILL: a crash of the process and all it started. Another signal: a graceful stop
        (the process stops its own children), and what is left after `grace` s is killed."""
        process = self.processes.pop(name)
        groups = self._groups(process)
        for group in groups if sig == signal.SIGKILL else {process.pid}:
            with suppress(ProcessLookupError):
                os.killpg(group, sig)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        for group in groups:
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)

    def stop_all(self, grace: float = 20) -> None:
        """SIGTERM to every process at once; after `grace` s, SIGKILL to whatever of them is left."""
        stopping = {name: (process, self._groups(process)) for name, process in self.processes.items()}
        self.processes.clear()
        for process, _ in stopping.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process, groups in stopping.values():
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            for group in groups:
                with suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)


class LocalAirflow(ProcessGroups):
    """api-server, scheduler (LocalExecutor), dag-processor and triggerer on SQLite, in a throwaway home.

    `connect()` the emulators, then `start_airflow()`; `stop_all()` at the end, also on failure.
    Process logs go to the home itself (`scheduler.log`, ...), task logs to its `logs/`.
    """

    COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

    def __init__(self, home: Path, dags: Path) -> None:
        super().__init__(logs=home)
        self.home = home
        self.api_port = free_port()
        # SQLite's writers wait 5 s for each other by default: on a busy machine the dag-processor's
        # writes outlast that, and the API answered a trigger "Database error" (a 500). Airflow reads
        # connect args from an import path; its home's config/ folder is on sys.path.
        (home / "config").mkdir(parents=True, exist_ok=True)
        (home / "config" / "mindvideo_e2e_database.py").write_text("SQLITE = {'timeout': 120}\n")
        self.settings: dict[str, str] = {
            "AIRFLOW_HOME": str(home),
            # Airflow starts some of its parts by command name.
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            # The emulator serves output files on 127.0.0.1, which downloads refuse unless allowed.
            "AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS": "true",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "mindvideo_e2e_database.SQLITE",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "mindvideo_e2e_database.SQLITE",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
            # The REST API without a login (tests trigger runs through it as a client would).
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        }

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.settings}
        # Real processes race where dag.test() does not: the triggers hold quick events as deployed.
        env.pop("AIRFLOW__MINDVIDEO__RESUME_NOT_BEFORE", None)
        return env

    def connect(self, conn_id: str, emulator: str, **extra: Any) -> None:
        """An Airflow connection `conn_id` to an emulator (its test key), for every process started after."""
        connection: dict[str, Any] = {"conn_type": "mindvideo", "host": emulator, "password": "mv_test_emulator"}
        if extra:
            connection["extra"] = extra
        self.settings[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(connection)

    def start_airflow(self, *dag_ids: str) -> None:
        """Migrate the database, start the four components; return once these DAGs are parsed and the API answers."""
        self.airflow("db", "migrate")
        for component in self.COMPONENTS:
            self.start(component, str(BIN / "airflow"), component)
        for dag_id in dag_ids:
            wait_for(partial(self.query, "select 1 from dag where dag_id = ?", dag_id), f"{dag_id} parsed")
        wait_for(lambda: api_ready(self.api_port), "the API server")

    def airflow(self, *args: str) -> str:
        return subprocess.run(
            [str(BIN / "airflow"), *args], env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> str:
        """Trigger a run of the DAG with this conf; its run id."""
        run_id = run_id or f"e2e__{time.time_ns()}"
        self.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))
        return run_id

    def post_run(self, dag_id: str, body: dict[str, Any]) -> str:
        """Trigger a run through the REST API as a client would; its run id.

        Under a fixed run id, so that trying again after an answer lost or refused (SQLite's lock,
        past even its longer wait) cannot start a second run: a 409 means an earlier try got through.
        """
        run_id = body.get("dag_run_id") or f"e2e__{time.time_ns()}"
        url = f"http://127.0.0.1:{self.api_port}/api/v2/dags/{dag_id}/dagRuns"
        answer = None
        for _ in range(30):
            try:
                answer = httpx.post(url, json={**body, "dag_run_id": run_id}, timeout=60)
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code in (200, 409):
                return run_id
            time.sleep(2)
        raise RuntimeError(f"could not trigger {dag_id}: {answer.text if answer is not None else 'no answer'}")

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "airflow.db", timeout=60) as db:
            return db.execute(sql, params).fetchall()
