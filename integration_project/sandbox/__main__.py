"""``integration-sandbox``: run the sandbox shops, ERP and Spryker backend until interrupted.

Serves the shop, the ERP, the Spryker backend (``--spryker-port``) and (unless
``--no-second-shop``) the second, B2B shop on ``--shop2-port``. Pre-generates
``--history-minutes`` of orders in each shop and in Spryker, then keeps orders arriving at
``--orders-per-minute`` (createdAt = now), so every 5-minute window has some. With
``--csv-folder``, marketplace order files go into that folder too: a few over the history, then
one every ``--csv-every-minutes``. Request logs go through ``logging`` (``-v`` to see them).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType

from integration_project import settings
from integration_project.sandbox.erp import SandboxErp
from integration_project.sandbox.server import Sandbox


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        second_shop=args.second_shop,
        shop2_port=args.shop2_port,
        spryker_port=args.spryker_port,
        csv_folder=args.csv_folder,
        csv_every=timedelta(minutes=args.csv_every_minutes),
        seed=args.seed,
        history=timedelta(minutes=args.history_minutes),
        orders_per_minute=args.orders_per_minute,
        history_orders_per_minute=args.orders_per_minute or 3.0,
        erp=SandboxErp(seed=args.seed, minute_limit=args.erp_minute_limit),
    )
    with sandbox:
        _print_endpoints(sandbox)
        while not stop.wait(0.5):
            pass
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="integration-sandbox",
        description="Local Shopware 6, Spryker and Exact Online stand-ins for the order routes.",
    )
    parser.add_argument("--host", default=settings.SANDBOX_HOST)
    parser.add_argument("--shop-port", type=int, default=settings.SANDBOX_SHOP_PORT)
    parser.add_argument("--erp-port", type=int, default=settings.SANDBOX_ERP_PORT)
    parser.add_argument("--shop2-port", type=int, default=settings.SANDBOX_SHOP2_PORT)
    parser.add_argument("--spryker-port", type=int, default=settings.SANDBOX_SPRYKER_PORT)
    parser.add_argument(
        "--csv-folder",
        type=Path,
        default=None,
        help="drop marketplace order files (CSV) into this folder (default: none)",
    )
    parser.add_argument("--csv-every-minutes", type=float, default=3.0)
    parser.add_argument(
        "--no-second-shop",
        dest="second_shop",
        action="store_false",
        help="serve only the first shop (no B2B shop)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history-minutes", type=float, default=120.0)
    parser.add_argument("--orders-per-minute", type=float, default=3.0)
    parser.add_argument(
        "--erp-minute-limit",
        type=int,
        default=60,
        help="ERP calls allowed a minute (Exact's default: 60); raise it for fast smoke tests",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def _print_endpoints(sandbox: Sandbox) -> None:
    """Where each system listens and the credentials to use (the console is the UI here)."""
    print(f"shop (Shopware 6 Admin API): {sandbox.shop_url}")  # noqa: T201
    print(f"  client_id={sandbox.shop.client_id} client_secret={sandbox.shop.client_secret}")  # noqa: T201
    print(f"ERP (Exact Online REST API): {sandbox.erp_url}")  # noqa: T201
    print(  # noqa: T201
        f"  division={sandbox.erp.division} client_id={sandbox.erp.client_id} "
        f"client_secret={sandbox.erp.client_secret} refresh_token={sandbox.erp.refresh_token}"
    )
    if sandbox.shop2 is not None:
        shop2 = sandbox.shop2
        print(f"shop 2, B2B (Shopware 6 Admin API): {sandbox.shop2_url}")  # noqa: T201
        print(f"  client_id={shop2.client_id} client_secret={shop2.client_secret}")  # noqa: T201
    spryker = sandbox.spryker
    print(f"Spryker (Data Exchange API): {sandbox.spryker_url}")  # noqa: T201
    print(f"  username={spryker.username} password={spryker.password}")  # noqa: T201
    if sandbox.csv_drop is not None:
        files = len(sandbox.csv_drop.files)
        print(f"marketplace order files (CSV): {sandbox.csv_drop.folder} ({files} so far)")  # noqa: T201
    labels = ("shop", "shop 2")
    counts = ", ".join(
        f"{len(s.orders)} in {n}" for s, n in zip(sandbox.shops, labels, strict=False)
    )
    counts += f", {len(spryker.orders)} in Spryker"
    print(f"  orders pre-generated: {counts}; Ctrl-C to stop")  # noqa: T201


if __name__ == "__main__":
    raise SystemExit(main())
