"""A private PostgreSQL cluster on a free loopback port for the ledger's tests, when its binaries are installed.

``bash scripts/install_distributed_deps.sh`` installs them (Debian's postgresql). A test that asks
for ``postgres_url`` gets a fresh database in it, or is skipped saying what is missing.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

_databases = itertools.count()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres(*command: str) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[int]:
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not binaries:
        pytest.skip("PostgreSQL binaries missing (bash scripts/install_distributed_deps.sh installs them)")
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 missing (pip install psycopg2-binary)")
    bin_dir = binaries[-1].parent
    data = Path(tempfile.mkdtemp(prefix="mindvideo-ledger-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "airflow"),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    try:
        psycopg2.connect(host="127.0.0.1", port=port, user="airflow", dbname="postgres").close()
        yield port
    finally:
        with suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGQUIT)  # the postmaster's immediate shutdown
        subprocess.run(
            _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "stop"), check=False, capture_output=True
        )
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: int) -> str:
    import psycopg2

    name = f"ledger_{os.getpid()}_{next(_databases)}"
    db = psycopg2.connect(host="127.0.0.1", port=postgres_cluster, user="airflow", dbname="postgres")
    db.autocommit = True  # CREATE DATABASE refuses to run in a transaction
    db.cursor().execute(f"create database {name}")
    db.close()
    return f"postgresql+psycopg2://airflow@127.0.0.1:{postgres_cluster}/{name}"
