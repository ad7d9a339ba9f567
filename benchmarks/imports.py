"""What importing the provider's operators adds to a DAG file's parse, measured with ``-X importtime``."""

from __future__ import annotations

import statistics
import subprocess
import sys

RUNS = 9
# What every DAG file pays anyway (``airflow.sdk``), then the provider's operators module.
_PROBE = "import airflow.sdk; import airflow_provider_mindvideo.operators"


def _cumulative_us(stderr: str, module: str) -> int:
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.rsplit("|", 1)[1].strip() == module:
            return int(line.split("|")[1])
    raise LookupError(f"{module} not in -X importtime output")


def _own_us(stderr: str) -> int:
    """Self time of the provider's own modules only (airflow's lazily imported parts excluded)."""
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.rsplit("|", 1)[1].strip().startswith("airflow_provider_mindvideo"):
            total += int(line.split(":", 1)[1].split("|")[0])
    return total


def measure(runs: int = RUNS) -> dict[str, float]:
    sdk, operators, own = [], [], []
    for _ in range(runs):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", _PROBE], capture_output=True, text=True, check=True
        ).stderr
        sdk.append(_cumulative_us(err, "airflow.sdk"))
        operators.append(_cumulative_us(err, "airflow_provider_mindvideo.operators"))
        own.append(_own_us(err))
    return {
        "sdk_ms": statistics.median(sdk) / 1000,
        "operators_over_sdk_ms": statistics.median(operators) / 1000,
        "own_modules_ms": statistics.median(own) / 1000,
        "runs": runs,
    }


if __name__ == "__main__":
    print(measure())
