"""What the tests, the bench and ``scripts/`` share to drive the route against the sandbox.

Installed with the project so that anything can import it without path tricks. Importing a
module here builds nothing and starts nothing: route assets are built by functions, processes
are started by functions. Nothing here imports pytest; failures are plain exceptions
(``AssertionError`` where a check found the route wrong).

- :mod:`.routes` — the shipped route files as :class:`RouteConfig`, the route's assets
- :mod:`.resources` — shop / erp / duckdb resources pointed at a sandbox
- :mod:`.windows` — materialise a window (or a range, in one run) through the real assets, and
  read what the run reported
- :mod:`.run_tags` — Dagster's run tags (a single-run backfill's range, a backfill's id)
- :mod:`.ledger_reads` — the ledger's rows, for asserting on what the protocol left behind
- :mod:`.invoices` — does what the ERP invoices equal what each customer paid?
- :mod:`.erp_calls` — plain HTTP calls to the sandbox ERP, exactly as a test spells them
- :mod:`.log_lines` — what code logged through a Dagster context's logger
- :mod:`.broken_hooks` — hooks that break the hook contract on purpose
- :mod:`.live_stack` — the sandbox CLI and ``dg dev`` started as an operator would
- :mod:`.delivery_runner` — a delivery run in a process of its own (to kill it, or start two)
"""
