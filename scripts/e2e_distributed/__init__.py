"""`make e2e-distributed`: the provider on Airflow's distributed deployment, on one machine.

Run from the repository root with .venv-dist's Python: ``python -m scripts.e2e_distributed``.

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
  MINDVIDEO_DIST_LEDGER_ITEMS      items in each of the spend-ledger scenario's three DAGs (scenario 5)
  MINDVIDEO_DIST_KEEP=1            keep the temporary folder (logs, database) after the run
  MINDVIDEO_DIST_WRITE_DOCS=0      do not rewrite docs/deploying.md
  MINDVIDEO_DIST_ONLY=pool,rolling_restart   run only these scenarios (while developing; the
                                   key scan always runs last); also ``--only ledger``

Run as root (CI, a developer machine), PostgreSQL's own programs run as the `postgres` user
through runuser: PostgreSQL refuses to run as root.

The package: ``config`` (sizes, settings), ``deployment`` (the processes: start, stop by group or
pid), ``checks`` (what a scenario reads from the database and the emulator), one module per
scenario (``crashes``, ``ledger``, ``pool``, ``rolling_restart``, ``key_scan``), ``report`` (the figures'
page section) and ``__main__`` (the run's order and its teardown). ``dags/`` and
``celery_config.py`` are copied into the deployment, never imported here.
"""
