"""Run the sandbox systems on local ports, in-process, for tests and for the CLI.

``Sandbox`` owns the HTTP servers (shop, ERP and optionally a second, B2B shop) and the
background threads (serving, and optionally new orders arriving over time). It is a context
manager so a test cannot leak a listening socket.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable
from datetime import timedelta
from http.server import ThreadingHTTPServer
from types import TracebackType

from integration_project.sandbox.common import Clock, make_server, system_clock
from integration_project.sandbox.erp import SandboxErp
from integration_project.sandbox.shop import SandboxShop
from integration_project.sandbox.world import SandboxData
from integration_project.settings import SANDBOX_HOST


class Sandbox:
    """The sandbox shop and ERP, served on ``host`` (port 0 = any free port).

    ``second_shop``: also serve a second shop (:meth:`SandboxShop.b2b`: own credentials, order
    numbers from 50001, mixed states) on ``shop2_port``, as ``shop2`` / ``shop2_url``; it shares
    ``data`` with the first shop, so the one ERP knows its items and customers. ``history``:
    orders to pre-generate over ``[now - history, now)`` at ``history_orders_per_minute``, in
    each shop. ``orders_per_minute`` > 0 starts a thread per shop that adds orders with
    ``createdAt`` = now at about that rate (off by default, so tests control every order).
    Pass ready-made ``shop`` / ``erp`` / ``shop2`` objects to tune them (token lifetimes, rate
    limits, faults; a ``shop2`` implies ``second_shop``); otherwise all are built from ``seed``
    and share ``clock``. :meth:`env` points at the first shop.
    """

    def __init__(
        self,
        *,
        host: str = SANDBOX_HOST,
        shop_port: int = 0,
        erp_port: int = 0,
        seed: int = 0,
        history: timedelta = timedelta(0),
        orders_per_minute: float = 0.0,
        history_orders_per_minute: float = 3.0,
        clock: Clock | None = None,
        shop: SandboxShop | None = None,
        erp: SandboxErp | None = None,
        second_shop: bool = False,
        shop2_port: int = 0,
        shop2: SandboxShop | None = None,
    ) -> None:
        self.host = host
        self.seed = seed
        self.clock = clock or system_clock
        self.data = SandboxData.build(seed)
        self.shop = shop or SandboxShop(seed=seed, data=self.data, clock=self.clock)
        self.erp = erp or SandboxErp(seed=seed, data=self.data, clock=self.clock)
        if shop2 is None and second_shop:
            shop2 = SandboxShop.b2b(seed=seed, data=self.data, clock=self.clock)
        #: The second (B2B) shop, or None when not enabled.
        self.shop2: SandboxShop | None = shop2
        self.history = history
        self.orders_per_minute = orders_per_minute
        self.history_orders_per_minute = history_orders_per_minute
        self._ports = (shop_port, erp_port, shop2_port)
        self._servers: list[ThreadingHTTPServer] = []
        self._serving: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def shop_url(self) -> str:
        return self._url(0)

    @property
    def erp_url(self) -> str:
        return self._url(1)

    @property
    def shop2_url(self) -> str:
        if self.shop2 is None:
            raise RuntimeError("no second shop: pass second_shop=True")
        return self._url(2)

    @property
    def shops(self) -> list[SandboxShop]:
        """The shops this sandbox serves: the first, then the second if enabled."""
        return [self.shop] if self.shop2 is None else [self.shop, self.shop2]

    def env(self) -> dict[str, str]:
        """The environment variables that point the project at this sandbox."""
        return {
            "SHOP_API_URL": self.shop_url,
            "SHOP_CLIENT_ID": self.shop.client_id,
            "SHOP_CLIENT_SECRET": self.shop.client_secret,
            "ERP_API_URL": self.erp_url,
            "ERP_DIVISION": self.erp.division,
            "ERP_CLIENT_ID": self.erp.client_id,
            "ERP_CLIENT_SECRET": self.erp.client_secret,
            "ERP_REFRESH_TOKEN": self.erp.refresh_token,
        }

    def start(self) -> Sandbox:
        if self._servers:
            raise RuntimeError("sandbox already started")
        if self.history > timedelta(0):
            for shop in self.shops:
                shop.add_history(self.history, self.history_orders_per_minute)
        apps: list[SandboxShop | SandboxErp] = [self.shop, self.erp, *self.shops[1:]]
        try:
            for app, port in zip(apps, self._ports, strict=False):
                self._servers.append(make_server(app, self.host, port))
        except OSError:
            self.stop()
            raise
        for server in self._servers:
            # A short poll interval makes stop() quick (shutdown waits for the next poll).
            serve = functools.partial(server.serve_forever, poll_interval=0.05)
            self._spawn(serve, f"sandbox-{server.server_address[1]}")
            self._serving.append(server)
        if self.orders_per_minute > 0:
            self._spawn(
                functools.partial(self._arrivals, self.shop, "arrivals"), "sandbox-arrivals"
            )
            if self.shop2 is not None:
                arrivals2 = functools.partial(self._arrivals, self.shop2, "arrivals:b2b")
                self._spawn(arrivals2, "sandbox-arrivals-b2b")
        return self

    def stop(self) -> None:
        self._stopping.set()
        for server in self._serving:  # shutdown() waits for serve_forever: only if it runs
            server.shutdown()
        for server in self._servers:
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._serving.clear()
        self._threads.clear()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _url(self, index: int) -> str:
        if not self._servers:
            raise RuntimeError("sandbox not started")
        host, port = self._servers[index].server_address[:2]
        return f"http://{host}:{port}"

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _arrivals(self, shop: SandboxShop, stream: str) -> None:
        """New orders at about ``orders_per_minute``, so every 5-minute window gets some."""
        rng = random.Random(f"{stream}:{self.seed}")
        mean_gap = 60.0 / self.orders_per_minute
        while not self._stopping.wait(mean_gap * rng.uniform(0.7, 1.3)):
            shop.add_random_order(self.clock())
