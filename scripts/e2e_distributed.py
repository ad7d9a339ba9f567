"""`make e2e-distributed`: the provider on Airflow's distributed deployment, on one machine.

Stands up, on 127.0.0.1 only, with free ports and everything under one temporary folder: a
private PostgreSQL cluster (initdb + pg_ctl), Redis as the Celery broker, the Airflow
api-server, scheduler and dag-processor, two Celery workers, two triggerers, and the MindVideo
emulator with a rate limit. Then runs the scenarios of issue 16, each asserting from the
metadata database and the emulator's counters, writes the figures into docs/deploying.md
(between generated markers) and tears everything down by process group or pid, also on
failure. Never by name: other people's Postgres and Redis on this machine are left alone.

Sizes come from the environment (defaults: the issue's figures):

  MINDVIDEO_DIST_PIPELINE_PROMPTS  prompts in the mapped content pipeline (scenario 1)
  MINDVIDEO_DIST_BATCH_ITEMS       items in the batch (scenario 1b)
  MINDVIDEO_DIST_POOL_SIZE         the `mindvideo` pool's slots (scenario 2)
  MINDVIDEO_DIST_POOL_PROMPTS      generations per run in scenario 2
  MINDVIDEO_DIST_WAITS             waits deferred during the rolling restart (scenario 3)
  MINDVIDEO_DIST_KEEP=1            keep the temporary folder (logs, database) after the run
  MINDVIDEO_DIST_WRITE_DOCS=0      do not rewrite docs/deploying.md
  MINDVIDEO_DIST_ONLY=pool,rolling_restart   run only these scenarios (while developing; the
                                   key scan always runs last)

Run as root (CI, a developer machine), PostgreSQL's own programs run as the `postgres` user
through runuser: PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg2

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOYING = ROOT / "docs" / "deploying.md"
BEGIN_MARKER = "<!-- e2e-distributed figures: begin (written by make e2e-distributed, not by hand) -->"
END_MARKER = "<!-- e2e-distributed figures: end -->"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


PIPELINE_PROMPTS = env_int("MINDVIDEO_DIST_PIPELINE_PROMPTS", 200)
BATCH_ITEMS = env_int("MINDVIDEO_DIST_BATCH_ITEMS", 2000)
POOL_SIZE = env_int("MINDVIDEO_DIST_POOL_SIZE", 2)
POOL_PROMPTS = env_int("MINDVIDEO_DIST_POOL_PROMPTS", 8)
# Issue 16's figure. One task submits them all; each wait is then one task run on a worker (it
# checks once and defers) and ends in the triggerer (the sensor's end_from_trigger).
WAITS = env_int("MINDVIDEO_DIST_WAITS", 1000)
WORKER_CONCURRENCY = 4
# Per key, per second: a real account has a limit; the provider must live within it (429s and
# Retry-After are retried, never paid twice).
EMULATOR_RATE_LIMIT = 100
# The emulator's image time; the scenarios hold or script their own tasks' durations.
IMAGE_SECONDS = 5
# Creates of scenario 2 are answered this late, so that creates from different workers overlap.
POOL_CREATE_DELAY = 3.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 300, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


@dataclass
class Deployment:
    """Every process and folder of the deployment; `close()` stops them all, by group or pid."""

    home: Path
    api_key: str = field(default_factory=lambda: f"mv_dist_{secrets.token_hex(12)}+/=")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pg_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    emulator: str = ""
    triggerer_jobs: dict[str, int] = field(default_factory=dict)
    _pg_started: bool = False
    # Read once started: teardown must not depend on files that may be gone by then.
    _postmaster_pid: int | None = None
    _redis_pid: int | None = None

    @property
    def pg_data(self) -> Path:
        return self.home / "postgres"

    @property
    def redis_pidfile(self) -> Path:
        return self.home / "redis" / "redis.pid"

    # -- PostgreSQL and Redis -------------------------------------------------------------------

    def _as_postgres(self, *command: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    def start_postgres(self) -> None:
        pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        self.pg_data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.pg_data, "postgres", "postgres")
        subprocess.run(
            self._as_postgres(str(pg_bin / "initdb"), "-D", str(self.pg_data), "-A", "trust", "-U", "airflow"),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        options = f"-p {self.pg_port} -k {self.pg_data} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self._pg_started = True
        server_log = str(self.pg_data / "server.log")
        pg_ctl = [str(pg_bin / "pg_ctl"), "-D", str(self.pg_data), "-o", options, "-l", server_log]
        subprocess.run(self._as_postgres(*pg_ctl, "-w", "start"), check=True, stdout=subprocess.DEVNULL)
        self._postmaster_pid = int((self.pg_data / "postmaster.pid").read_text().split()[0])
        db = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="airflow", dbname="postgres")
        db.autocommit = True  # CREATE DATABASE refuses to run in a transaction
        db.cursor().execute("create database airflow")
        db.close()

    def stop_postgres(self) -> None:
        if not self._pg_started:
            return
        pid = self._postmaster_pid
        if pid is not None:
            # By the postmaster's own pid: SIGQUIT is PostgreSQL's immediate shutdown.
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            wait_for(lambda: not _alive(pid), "PostgreSQL to stop", timeout=30, every=0.2)

    def start_redis(self) -> None:
        folder = self.redis_pidfile.parent
        folder.mkdir()
        redis = [
            "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--daemonize", "yes",
            "--save", "", "--appendonly", "no", "--dir", str(folder), "--pidfile", str(self.redis_pidfile),
            "--logfile", str(folder / "redis.log"),
        ]  # fmt: skip
        subprocess.run(redis, check=True)
        wait_for(lambda: self.redis_pidfile.exists() and self.redis_pidfile.read_text().strip(), "Redis's pid", 30, 0.2)
        self._redis_pid = int(self.redis_pidfile.read_text())

    def stop_redis(self) -> None:
        pid = self._redis_pid
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not _alive(pid), "Redis to stop", timeout=30, every=0.2)

    # -- Airflow ---------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        db = f"airflow@127.0.0.1:{self.pg_port}/airflow"
        return {
            **os.environ,
            "AIRFLOW_HOME": str(self.home / "airflow"),
            # Airflow starts some of its parts by command name.
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.home / "dags"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "64",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{db}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            # Airflow's Celery settings, plus the DAG files' heavy imports done once per worker
            # instead of once per task run (scripts/e2e_distributed_celery_config.py).
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "e2e_distributed_celery_config.CELERY_CONFIG",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            # One key for every component (and this script, to read trigger rows), as in a deployment.
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            # A killed worker's running tasks are found and retried within half a minute, its
            # prefetched ones (still queued) within 40 s; Airflow's defaults are 5 and 10 minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
            # A task's supervisor notices its task process has ended on its next wake-up, up to this
            # long after (Airflow's default: 5 s): most short task runs (a deferrable task's first
            # run lasts well under a second) held their Celery slot 5 s longer than they ran.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            # One triggerer must hold every wait while the other restarts.
            "AIRFLOW__TRIGGERER__CAPACITY": str(max(1000, 2 * WAITS)),
            "AIRFLOW__MINDVIDEO__ALLOW_PRIVATE_URLS": "true",
            "AIRFLOW_CONN_MINDVIDEO_DEFAULT": json.dumps(
                {"conn_type": "mindvideo", "host": self.emulator, "password": self.api_key}
            ),
            "AIRFLOW_CONN_MINDVIDEO_CAPPED": json.dumps(
                {
                    "conn_type": "mindvideo",
                    "host": self.emulator,
                    "password": self.api_key,
                    "extra": {"max_concurrency": POOL_SIZE},
                }
            ),
        }

    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    fernet_key: str = field(default_factory=lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        logs = self.home / "logs"
        logs.mkdir(exist_ok=True)
        out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        # A session of its own: the process group is what gets stopped (or killed), children too.
        process = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def airflow_process(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(name, str(BIN / "airflow"), *args)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, grace: float = 120) -> None:
        """Signal the process's group and every group of its descendants: Airflow puts each task
        process in a group of its own, and a crashed worker host loses those too."""
        process = self.processes.pop(name)
        groups = {process.pid} | {group for pid in process_tree(process.pid) if (group := group_of(pid))}
        groups.discard(os.getpgrp())
        if sig == signal.SIGKILL:
            for group in groups:
                with suppress(ProcessLookupError):
                    os.killpg(group, sig)
        else:
            # A graceful stop: the component stops its own children; stragglers are killed after.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        for group in groups:
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)

    def airflow(self, *args: str) -> str:
        return subprocess.run(
            [str(BIN / "airflow"), *args], env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="airflow", dbname="airflow") as db:
            cursor = db.cursor()
            cursor.execute(sql, params)
            rows = cursor.fetchall() if cursor.description else []
        db.close()
        return rows

    def emulator_state(self) -> dict[str, Any]:
        return httpx.get(f"{self.emulator}/_emulator/state", timeout=60).json()  # type: ignore[no-any-return]

    def emulator_control(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.emulator}/_emulator/{path}", json=body, timeout=60)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def close(self) -> None:
        for name in reversed(list(self.processes)):
            with suppress(Exception):
                self.kill(name, signal.SIGTERM, grace=15)
        with suppress(Exception):
            self.stop_redis()
        with suppress(Exception):
            self.stop_postgres()


def _alive(pid: int) -> bool:
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


def api_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stand_up(deployment: Deployment) -> None:
    started = time.monotonic()
    deployment.start_postgres()
    deployment.start_redis()
    port_file = deployment.home / "emulator.port"
    deployment.start(
        "emulator",
        sys.executable, "-m", "airflow_provider_mindvideo.emulator", "--port", "0", "--port-file", str(port_file),
        "--api-key", deployment.api_key, "--rate-limit", str(EMULATOR_RATE_LIMIT),
        "--image-seconds", str(IMAGE_SECONDS),
    )  # fmt: skip
    port = wait_for(lambda: port_file.exists() and port_file.read_text(), "the emulator", every=0.2)
    deployment.emulator = f"http://127.0.0.1:{port}"
    dags = deployment.home / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "example_dags" / "mindvideo_content_pipeline.py", dags)
    shutil.copy(ROOT / "scripts" / "e2e_distributed_dags.py", dags)
    shutil.copy(ROOT / "scripts" / "e2e_distributed_waits_dags.py", dags)
    # $AIRFLOW_HOME/config is on every Airflow process's sys.path.
    config = deployment.home / "airflow" / "config"
    config.mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "e2e_distributed_celery_config.py", config)
    deployment.airflow("db", "migrate")
    deployment.airflow(
        "pools", "set", "mindvideo", str(POOL_SIZE), "MindVideo generations at once, account-wide", "--include-deferred"
    )
    deployment.airflow_process("api-server", "api-server")
    deployment.airflow_process("scheduler", "scheduler")
    deployment.airflow_process("dag-processor", "dag-processor")
    for worker in ("worker-1", "worker-2"):
        start_worker(deployment, worker)
    for triggerer in ("triggerer-1", "triggerer-2"):
        start_triggerer(deployment, triggerer)
    wait_for(lambda: api_ready(deployment.api_port), "the API server")
    dag_ids = ["mindvideo_content_pipeline", "mindvideo_dist_unpooled", "mindvideo_dist_pooled", "mindvideo_dist_waits"]
    dag_ids.append("mindvideo_dist_batch")
    wait_for(
        lambda: len(deployment.query("select 1 from dag where dag_id = any(%s)", dag_ids)) == len(dag_ids),
        "the DAGs to be parsed",
    )
    wait_for(
        lambda: all("ready" in (deployment.home / "logs" / f"{w}.log").read_text() for w in ("worker-1", "worker-2")),
        "both Celery workers",
    )
    log(f"deployment up in {time.monotonic() - started:.0f} s under {deployment.home}")


def start_triggerer(deployment: Deployment, name: str) -> int:
    """Start a triggerer and return its job id (the trigger table's triggerer_id for its waits)."""
    known = {row[0] for row in deployment.query("select id from job where job_type = 'TriggererJob'")}
    deployment.airflow_process(name, "triggerer", "--skip-serve-logs")
    (job_id,) = wait_for(
        lambda: [
            row[0]
            for row in deployment.query("select id from job where job_type = 'TriggererJob' and state = 'running'")
            if row[0] not in known
        ],
        f"{name}'s job",
    )
    deployment.triggerer_jobs[name] = job_id
    return int(job_id)


# -- runs ------------------------------------------------------------------------------------


def trigger_dag(deployment: Deployment, dag_id: str, conf: dict[str, Any]) -> str:
    run_id = f"dist__{dag_id}__{time.time_ns()}"
    deployment.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))
    return run_id


