"""Pacing: delivery against the ERP's real limit shape, 60 calls a minute, with latency.

    python -m bench.scenarios.pacing --calls 300 --window-s 12

Exact Online allows 60 calls a minute per division. The bench's shared ERP has limits no
scenario reaches, so this scenario starts an ERP of its own in a child process
(``--serve-erp``): first with high limits, while the ledger is prepared (a few accounts and
items of that ERP looked up, ``ctx.sizes["pacing_calls"]`` orders for them recorded as mapped
through the ledger's own store), then switched to :data:`PER_MINUTE` calls per window
(:data:`WINDOW_S`, or ``ctx.sizes["pacing_window_s"]``: a minute scaled down; the client paces
by the ``X-RateLimit-*`` reset headers, so it follows any window) and :data:`LATENCY_S` per
call. One delivery run (``<route>/erp_delivered_orders``, the real path: claim, POST, record)
then sends them all, one call each.

Figures, counted from the ERP's own record of each window (calls admitted, calls refused with
429), in steady state: the first window (the run starting) and the last (cut short when the
run ends) are left out; the rate is the calls admitted from the second window's start to the
last one's, per window length, over the limit (NaN with fewer than three windows).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.figures import Context, Figure
from integration_project.ledger import Ledger, MappingRow
from integration_project.resources import erp_client
from integration_project.settings import SANDBOX_MODE_ENV
from integration_project_testkit.resources import resources_ledger, sandbox_resources
from integration_project_testkit.routes import default_assets, shipped_route
from integration_project_testkit.windows import deliver, metadata

SCENARIO = "pacing"
SEED = 2026
#: Exact Online's minutely limit.
PER_MINUTE = 60
#: The length of a "minute" (scaled down; 60.0 is the real thing). At 6 s a call may take
#: 100 ms with everything the run does for it, so a busy machine measures itself rather than
#: the pacing; 12 s leaves 200 ms.
WINDOW_S = 12.0
LATENCY_S = 0.05
DEFAULT_CALLS = 300
#: Limits no preparation reaches.
_OPEN = {"per_minute": 10_000_000, "window_s": 60.0, "latency_s": 0.0}
ROOT = Path(__file__).resolve().parents[2]


def serve() -> int:
    """The child: the sandbox ERP (and a shop nobody asks), one JSON line when ready, then one
    JSON answer per command line on stdin (``pace``: new limits; ``state``: the ERP's state),
    until stdin closes."""
    from integration_project.sandbox import Sandbox, SandboxErp

    erp = SandboxErp(seed=SEED, minute_limit=_OPEN["per_minute"], day_limit=1_000_000_000)
    with Sandbox(seed=SEED, erp=erp) as sandbox:
        _answer({"shop_url": sandbox.shop_url, "erp_url": sandbox.erp_url})
        for line in sys.stdin:
            command = json.loads(line)
            if "pace" in command:
                pace = command["pace"]
                erp.set_rate_limit(per_minute=pace["per_minute"], minute_window_s=pace["window_s"])
                erp.latency_s = pace["latency_s"]
                with erp.lock:
                    erp.statuses.clear()
                _answer({"ok": True})
            else:
                _answer(erp.state())
    return 0


def _answer(body: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(body) + "\n")
    sys.stdout.flush()


class ErpProcess:
    """``with ErpProcess() as erp:`` the child above; :meth:`command` talks to it."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[str] | None = None
        self.ready: dict[str, Any] = {}

    def __enter__(self) -> ErpProcess:
        env = {**os.environ, SANDBOX_MODE_ENV: "1"}
        argv = [sys.executable, "-m", "bench.scenarios.pacing", "--serve-erp"]
        self._child = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        self.ready = self._read()
        return self

    def command(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self._child is not None and self._child.stdin is not None
        self._child.stdin.write(json.dumps(body) + "\n")
        self._child.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self._child is not None and self._child.stdout is not None
        line = self._child.stdout.readline()
        if not line.strip():
            raise RuntimeError("the pacing ERP process ended without answering (errors above)")
        return json.loads(line)

    def __exit__(self, *exc: object) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run(ctx: Context) -> list[Figure]:
    """Map the orders, switch the ERP to its real limit shape, deliver them in one run."""
    calls = int(ctx.sizes.get("pacing_calls") or DEFAULT_CALLS)
    window_s = float(ctx.sizes.get("pacing_window_s") or WINDOW_S)
    with ErpProcess() as erp:
        resources = sandbox_resources(
            erp.ready["shop_url"], erp.ready["erp_url"], str(ctx.tmp / "pacing.duckdb")
        )
        ledger = resources_ledger(resources, shipped_route().id)
        ledger.endpoints.bind_erp(resources["erp"].api_url, resources["erp"].division)
        _map_orders(ledger, calls, _erp_refs(resources, ledger))
        erp.command(
            {"pace": {"per_minute": PER_MINUTE, "window_s": window_s, "latency_s": LATENCY_S}}
        )
        began = time.perf_counter()
        result = deliver(
            resources, default_assets(), raise_on_error=False, run_config=_max_orders(calls)
        )
        wall_s = time.perf_counter() - began
        state = erp.command({"state": True})
    sent = metadata(result, "erp_delivered_orders").get("sent") if result.success else None
    if sent != calls:
        raise RuntimeError(f"pacing: the delivery run sent {sent} of {calls} orders")
    return _figures(state, window_s, wall_s, calls)


def _max_orders(calls: int) -> dict[str, Any]:
    op = default_assets().erp_delivered_orders.op.name
    return {"ops": {op: {"config": {"max_orders": calls}}}}


def _erp_refs(resources: dict[str, Any], ledger: Ledger) -> tuple[list[str], list[str]]:
    """Accounts and items the pacing ERP holds (its seed's customers and products)."""
    from integration_project.sandbox.world import SandboxData

    data = SandboxData.build(SEED)
    emails = [c.email for c in data.customers if c.in_erp][:5]
    skus = [p.sku for p in data.products][:5]
    with erp_client(resources["erp"], ledger, holder="bench-pacing") as client:
        accounts = [client.find_account_id(email) for email in emails]
        items = [client.find_item_id(sku) for sku in skus]
    return [a for a in accounts if a], [i for i in items if i]


def _map_orders(ledger: Ledger, n: int, refs: tuple[list[str], list[str]]) -> None:
    """``n`` mapped orders, one ERP call each when delivered."""
    accounts, items = refs
    now = datetime.now(UTC)
    rows = []
    for k in range(n):
        ref = f"P{k:05d}"
        payload = {
            "OrderedBy": accounts[k % len(accounts)],
            "YourRef": ref,
            "Description": f"Pacing bench order {ref}",
            "SalesOrderLines": [{"Item": items[k % len(items)], "Quantity": 1 + k % 3}],
        }
        created = now - timedelta(seconds=n - k)
        rows.append(MappingRow(uuid.uuid4().hex, ref, created, "mapped", "DE", None, payload))
    ledger.mapped.record(rows, run_id="pacing-bench")


def _steady_rate(windows: list[list[float]], window_s: float) -> tuple[float, int]:
    """Calls admitted per window in steady state (NaN with fewer than three windows), and
    how many full windows that counts: from the second window's start to the last one's."""
    if len(windows) < 3:
        return math.nan, 0
    steady = windows[1:-1]
    span_s = windows[-1][0] - windows[1][0]
    return sum(w[1] for w in steady) / span_s * window_s, len(steady)


def _figures(state: dict[str, Any], window_s: float, wall_s: float, calls: int) -> list[Figure]:
    """Achieved rate over allowed and 429s, steady state, from the ERP's windows."""
    windows = state["minute_windows"]
    per_window, full = _steady_rate(windows, window_s)
    scale = f"{PER_MINUTE} calls per {window_s:g} s window, {LATENCY_S * 1000:.0f} ms a call"
    seen = f"{full} full windows" if full else "too few calls for a steady state"
    return [
        Figure(
            SCENARIO,
            "ours",
            "calls per minute, steady state",
            round(per_window, 2),
            "calls",
            f"allowed {PER_MINUTE}; {scale}; {seen}",
        ),
        Figure(
            SCENARIO,
            "ours",
            "achieved / allowed rate",
            round(per_window / PER_MINUTE, 4),
            "ratio",
            "goal >= 0.95",
        ),
        Figure(
            SCENARIO,
            "ours",
            "429s in steady state",
            sum(w[2] for w in windows[1:]),
            "calls",
            f"429s overall: {sum(w[2] for w in windows)}",
        ),
        Figure(
            SCENARIO,
            "ours",
            "delivery run",
            round(wall_s, 1),
            "s",
            f"{calls} orders, {len(windows)} windows",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.pacing")
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="orders to deliver")
    parser.add_argument("--window-s", type=float, default=WINDOW_S, help="a minute's length")
    parser.add_argument("--serve-erp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ[SANDBOX_MODE_ENV] = "1"
    if args.serve_erp:
        return serve()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {"pacing_calls": args.calls, "pacing_window_s": args.window_s}
        for figure in run(Context("", "", Path(tmp), sizes)):
            line = f"{figure.metric:35} {figure.value:>10,.4g} {figure.unit:6} {figure.note}"
            sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
