"""The bench's scenarios, one module each, run in turn by ``python -m bench``.

A scenario is a module with ``run(ctx: Context) -> list[Figure]`` (:mod:`bench.figures`).
Optional: ``REFERENCES`` (the contenders the table's ratio column divides by, e.g.
``("drain", "dlt")``) and ``goals(figures) -> list[Goal]`` (the issue's goals it measures;
without it the harness uses :data:`bench.figures.FALLBACK_GOALS`). Each also runs alone as
``python -m bench --only <name>``.

- ``backfill``: the whole range as one backfill, four contenders in their own processes;
- ``transform``: filter and map of already-staged orders on one core, ours and the naive loop;
- ``growth``, ``pacing``, ``ticks``: the ledger's growth, the ERP's pace, the cost of ticks.
"""
