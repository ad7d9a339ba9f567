"""Run the emulator: in a background thread of this process, or as a command."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from airflow_provider_mindvideo.emulator.state import (
    DEFAULT_API_KEY,
    EmulatorConfig,
    EmulatorState,
    Fault,
    Script,
)

_START_TIMEOUT = 30.0


class MindVideoEmulator:
    """A local MindVideo API on 127.0.0.1, for demos, CI and your own DAG tests.

    >>> with MindVideoEmulator() as emulator:            # doctest: +SKIP
    ...     hook_conn = {"conn_type": "mindvideo", "host": emulator.base_url,
    ...                  "password": emulator.api_key}
    ...     emulator.state.charged_tasks

    :param port: 0 picks a free port.
    :param config: API keys and task durations (see :class:`EmulatorConfig`).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, config: EmulatorConfig | None = None) -> None:
        self.host = host
        self.port = port
        self.state = EmulatorState(config)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_key(self) -> str:
        return self.state.config.api_keys[0] if self.state.config.api_keys else DEFAULT_API_KEY

    def connection_uri(self) -> str:
        """An ``AIRFLOW_CONN_<ID>`` value (JSON form) pointing at this emulator."""
        import json

        return json.dumps({"conn_type": "mindvideo", "host": self.base_url, "password": self.api_key})

    def add_fault(self, kind: Any, **options: Any) -> None:
        """Inject a fault: see :class:`Fault` for the kinds and options."""
        self.state.add_fault(Fault(kind=kind, **options))

    def script(self, match: str, outcome: Any, **options: Any) -> None:
        """Make tasks whose prompt contains ``match`` end with ``outcome`` (see :class:`Script`)."""
        self.state.add_script(Script(match=match, outcome=outcome, **options))

    def start(self) -> MindVideoEmulator:
        import uvicorn

        from airflow_provider_mindvideo.emulator.app import create_app

        config = uvicorn.Config(
            create_app(self.state), host=self.host, port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="mindvideo-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The MindVideo emulator did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=_START_TIMEOUT)
            self._server = self._thread = None

    def __enter__(self) -> MindVideoEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """The emulator as a process of its own (its CPU apart from yours); yields its base URL.

    ``args`` are extra command-line options, e.g. ``"--rate-limit", "20"``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        command = [sys.executable, "-m", "airflow_provider_mindvideo.emulator", "--port", "0"]
        process = subprocess.Popen([*command, "--port-file", str(port_file), *args], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + _START_TIMEOUT * 2
            while not (port_file.exists() and port_file.read_text()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("The MindVideo emulator did not start")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port_file.read_text()}"
        finally:
            process.terminate()
            process.wait(timeout=30)