def run_state(deployment: Deployment, run_id: str) -> str | None:
    rows = deployment.query("select state from dag_run where run_id = %s", run_id)
    return str(rows[0][0]) if rows else None


def wait_for_run(deployment: Deployment, run_id: str, timeout: float) -> float:
    """Wait until the run ends; assert it succeeded; return its wall time in seconds."""
    wait_for(lambda: run_state(deployment, run_id) in ("success", "failed"), f"run {run_id} to end", timeout)
    states = deployment.query(
        "select task_id, state, count(*), max(try_number) from task_instance where run_id = %s"
        " group by task_id, state order by task_id",
        run_id,
    )
    check(run_state(deployment, run_id) == "success", f"run {run_id} failed: {states}")
    ((seconds,),) = deployment.query(
        "select extract(epoch from end_date - start_date) from dag_run where run_id = %s", run_id
    )
    log(f"run {run_id} succeeded in {float(seconds):.0f} s: {states}")
    return float(seconds)


def charged_for(deployment: Deployment, marker: str) -> tuple[int, int]:
    """(remote tasks charged, distinct prompts among them) for prompts containing `marker`."""
    tasks = [t for t in deployment.emulator_state()["tasks"] if marker in (t["prompt"] or "")]
    return len(tasks), len({t["prompt"] for t in tasks})


