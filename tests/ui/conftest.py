"""The plugin's site (ledger, manifests, per-DAG auth manager) for every module here: tests.ui.test_app's fixture."""

from tests.ui.test_app import site as site
