"""Benchmarks, run by hand (``python -m bench``, ``python3 dev.py bench``); only a tiny smoke
run of them is part of the test suite. See ``bench/__main__.py``."""
