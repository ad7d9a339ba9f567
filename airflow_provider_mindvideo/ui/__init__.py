"""The Airflow plugin: a FastAPI app under ``/mindvideo`` with the MindVideo spend page and each run's gallery.

plugin (what Airflow loads), app (the routes), access (who may read which DAG), figures (the spend
page's numbers, from the ledger), gallery (a run's outputs: ledger rows and the batch manifests the
run wrote), media (stored files a manifest names), static/ (HTML, JS and CSS shipped in the wheel).
May import client/, spend/, outputs/, review/ and batch/ (its plan and records readers); never operators/.
"""
