"""``integration-sandbox``: run the sandbox shop and ERP until interrupted.

Pre-generates ``--history-minutes`` of orders, then keeps orders arriving at
``--orders-per-minute`` (createdAt = now), so every 5-minute window has some. Request logs go
through ``logging`` (``-v`` to see them).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import timedelta
from types import FrameType

from integration_project import settings
from integration_project.sandbox.server import Sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="integration-sandbox",
        description="Local Shopware 6 + Exact Online stand-ins for the order route.",
    )
    parser.add_argument("--host", default=settings.SANDBOX_HOST)
    parser.add_argument("--shop-port", type=int, default=settings.SANDBOX_SHOP_PORT)
    parser.add_argument("--erp-port", type=int, default=settings.SANDBOX_ERP_PORT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history-minutes", type=float, default=120.0)
    parser.add_argument("--orders-per-minute", type=float, default=3.0)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    sandbox = Sandbox(
        host=args.host,
        shop_port=args.shop_port,
        erp_port=args.erp_port,
        seed=args.seed,
        history=timedelta(minutes=args.history_minutes),
        orders_per_minute=args.orders_per_minute,
        history_orders_per_minute=args.orders_per_minute or 3.0,
    )
    with sandbox:
        print(f"shop (Shopware 6 Admin API): {sandbox.shop_url}")  # noqa: T201
        print(f"  client_id={sandbox.shop.client_id} client_secret={sandbox.shop.client_secret}")  # noqa: T201
        print(f"ERP (Exact Online REST API): {sandbox.erp_url}")  # noqa: T201
        print(  # noqa: T201
            f"  division={sandbox.erp.division} client_id={sandbox.erp.client_id} "
            f"client_secret={sandbox.erp.client_secret} refresh_token={sandbox.erp.refresh_token}"
        )
        print(f"  {len(sandbox.shop.orders)} orders pre-generated; Ctrl-C to stop")  # noqa: T201
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