def ti_states(deployment: Deployment, run_id: str, task_id: str) -> dict[str, int]:
    rows = deployment.query(
        "select state, count(*) from task_instance where run_id = %s and task_id = %s group by state", run_id, task_id
    )
    return {str(state): int(count) for state, count in rows}


def group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def running_on(deployment: Deployment, run_id: str, worker: str) -> dict[str, int]:
    """Task instances of the run running in this worker's processes, by task id."""
    mine = process_tree(deployment.processes[worker].pid)
    rows = deployment.query(
        "select task_id, pid from task_instance where run_id = %s and state = 'running' and pid is not null", run_id
    )
    found: dict[str, int] = {}
    for task_id, pid in rows:
        if int(pid) in mine:
            found[task_id] = found.get(task_id, 0) + 1
    return found


def start_worker(deployment: Deployment, name: str) -> None:
    # A new Celery node name each start: a restarted worker is a new member of the cluster.
    node = f"{name}-{time.time_ns()}@%h"
    concurrency = str(WORKER_CONCURRENCY)
    deployment.airflow_process(
        name, "celery", "worker", "--skip-serve-logs", "--celery-hostname", node, "--concurrency", concurrency
    )


def kill_worker_running(deployment: Deployment, run_id: str, worker: str, task_id: str, mapped: int) -> dict[str, int]:
    """kill -9 the worker's processes once a quarter of this task's instances are done and it
    runs one of them (mid-phase, not at its first task); start it again."""

    def busy() -> dict[str, int] | None:
        if ti_states(deployment, run_id, task_id).get("success", 0) < mapped // 4:
            return None
        mine = running_on(deployment, run_id, worker)
        return mine if mine.get(task_id) else None

    running = wait_for(
        busy,
        f"{worker} to run {task_id} tasks",
        timeout=900,
        every=0.3,
    )
    deployment.kill(worker)
    log(f"kill -9 {worker} running {running}")
    start_worker(deployment, worker)
    return dict(running)


