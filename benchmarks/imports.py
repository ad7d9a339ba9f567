"""What importing the provider's operators adds to a DAG file's parse, after ``import airflow.sdk``.

Each run is a fresh interpreter that imports ``airflow.sdk`` (what every DAG file pays anyway),
then times, with the wall clock and the process's CPU clock:

- ``one``: ``from airflow_provider_mindvideo.operators import MindVideoGenerateOperator``, what a
  DAG file of the usual shape imports (the package imports each operator when it is asked for);
- ``every``: then every other name of the package (all the operators' modules).

Both include Airflow's lazily imported ``BaseOperator`` (and, for ``every``, its assets, object
storage and the human-in-the-loop provider), which any operator import pays.

The package is timed with its bytecode compiled, as ``pip install`` leaves it: a first, uncounted
run writes the bytecode to a temporary cache (``PYTHONPYCACHEPREFIX``), whatever
``PYTHONDONTWRITEBYTECODE`` says. From a source checkout without it, every import would also
compile the source, which no installed provider does.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

RUNS = 9
_PROBE = """
import json, time
import airflow.sdk
wall, cpu = time.perf_counter(), time.process_time()
from airflow_provider_mindvideo.operators import MindVideoGenerateOperator
one = (time.perf_counter() - wall, time.process_time() - cpu)
import airflow_provider_mindvideo.operators as operators
for name in operators.__all__:
    getattr(operators, name)
every = (time.perf_counter() - wall, time.process_time() - cpu)
print(json.dumps({"one": one, "every": every}))
"""


def measure(runs: int = RUNS) -> dict[str, float]:
    seen: dict[str, list[float]] = {"one_ms": [], "one_cpu_ms": [], "every_ms": [], "every_cpu_ms": []}
    with tempfile.TemporaryDirectory() as bytecode:
        env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = bytecode
        probe = [sys.executable, "-c", _PROBE]
        subprocess.run(probe, capture_output=True, check=True, env=env)  # writes the bytecode
        for _ in range(runs):
            timed = json.loads(subprocess.run(probe, capture_output=True, text=True, check=True, env=env).stdout)
            for which in ("one", "every"):
                seen[f"{which}_ms"].append(1000 * timed[which][0])
                seen[f"{which}_cpu_ms"].append(1000 * timed[which][1])
    return {**{name: statistics.median(values) for name, values in seen.items()}, "runs": runs}


if __name__ == "__main__":
    print(measure())
