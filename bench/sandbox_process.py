"""The bench's sandbox (shop and ERP) in a process of its own, so no contender pays for it.

    python -m bench.sandbox_process --orders 200000 --start 2026-11-01T00:00:00+00:00 --days 30

The child fills the shop with ``--orders`` bulk orders spread evenly over the days
(``SandboxShop.add_bulk``), serves the shop and an ERP with limits no bench reaches, prints ONE
JSON line (``shop_url``, ``erp_url``, ``tally``, ``generate_s``, ``start``, ``end``), and serves
until its stdin closes; then it prints its peak RSS (``{"peak_rss_mib": ...}``) and exits.
:class:`SandboxProcess` starts it and reads both lines.

Every contender opens a ledger of its own, so each starts the ERP's OAuth chain afresh from the
sandbox's one refresh token. A real Exact retires a refresh token once its successor is used
and refuses a second refresh within 570 s; here each process is treated as a new
authorisation instead (:class:`_EveryProcessAuthorised`): the sandbox's seed token is always
accepted and refreshes are never too early. Nothing else of the ERP changes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.contenders import peak_rss_mib
from integration_project.settings import SANDBOX_ERP_REFRESH_TOKEN, SANDBOX_MODE_ENV, WINDOW

SEED = 2026
ROOT = Path(__file__).resolve().parents[1]


def bench_start(days: float, today: datetime | None = None) -> datetime:
    """Where the bench's orders begin: midnight UTC, whole days ago (``days`` rounded up, plus
    one), so every window of the ``days``-long range lies in the past (a partition exists for
    it) and the range ends by yesterday's end."""
    now = today or datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=math.ceil(days) + 1)


def _erp() -> Any:
    """The sandbox ERP with limits no bench reaches and every process its own authorisation."""
    from integration_project.sandbox import SandboxErp
    from integration_project.sandbox.erp_auth import ErpAuth

    class _EveryProcessAuthorised(ErpAuth):
        """Accepts the seed refresh token whenever it is sent (a new authorisation of the
        app), as each bench process starts its own chain from it."""

        def refresh(self, form: dict[str, str], now: datetime) -> Any:
            if form.get("refresh_token") == SANDBOX_ERP_REFRESH_TOKEN:
                self.refresh_token = SANDBOX_ERP_REFRESH_TOKEN
            return super().refresh(form, now)

    erp = SandboxErp(seed=SEED, minute_limit=10_000_000, day_limit=1_000_000_000)
    erp.auth = _EveryProcessAuthorised(
        client_id=erp.auth.client_id,
        client_secret=erp.auth.client_secret,
        refresh_token=SANDBOX_ERP_REFRESH_TOKEN,
        token_lifetime_s=erp.auth.token_lifetime_s,
        min_refresh_interval_s=0.0,
        strict_rotation=False,
    )
    return erp


def serve(orders: int, start: datetime, days: float) -> int:
    """The child: generate, announce, serve until stdin closes, report peak RSS."""
    from integration_project.sandbox import Sandbox

    end = start + WINDOW * max(1, int(days * timedelta(days=1) / WINDOW))  # whole windows
    began = time.perf_counter()
    with Sandbox(seed=SEED, erp=_erp()) as sandbox:
        tally = sandbox.shop.add_bulk(orders, start=start, end=end)
        ready = {
            "shop_url": sandbox.shop_url,
            "erp_url": sandbox.erp_url,
            "tally": dict(tally),
            "generate_s": round(time.perf_counter() - began, 1),
            "start": start.isoformat(),
            "end": end.isoformat(),
        }
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the parent closes it
    sys.stdout.write(json.dumps({"peak_rss_mib": peak_rss_mib()}) + "\n")
    sys.stdout.flush()
    return 0


class SandboxProcess:
    """``with SandboxProcess(orders, start, days) as ready:`` the child above, started and
    ready; afterwards :attr:`peak_rss_mib` holds its peak RSS."""

    def __init__(self, orders: int, start: datetime, days: float) -> None:
        self._argv = [
            *(sys.executable, "-m", "bench.sandbox_process"),
            *("--orders", str(orders), "--start", start.isoformat(), "--days", str(days)),
        ]
        self._child: subprocess.Popen[str] | None = None
        self.peak_rss_mib = 0.0

    def __enter__(self) -> dict[str, Any]:
        env = {**os.environ, SANDBOX_MODE_ENV: "1"}
        self._child = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        assert self._child.stdout is not None
        line = self._child.stdout.readline()
        try:
            ready = json.loads(line) if line.strip() else {}
        except ValueError:
            ready = {}
        if "shop_url" not in ready:
            self.__exit__()
            raise RuntimeError(
                f"the sandbox process ({' '.join(self._argv)}) did not announce itself: "
                f"it printed {line[:200]!r} (its errors are above)"
            )
        return ready

    def __exit__(self, *exc: object) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        tail = child.stdout.read().strip().splitlines()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if tail:
            self.peak_rss_mib = float(json.loads(tail[-1]).get("peak_rss_mib", 0.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox_process", description=__doc__)
    parser.add_argument("--orders", type=int, required=True, help="bulk orders to generate")
    parser.add_argument("--start", required=True, help="first order's moment (ISO 8601, UTC)")
    parser.add_argument("--days", type=float, required=True, help="days the orders spread over")
    args = parser.parse_args(argv)
    os.environ[SANDBOX_MODE_ENV] = "1"
    start = datetime.fromisoformat(args.start).astimezone(UTC)
    return serve(args.orders, start, args.days)


if __name__ == "__main__":
    raise SystemExit(main())
