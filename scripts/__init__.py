"""The project's own programs (`make demo`, `make e2e-distributed`) and what they share with the
benchmarks and tests/e2e (:mod:`scripts.processes`). Not part of the distribution; importable from
the repository root (pytest's ``pythonpath``, ``python -m scripts....``)."""