def triggers_of(deployment: Deployment, job_id: int) -> set[int]:
    return {row[0] for row in deployment.query("select id from trigger where triggerer_id = %s", job_id)}


# -- scenarios ---------------------------------------------------------------------------------


def scenario_pipeline(deployment: Deployment, figures: dict[str, Any]) -> None:
    """1. The mapped content pipeline; kill -9 a Celery worker and a triggerer mid-run."""
    marker = f"pipeline-{secrets.token_hex(3)}"
    prompts = [f"A {marker} lighthouse, study {i}" for i in range(PIPELINE_PROMPTS)]
    before = deployment.emulator_state()
    # The remote tasks are held until the triggerer has been killed and its waits adopted, so
    # that every wait is certainly deferred then, whatever the machine's speed.
    deployment.emulator_control("scripts", {"match": marker, "outcome": "never"})
    destination = deployment.home / "media" / "pipeline"
    run_id = trigger_dag(
        deployment,
        "mindvideo_content_pipeline",
        {"prompts": prompts, "size": "1:1", "destination": destination.as_uri()},
    )
    log(f"scenario 1: {len(prompts)} prompts in {run_id}")

    # Saves begin only once every wait has ended (they map over the waits' output), so one
    # worker dies among the submits and the other among the saves; each comes back at once.
    killed_with = {"worker-1": kill_worker_running(deployment, run_id, "worker-1", "submit", len(prompts))}

    # Whichever triggerer holds waits dies (the scheduler does not promise an even split).
    def holder() -> tuple[str, set[int]] | None:
        for name, job_id in deployment.triggerer_jobs.items():
            held = triggers_of(deployment, job_id)
            if held:
                return name, held
        return None

    wait_for(
        lambda: ti_states(deployment, run_id, "wait").get("deferred") == len(prompts),
        "every wait to be deferred",
        timeout=1200,
        every=2,
    )
    victim_name, orphans = wait_for(holder, "a triggerer to hold deferred waits", timeout=60, every=0.3)
    survivor_name = next(name for name in deployment.triggerer_jobs if name != victim_name)
    survivor = deployment.triggerer_jobs[survivor_name]
    killed_at = time.monotonic()
    deployment.kill(victim_name)
    log(f"kill -9 {victim_name} holding {len(orphans)} trigger(s)")
    adopted: set[int] = set()

    def taken_over() -> bool:
        rows = deployment.query("select id, triggerer_id from trigger where id = any(%s)", list(orphans))
        adopted.update(trigger_id for trigger_id, owner in rows if owner == survivor)
        # Every orphan is either held by the survivor or already fired there (row gone).
        return all(owner == survivor for _, owner in rows)

    wait_for(taken_over, f"{survivor_name} to adopt {victim_name}'s waits", timeout=300, every=0.2)
    takeover = time.monotonic() - killed_at
    log(f"{survivor_name} adopted {len(orphans)} orphaned trigger(s) in {takeover:.1f} s ({len(adopted)} seen held)")
    check(len(adopted) > 0, "no orphaned trigger was seen held by the surviving triggerer")
    del deployment.triggerer_jobs[victim_name]
    start_triggerer(deployment, victim_name)
    released = deployment.emulator_control("release", {"match": marker})["released"]
    check(released == len(prompts), f"released {released} held remote tasks for {len(prompts)} prompts")

    killed_with["worker-2"] = kill_worker_running(deployment, run_id, "worker-2", "save", len(prompts))

    seconds = wait_for_run(deployment, run_id, timeout=1800)
    charged, distinct = charged_for(deployment, marker)
    check(charged == len(prompts), f"charged {charged} remote tasks for {len(prompts)} prompts")
    check(distinct == len(prompts), f"{distinct} distinct prompts charged for {len(prompts)}")
    stored = sorted(destination.glob("task_*"))
    check(len(stored) == len(prompts), f"{len(stored)} files stored for {len(prompts)} prompts")
    retried = deployment.query(
        "select task_id, count(*) from task_instance where run_id = %s and try_number > 1 group by task_id", run_id
    )
    after = deployment.emulator_state()
    requests = sum(after["requests"].values()) - sum(before["requests"].values())
    figures.update(
        pipeline_prompts=len(prompts),
        pipeline_seconds=seconds,
        pipeline_charged=charged,
        pipeline_files=len(stored),
        pipeline_requests_per_item=requests / len(prompts),
        pipeline_rate_limited=after["rate_limited"] - before["rate_limited"],
        pipeline_retried=dict(retried),
        orphaned_triggers=len(orphans),
        takeover_seconds=takeover,
        workers_killed_with=killed_with,
    )


