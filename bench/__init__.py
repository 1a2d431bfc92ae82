"""Benchmarks, run by hand (``python -m bench.backfill``); not part of the test suite."""
