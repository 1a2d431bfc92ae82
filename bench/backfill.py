"""Kept for old commands: ``python -m bench.backfill [options]`` is
``python -m bench --only backfill [options]`` (see ``python -m bench --help``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import main as bench

    return bench(["--only", "backfill", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
