"""The MindVideo API without Airflow: protocol (the pure exchange), settings, errors, models, catalog,
idempotency keys, polling, deadlines, limits, submission (the key-generation walk), cancellation.
Imports only itself and the root package; of Airflow only airflow.sdk.exceptions (the errors' bases).
"""
