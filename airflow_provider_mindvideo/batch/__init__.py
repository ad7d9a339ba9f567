"""Batches: plan (work list, keys, manifest rows: pure), records (journal, intents), run (the loop),
trigger (its Airflow face), outputs and saving (saves while items generate), sharing (what the
batches of one event loop share).
May import client/, outputs/, spend/, the hook and the resume hold; never operators/. Re-exports batch.plan's names.
"""

# airflow_provider_mindvideo.batch was one module, now batch.plan: its names stay importable from here.
from airflow_provider_mindvideo.batch.plan import *  # noqa: F403
