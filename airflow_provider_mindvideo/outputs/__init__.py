"""Where outputs go: downloads, storage (whole-or-nothing writes to any ObjectStoragePath), network
(the SSRF guard), lineage (OpenLineage facets).
May import client/ and Airflow's storage and lineage APIs; never hooks, triggers, batch/ or operators/.
"""
