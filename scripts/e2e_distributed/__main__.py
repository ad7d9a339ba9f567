"""Stand the deployment up, run the scenarios in order, tear it down (also on failure), write the figures."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts.e2e_distributed.config import log
from scripts.e2e_distributed.crashes import scenario_batch, scenario_pipeline
from scripts.e2e_distributed.deployment import Deployment, stand_up
from scripts.e2e_distributed.key_scan import scenario_no_key_anywhere
from scripts.e2e_distributed.ledger import scenario_ledger
from scripts.e2e_distributed.pool import scenario_pool
from scripts.e2e_distributed.report import versions, write_figures
from scripts.e2e_distributed.rolling_restart import scenario_rolling_restart
from scripts.e2e_distributed.twice import scenario_twice


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    # A stopped run (timeout, CI) still tears the deployment down: SystemExit runs the cleanup.
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.e2e_distributed", description=__doc__)
    parser.add_argument(
        "--only",
        default=os.environ.get("MINDVIDEO_DIST_ONLY", ""),
        help="only these scenarios, comma-separated: pipeline, batch, twice, ledger, pool, rolling_restart"
        " (key scan: always)",
    )
    only = parser.parse_args().only
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
        scenarios = [
            scenario_pipeline,
            scenario_batch,
            scenario_twice,
            scenario_ledger,
            scenario_pool,
            scenario_rolling_restart,
        ]
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
