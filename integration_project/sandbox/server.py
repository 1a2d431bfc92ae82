"""Run both sandbox systems on local ports, in-process, for tests and for the CLI.

``Sandbox`` owns the two HTTP servers and the background threads (serving, and optionally new
orders arriving over time). It is a context manager so a test cannot leak a listening socket.
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
from integration_project.sandbox.data import SandboxData
from integration_project.sandbox.erp import SandboxErp
from integration_project.sandbox.shop import SandboxShop
from integration_project.settings import SANDBOX_HOST


class Sandbox:
    """The sandbox shop and ERP, served on ``host`` (port 0 = any free port).

    ``history``: orders to pre-generate over ``[now - history, now)`` at
    ``history_orders_per_minute``. ``orders_per_minute`` > 0 starts a thread that adds orders
    with ``createdAt`` = now at about that rate (off by default, so tests control every order).
    Pass ready-made ``shop`` / ``erp`` objects to tune them (token lifetimes, rate limits,
    faults); otherwise both are built from ``seed`` and share ``clock``.
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
    ) -> None:
        self.host = host
        self.seed = seed
        self.clock = clock or system_clock
        self.data = SandboxData.build(seed)
        self.shop = shop or SandboxShop(seed=seed, data=self.data, clock=self.clock)
        self.erp = erp or SandboxErp(seed=seed, data=self.data, clock=self.clock)
        self.history = history
        self.orders_per_minute = orders_per_minute
        self.history_orders_per_minute = history_orders_per_minute
        self._ports = (shop_port, erp_port)
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
            self.shop.add_history(self.history, self.history_orders_per_minute)
        try:
            for app, port in zip((self.shop, self.erp), self._ports, strict=True):
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
            self._spawn(self._arrivals, "sandbox-arrivals")
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

    def _arrivals(self) -> None:
        """New orders at about ``orders_per_minute``, so every 5-minute window gets some."""
        rng = random.Random(f"arrivals:{self.seed}")
        mean_gap = 60.0 / self.orders_per_minute
        while not self._stopping.wait(mean_gap * rng.uniform(0.7, 1.3)):
            self.shop.add_order(self.clock(), malformed="random", countries="mix")