def scenario_batch(deployment: Deployment, figures: dict[str, Any]) -> None:
    """1b. A batch of BATCH_ITEMS in one task: kill -9 the triggerer holding it mid-creates, and
    the worker saving its outputs mid-downloads."""
    marker = f"batch-{secrets.token_hex(3)}"
    prompts = [f"A {marker} meadow {i}" for i in range(BATCH_ITEMS)]
    # Not held: the batch keeps at most max_active (100) items in flight, so it must progress.
    # Each item takes a few seconds, so the batch is still creating when its triggerer dies.
    deployment.emulator_control("scripts", {"match": marker, "outcome": "succeeded", "processing_seconds": 3})
    destination = deployment.home / "media" / "batch"
    run_id = trigger_dag(deployment, "mindvideo_dist_batch", {"prompts": prompts, "destination": destination.as_uri()})
    log(f"scenario 1b: a batch of {len(prompts)} in {run_id}")
    ((ti_id,),) = wait_for(
        lambda: deployment.query(
            "select trigger_id from task_instance where run_id = %s and task_id = 'generate'"
            " and state = 'deferred' and trigger_id is not null",
            run_id,
        ),
        "the batch to be deferred",
        timeout=600,
    )
    # Mid-creates: a quarter of the items created, and the trigger held by a triggerer.
    wait_for(lambda: charged_for(deployment, marker)[0] >= len(prompts) // 4, "a quarter of the creates", 1200, 0.3)
    rows = deployment.query("select triggerer_id from trigger where id = %s", ti_id)
    victim = next(name for name, job in deployment.triggerer_jobs.items() if rows and job == rows[0][0])
    survivor_name = next(name for name in deployment.triggerer_jobs if name != victim)
    survivor = deployment.triggerer_jobs[survivor_name]
    created_at_kill = charged_for(deployment, marker)[0]
    killed_at = time.monotonic()
    deployment.kill(victim)
    log(f"kill -9 {victim} holding the batch with {created_at_kill} of {len(prompts)} created")
    wait_for(
        lambda: deployment.query("select 1 from trigger where id = %s and triggerer_id = %s", ti_id, survivor),
        f"{survivor_name} to adopt the batch",
        timeout=300,
        every=0.2,
    )
    takeover = time.monotonic() - killed_at
    log(f"{survivor_name} adopted the batch in {takeover:.1f} s")
    del deployment.triggerer_jobs[victim]
    start_triggerer(deployment, victim)

    # The batch resumes on a worker to save its outputs: that worker dies mid-downloads.
    def saving() -> str | None:
        stored = sum(1 for _ in destination.glob("task_*")) if destination.exists() else 0
        if stored < 1:
            return None
        for worker in ("worker-1", "worker-2"):
            if running_on(deployment, run_id, worker).get("generate"):
                return worker
        return None

    worker = wait_for(saving, "a worker saving the batch's outputs", timeout=1200, every=0.2)
    files_at_kill = sum(1 for _ in destination.glob("task_*"))
    deployment.kill(worker)
    log(f"kill -9 {worker} saving the batch, {files_at_kill} of {len(prompts)} files stored")
    start_worker(deployment, worker)
    seconds = wait_for_run(deployment, run_id, timeout=1800)
    charged, distinct = charged_for(deployment, marker)
    check(charged == len(prompts), f"the batch: charged {charged} remote tasks for {len(prompts)} items")
    check(distinct == len(prompts), f"the batch: {distinct} distinct prompts charged for {len(prompts)}")
    stored = sum(1 for _ in destination.glob("task_*"))
    check(stored == len(prompts), f"the batch: {stored} files stored for {len(prompts)} items")
    figures.update(
        batch=f"{len(prompts)} items, {charged} charged, {stored} files, {seconds:.0f} s; triggerer killed with"
        f" {created_at_kill} created (adopted after {takeover:.0f} s), worker killed with {files_at_kill} files saved",
    )


def generating_peak(tasks: list[dict[str, Any]]) -> int:
    """The most of these remote tasks created and not yet terminal at one moment."""
    moments = sorted(
        [(t["created_at"], 1) for t in tasks] + [(t["terminal_at"], -1) for t in tasks if t["terminal_at"] is not None]
    )
    peak = running = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    return peak


def scenario_pool(deployment: Deployment, figures: dict[str, Any]) -> None:
    """2. An Airflow pool caps creates account-wide across two workers; the per-process limit does not."""
    for dag_id in ("mindvideo_dist_unpooled", "mindvideo_dist_pooled"):
        marker = f"{dag_id}-{secrets.token_hex(3)}"
        prompts = [f"A {marker} kite {i}" for i in range(POOL_PROMPTS)]
        # Each run's creates are slow and its images quick: overlap comes from the creates.
        deployment.emulator_control("scripts", {"match": marker, "outcome": "succeeded", "processing_seconds": 2})
        deployment.emulator_control(
            "faults", {"kind": "delay", "route": "create", "seconds": POOL_CREATE_DELAY, "times": POOL_PROMPTS}
        )
        deployment.emulator_control("reset-counters", {})
        run_id = trigger_dag(deployment, dag_id, {"prompts": prompts})
        wait_for_run(deployment, run_id, timeout=900)
        state = deployment.emulator_state()
        peak_creates = state["max_in_flight_creates"]
        peak_generating = generating_peak([t for t in state["tasks"] if marker in (t["prompt"] or "")])
        charged, _ = charged_for(deployment, marker)
        check(charged == len(prompts), f"{dag_id}: charged {charged} for {len(prompts)} prompts")
        figures[f"{dag_id}_peak_creates"] = peak_creates
        figures[f"{dag_id}_peak_generating"] = peak_generating
        log(f"scenario 2, {dag_id}: at most {peak_creates} creates in flight, {peak_generating} generating")
    unpooled = figures["mindvideo_dist_unpooled_peak_creates"]
    pooled = figures["mindvideo_dist_pooled_peak_creates"]
    check(pooled <= POOL_SIZE, f"with the pool of {POOL_SIZE}, {pooled} creates were in flight at once")
    check(
        figures["mindvideo_dist_pooled_peak_generating"] <= POOL_SIZE,
        f"with the pool of {POOL_SIZE} (deferred included), more were generating at once",
    )
    check(
        unpooled > POOL_SIZE,
        f"without the pool, the connection's max_concurrency={POOL_SIZE} per process held account-wide"
        f" ({unpooled} at most): the scenario did not show what it should",
    )


def trigger_kwargs_text(fernet: Any, stored: str) -> str:
    """A trigger row's kwargs as JSON text: Fernet-encrypted, or plain (Airflow reads both)."""
    return stored if stored.startswith("{") else str(fernet.decrypt(stored.encode()).decode())


def trigger_deadlines(deployment: Deployment, run_id: str) -> dict[int, tuple[float, Any]]:
    """Per map index: the trigger's own deadline kwarg and the task's deferral timeout."""
    from airflow.models.crypto import get_fernet

    fernet = get_fernet()
    rows = deployment.query(
        "select ti.map_index, t.kwargs, ti.trigger_timeout from task_instance ti join trigger t on t.id = ti.trigger_id"
        " where ti.run_id = %s and ti.state = 'deferred'",
        run_id,
    )
    found: dict[int, tuple[float, Any]] = {}
    for map_index, kwargs, timeout in rows:
        text = trigger_kwargs_text(fernet, kwargs)
        match = re.search(r'"deadline":\s*([0-9.]+)', text)
        check(match is not None, f"no deadline in the trigger of map index {map_index}")
        assert match is not None
        found[int(map_index)] = (float(match.group(1)), timeout)
    return found


def held_by(deployment: Deployment, run_id: str, job_id: int, expected: int) -> Callable[[], bool]:
    """Whether this triggerer holds `expected` of the run's deferred waits, when called."""

    def count() -> bool:
        return expected == int(
            deployment.query(
                "select count(*) from trigger t join task_instance ti on ti.trigger_id = t.id"
                " where ti.run_id = %s and t.triggerer_id = %s",
                run_id,
                job_id,
            )[0][0]
        )

    return count


def scenario_rolling_restart(deployment: Deployment, figures: dict[str, Any]) -> None:
    """3. Stop and start each triggerer in turn while WAITS waits are deferred."""
    from airflow.models.crypto import get_fernet

    marker = f"rolling-{secrets.token_hex(3)}"
    prompts = [f"A {marker} harbour {i}" for i in range(WAITS)]
    deployment.emulator_control("scripts", {"match": marker, "outcome": "never"})
    run_id = trigger_dag(deployment, "mindvideo_dist_waits", {"prompts": prompts})
    started = time.monotonic()
    wait_for(
        lambda: ti_states(deployment, run_id, "wait").get("deferred") == WAITS,
        f"all {WAITS} waits to be deferred",
        timeout=1800,
        every=2,
    )
    deferring = time.monotonic() - started
    log(f"scenario 3: {WAITS} waits deferred after {deferring:.0f} s")
    before = trigger_deadlines(deployment, run_id)
    check(len(before) == WAITS, f"{len(before)} deferred waits with a trigger, expected {WAITS}")
    # The trigger rows are gone once the waits end: look for the key in them while they exist.
    forms = key_forms(deployment.api_key)
    fernet = get_fernet()
    rows = [trigger_kwargs_text(fernet, kwargs) for (kwargs,) in deployment.query("select kwargs from trigger")]
    check(len(rows) >= WAITS, f"{len(rows)} trigger rows for {WAITS} deferred waits")
    check(not any(form in text for text in rows for form in forms), "the API key is in a trigger row's kwargs")
    figures["key_scan_trigger_rows"] = len(rows)
    restarts: dict[str, float] = {}
    moved: dict[str, int] = {}
    for name, other in (("triggerer-1", "triggerer-2"), ("triggerer-2", "triggerer-1")):
        moved[name] = len(triggers_of(deployment, deployment.triggerer_jobs[name]))
        stopping = time.monotonic()
        deployment.kill(name, signal.SIGTERM)  # a graceful stop, as a deploy does
        held = held_by(deployment, run_id, deployment.triggerer_jobs[other], WAITS)
        wait_for(held, f"{other} to hold all {WAITS} waits", timeout=600)
        restarts[name] = time.monotonic() - stopping
        log(f"{name} stopped holding {moved[name]}: {other} holds all {WAITS} after {restarts[name]:.1f} s")
        del deployment.triggerer_jobs[name]
        start_triggerer(deployment, name)
    after = trigger_deadlines(deployment, run_id)
    check(after == before, "a wait's deadline (trigger kwargs or deferral timeout) changed across the restarts")
    check(ti_states(deployment, run_id, "wait") == {"deferred": WAITS}, "a wait left the deferred state")
    ((released_at,),) = deployment.query("select now()")
    released = deployment.emulator_control("release", {"match": marker})["released"]
    check(released == WAITS, f"released {released} held remote tasks, expected {WAITS}")
    ending = time.monotonic()
    seconds = wait_for_run(deployment, run_id, timeout=1800)
    ended = time.monotonic() - ending
    charged_tasks = {t["task_id"] for t in deployment.emulator_state()["tasks"] if marker in (t["prompt"] or "")}
    charged, distinct = charged_for(deployment, marker)
    check(charged == WAITS and distinct == WAITS, f"charged {charged} ({distinct} prompts) for {WAITS} waits")
    retried = deployment.query("select count(*) from task_instance where run_id = %s and try_number > 1", run_id)[0][0]
    check(retried == 0, f"{retried} task instances were retried: a restart lost them")
    # Each wait ended in the triggerer, with the XComs a worker would have pushed: no task run
    # was queued once the remote tasks were released.
    resumed = deployment.query(
        "select count(*) from task_instance where run_id = %s and task_id = 'wait' and queued_dttm >= %s",
        run_id,
        released_at,
    )[0][0]
    check(resumed == 0, f"{resumed} waits were resumed on a worker instead of ending in the triggerer")
    xcoms: dict[str, dict[int, Any]] = {}
    for key, map_index, value in deployment.query(
        "select key, map_index, value from xcom where run_id = %s and task_id = 'wait'", run_id
    ):
        # A JSON column (decoded by psycopg2) in this Airflow; text or bytes in others.
        decoded = (
            json.loads(value if isinstance(value, str) else bytes(value))
            if isinstance(value, bytes | memoryview | str)
            else value
        )
        xcoms.setdefault(key, {})[int(map_index)] = decoded
    urls = xcoms.get("return_value", {})
    records = xcoms.get("mindvideo_task", {})
    check(len(urls) == WAITS and len(records) == WAITS, f"{len(urls)} return values, {len(records)} records")
    returned = {url.split("/files/")[1].split("/")[0] for value in urls.values() for url in value}
    check(returned == charged_tasks, "the waits' return values are not the output URLs of the charged tasks")
    check(
        all(record["status"] == "succeeded" and record["output_urls"] == urls[i] for i, record in records.items()),
        "a wait's mindvideo_task record does not match its return value",
    )
    log(f"scenario 3: deferred in {deferring:.0f} s, all ended in the triggerers {ended:.0f} s after the release")
    figures.update(
        rolling_waits=WAITS,
        rolling_handover_seconds=restarts,
        rolling_moved=moved,
        rolling_run_seconds=seconds,
        rolling_deferring_seconds=deferring,
        rolling_ending_seconds=ended,
    )


def key_forms(key: str) -> set[str]:
    """The key as logs, JSON, URLs, HTML and headers may spell it."""
    return {
        key,
        json.dumps(key)[1:-1],
        key.replace("/", "\\/"),
        urllib.parse.quote(key, safe=""),
        urllib.parse.quote_plus(key),
        html.escape(key),
        base64.b64encode(key.encode()).decode().rstrip("="),
        base64.b64encode(f"Bearer {key}".encode()).decode().rstrip("="),
        key.encode().hex(),
        repr(key.encode())[2:-1],
    }


def files_with_key(folder: Path, forms: set[str]) -> list[str]:
    found = []
    needles = [form.encode() for form in forms]
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                content = path.read_bytes()
            except OSError:
                continue
            if any(needle in content for needle in needles):
                found.append(str(path))
    return found


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


# -- the report ----------------------------------------------------------------------------------


def figures_markdown(figures: dict[str, Any]) -> str:
    lines = [
        BEGIN_MARKER,
        "",
        f"Measured by `make e2e-distributed` on {figures['date']} ({figures['machine']}): Airflow"
        f" {figures['airflow']}, PostgreSQL {figures['postgres']}, Redis {figures['redis']}, two Celery workers of"
        f" {WORKER_CONCURRENCY} slots, two triggerers, the emulator limiting the key to {EMULATOR_RATE_LIMIT}"
        " requests a second. The whole run took"
        f" {figures['total_seconds'] / 60:.1f} minutes (15-minute load average at its end:"
        f" {figures.get('load_average', 0):.1f}).",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    if "pipeline_prompts" in figures:
        per_thousand = figures["pipeline_seconds"] / figures["pipeline_prompts"] * 1000
        lines += [
            f"| content pipeline: prompts, remote tasks charged, files stored | {figures['pipeline_prompts']},"
            f" {figures['pipeline_charged']}, {figures['pipeline_files']} |",
            f"| its wall time (one worker and one triggerer killed mid-run) | {figures['pipeline_seconds']:.0f} s,"
            f" about {per_thousand / 60:.0f} min per 1,000 prompts with two workers |",
            f"| API requests per prompt (submit, waits, saves' lookups; 429s included) |"
            f" {figures['pipeline_requests_per_item']:.1f} ({figures['pipeline_rate_limited']} answered 429) |",
            f"| Celery workers killed (`kill -9` of the process group) while running |"
            f" {figures['workers_killed_with']} |",
            f"| tasks retried after the workers' `kill -9` | {figures['pipeline_retried'] or 'none'} |",
            f"| triggerer `kill -9`: orphaned waits, taken over by the other triggerer after |"
            f" {figures['orphaned_triggers']}, {figures['takeover_seconds']:.0f} s |",
        ]
    lines.append(f"| batch | {figures.get('batch', 'not run')} |")
    if "mindvideo_dist_pooled_peak_creates" in figures:
        lines += [
            f"| creates in flight at once, {POOL_PROMPTS} generations, connection `max_concurrency={POOL_SIZE}`:"
            f' without a pool / with `pool="mindvideo"` of {POOL_SIZE} |'
            f" {figures['mindvideo_dist_unpooled_peak_creates']} /"
            f" {figures['mindvideo_dist_pooled_peak_creates']} |",
            f"| remote tasks generating at once, the same runs | {figures['mindvideo_dist_unpooled_peak_generating']} /"
            f" {figures['mindvideo_dist_pooled_peak_generating']} |",
        ]
    if "rolling_waits" in figures:
        handover = "; ".join(
            f"{figures['rolling_moved'][name]} waits moved in {seconds:.0f} s"
            for name, seconds in figures["rolling_handover_seconds"].items()
        )
        lines += [
            f"| rolling restart (SIGTERM, then start again) of each triggerer in turn under {figures['rolling_waits']}"
            f" deferred waits | {handover}; none lost, none paid twice, no deadline reset |",
            f"| those waits: all deferred (one worker run each) after, all ended in the triggerers"
            f" (`end_from_trigger`) after their tasks' release | {figures['rolling_deferring_seconds']:.0f} s,"
            f" {figures['rolling_ending_seconds']:.0f} s |",
        ]
    if "key_scan_tables" in figures:
        lines.append(
            f"| API key found in {figures['key_scan_log_files']} log files, {figures['key_scan_tables']}"
            " tables (XCom, rendered fields, ...),"
            f" {figures.get('key_scan_trigger_rows', 0)} trigger rows decrypted while deferred | nowhere |"
        )
    lines += ["", END_MARKER]
    return "\n".join(lines)


def write_figures(figures: dict[str, Any]) -> None:
    page = DEPLOYING.read_text()
    start, end = page.index(BEGIN_MARKER), page.index(END_MARKER) + len(END_MARKER)
    DEPLOYING.write_text(page[:start] + figures_markdown(figures) + page[end:])
    log(f"figures written to {DEPLOYING.relative_to(ROOT)}")


def versions(deployment: Deployment) -> dict[str, str]:
    import airflow

    postgres = deployment.query("show server_version")[0][0].split()[0]
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=([0-9.]+)", redis)
    return {
        "airflow": airflow.__version__,
        "postgres": postgres,
        "redis": match.group(1) if match else "?",
        "machine": f"{os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    # A stopped run (timeout, CI) still tears the deployment down: SystemExit runs the cleanup.
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="mindvideo-dist-"))
    # PostgreSQL runs as its own user: it must reach its data folder through this one.
    home.chmod(0o755)
    deployment = Deployment(home)
    os.environ.update({k: v for k, v in deployment.env.items() if k.startswith("AIRFLOW")})
    figures: dict[str, Any] = {}
    try:
        stand_up(deployment)
        os.environ.update({k: v for k, v in deployment.env.items() if k.startswith("AIRFLOW")})
        figures.update(versions(deployment))
        scenarios = [scenario_pipeline, scenario_batch, scenario_pool, scenario_rolling_restart]
        only = os.environ.get("MINDVIDEO_DIST_ONLY")
        if only:
            scenarios = [s for s in scenarios if s.__name__.removeprefix("scenario_") in only.split(",")]
        for scenario in scenarios:
            scenario_started = time.monotonic()
            scenario(deployment, figures)
            log(f"{scenario.__name__} passed in {time.monotonic() - scenario_started:.0f} s")
        scenario_no_key_anywhere(deployment, figures)
    except BaseException:
        log(f"FAILED; logs under {home} (kept)")
        deployment.close()
        raise
    deployment.close()
    figures["total_seconds"] = time.monotonic() - started
    # Other work on the machine slows every figure here: say how busy it was.
    figures["load_average"] = os.getloadavg()[2]
    log(f"all scenarios passed in {figures['total_seconds'] / 60:.1f} min: {json.dumps(figures, default=str)}")
    if os.environ.get("MINDVIDEO_DIST_WRITE_DOCS", "1") != "0":
        write_figures(figures)
    if os.environ.get("MINDVIDEO_DIST_KEEP") != "1":
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
