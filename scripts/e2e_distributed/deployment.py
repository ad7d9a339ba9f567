"""The deployment's processes on 127.0.0.1: PostgreSQL and Redis (started and stopped by pid), the
emulator, and Airflow's api-server, scheduler, dag-processor, Celery workers and triggerers (each
a process group of its own, stopped by group). Ports are free ones; everything lives in `home`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import psycopg2

from scripts.e2e_distributed.config import (
    BUDGETED_CONN_ID,
    EMULATOR_RATE_LIMIT,
    IMAGE_SECONDS,
    LEDGER_BUDGET_SHARE,
    LEDGER_CONN_ID,
    LEDGER_DATABASE,
    LEDGER_ITEMS,
    LEDGER_MODEL,
    POOL_SIZE,
    WAITS,
    WORKER_CONCURRENCY,
    log,
)
from scripts.processes import BIN, ROOT, ProcessGroups, alive, api_ready, free_port, wait_for

HERE = Path(__file__).resolve().parent
# Scenario 5's DAGs (dags/e2e_distributed_ledger_dags.py): a mapped Generate and two batches.
LEDGER_DAGS = ("mindvideo_dist_ledger_generate", "mindvideo_dist_ledger_batch_a", "mindvideo_dist_ledger_batch_b")


class Deployment(ProcessGroups):
    """Every process and folder of the deployment; `close()` stops them all, by group or pid."""

    def __init__(self, home: Path) -> None:
        super().__init__(logs=home / "logs")
        self.home = home
        self.api_key = f"mv_dist_{secrets.token_hex(12)}+/="
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.api_port = free_port()
        self.emulator = ""
        self.triggerer_jobs: dict[str, int] = {}
        self.jwt_secret = secrets.token_hex(16)
        self.fernet_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        self._pg_started = False
        # Read once started: teardown must not depend on files that may be gone by then.
        self._postmaster_pid: int | None = None
        self._redis_pid: int | None = None
        # The ledger scenario's day must not end mid-run: its budget counts in a zone where it is midday.
        self.budget_timezone = midday_zone()
        from airflow_provider_mindvideo.client.catalog import known_models

        price = known_models()[LEDGER_MODEL].cost_estimate
        # Room for 60 % of the scenario's creates and half one more: a limit between two counts of creates.
        self.budget_limit = round((int(3 * LEDGER_ITEMS * LEDGER_BUDGET_SHARE) + 0.5) * price, 6)

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
        # The spend ledger's own database: never Airflow's metadata database.
        db.cursor().execute(f"create database {LEDGER_DATABASE}")
        db.close()

    def stop_postgres(self) -> None:
        if not self._pg_started:
            return
        pid = self._postmaster_pid
        if pid is not None:
            # By the postmaster's own pid: SIGQUIT is PostgreSQL's immediate shutdown.
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            wait_for(lambda: not alive(pid), "PostgreSQL to stop", timeout=30, every=0.2)

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
            wait_for(lambda: not alive(pid), "Redis to stop", timeout=30, every=0.2)

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
            # instead of once per task run (scripts/e2e_distributed/celery_config.py).
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
            # Scenario 5: the spend ledger on this PostgreSQL, one daily budget on a connection of its own.
            "AIRFLOW__MINDVIDEO__LEDGER_CONN_ID": LEDGER_CONN_ID,
            f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}": json.dumps(
                {
                    "conn_type": "postgres",
                    "host": "127.0.0.1",
                    "port": self.pg_port,
                    "login": "airflow",
                    "schema": LEDGER_DATABASE,
                }
            ),
            f"AIRFLOW_CONN_{BUDGETED_CONN_ID.upper()}": json.dumps(
                {
                    "conn_type": "mindvideo",
                    "host": self.emulator,
                    "password": self.api_key,
                    "extra": {
                        "budgets": {"account": {"day": self.budget_limit}},
                        "budget_timezone": self.budget_timezone,
                    },
                }
            ),
        }

    def airflow_process(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(name, str(BIN / "airflow"), *args)

    def airflow(self, *args: str) -> str:
        return subprocess.run(
            [str(BIN / "airflow"), *args], env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def query(self, sql: str, *params: Any, database: str = "airflow") -> list[tuple[Any, ...]]:
        with psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="airflow", dbname=database) as db:
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
        with suppress(Exception):
            self.stop_all(grace=15)
        with suppress(Exception):
            self.stop_redis()
        with suppress(Exception):
            self.stop_postgres()


def midday_zone() -> str:
    """A fixed-offset IANA zone where it is now about noon: a day window that ends hours from now."""
    offset = (12 - time.gmtime().tm_hour + 12) % 24 - 12  # -12..11 hours ahead of UTC
    # Etc/GMT's signs are POSIX's: Etc/GMT-3 is three hours ahead of UTC.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def stand_up(deployment: Deployment) -> None:
    started = time.monotonic()
    deployment.start_postgres()
    deployment.start_redis()
    deployment.emulator = deployment.start_emulator(
        "emulator", "--api-key", deployment.api_key, "--rate-limit", str(EMULATOR_RATE_LIMIT),
        "--image-seconds", str(IMAGE_SECONDS),
    )  # fmt: skip
    dags = deployment.home / "dags"
    dags.mkdir()
    # The example pipeline imports its prompt helpers from the module beside it.
    for example in ("mindvideo_content_pipeline.py", "mindvideo_example_prompts.py"):
        shutil.copy(ROOT / "example_dags" / example, dags)
    for dag_file in (HERE / "dags").glob("*.py"):
        shutil.copy(dag_file, dags)
    # $AIRFLOW_HOME/config is on every Airflow process's sys.path.
    config = deployment.home / "airflow" / "config"
    config.mkdir(parents=True)
    shutil.copy(HERE / "celery_config.py", config / "e2e_distributed_celery_config.py")
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
    dag_ids += ["mindvideo_dist_batch", *LEDGER_DAGS]
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


def start_worker(deployment: Deployment, name: str) -> None:
    # A new Celery node name each start: a restarted worker is a new member of the cluster.
    node = f"{name}-{time.time_ns()}@%h"
    concurrency = str(WORKER_CONCURRENCY)
    deployment.airflow_process(
        name, "celery", "worker", "--skip-serve-logs", "--celery-hostname", node, "--concurrency", concurrency
    )
