"""The Airflow plugin: a FastAPI app under ``/mindvideo`` with the MindVideo spend page and each run's gallery.

plugin (what Airflow loads), app (the routes), access (who may read which DAG), ledger (the
ledger's engine, read-only), figures (the spend page's numbers, from the ledger), refusals
(creates a budget refused: ledger rows and batch manifests), gallery (a run's outputs: ledger
rows, task records and the batch manifests the run wrote), records (the run's XComs and rendered
prompts), decisions (a review's decision per output), manifests (batch manifests, parsed once
per version), freshness (answers kept while their inputs are unchanged), static/ (HTML, JS and
CSS shipped in the wheel).
May import client/, spend/, outputs/, review/ and batch/ (its plan and records readers); never operators/.
"""
