"""Run the sandbox systems on local ports, in-process, for tests and for the CLI.

``Sandbox`` owns the HTTP servers (shop, ERP, Spryker backend and optionally a second, B2B
shop), the background threads (serving, and optionally new orders arriving over time) and,
when given a folder, the marketplace order files dropped into it. It is a context manager so a
test cannot leak a listening socket or a thread still writing files.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from integration_project.sandbox.common import App, Clock, logger, make_server, system_clock
from integration_project.sandbox.csv_drop import CsvDrop
from integration_project.sandbox.erp import SandboxErp
from integration_project.sandbox.shop import SandboxShop
from integration_project.sandbox.spryker import SandboxSpryker
from integration_project.sandbox.world import SandboxData
from integration_project.settings import SANDBOX_HOST

#: How often a sandbox with arrivals drops a marketplace order file.
CSV_EVERY = timedelta(minutes=3)
#: Files written at start when there is history (a few: they show the route's first reads).
CSV_HISTORY_FILES = 4
#: Share of dropped files with one defective row (a quarantined order).
CSV_BAD_SHARE = 0.2


class Sandbox:
    """The sandbox shop, ERP and Spryker backend, served on ``host`` (port 0 = any free port).

    ``second_shop``: also serve a second shop (:meth:`SandboxShop.b2b`: own credentials, order
    numbers from 50001, mixed states) on ``shop2_port``, as ``shop2`` / ``shop2_url``; it shares
    ``data`` with the first shop, so the one ERP knows its items and customers. The Spryker
    backend (``spryker`` / ``spryker_url``, on ``spryker_port``) shares ``data`` too.
    ``history``: orders to pre-generate over ``[now - history, now)`` at
    ``history_orders_per_minute``, in each shop and in Spryker. ``orders_per_minute`` > 0 starts
    a thread per shop and one for Spryker that add orders created now at about that rate (off
    by default, so tests control every order). Pass ready-made ``shop`` / ``erp`` / ``shop2`` /
    ``spryker`` objects to tune them (token lifetimes, rate limits, faults; a ``shop2`` implies
    ``second_shop``); otherwise all are built from ``seed`` and share ``clock``.

    ``csv_folder``: a folder to drop marketplace order files in (:class:`CsvDrop`, as
    ``csv_drop``): a few files over ``history`` at start, then, with arrivals on, one every
    ``csv_every`` with a few orders (now and then one with a defective row). :meth:`env` points
    at the first shop.
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
        spryker: SandboxSpryker | None = None,
        spryker_port: int = 0,
        csv_folder: Path | None = None,
        csv_every: timedelta = CSV_EVERY,
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
        self.spryker = spryker or SandboxSpryker(seed=seed, data=self.data, clock=self.clock)
        #: The marketplace files' writer, or None without ``csv_folder``.
        self.csv_drop: CsvDrop | None = None
        if csv_folder is not None:
            self.csv_drop = CsvDrop(csv_folder, data=self.data, seed=seed, clock=self.clock)
        if csv_every <= timedelta(0):
            raise ValueError(f"csv_every must be positive, not {csv_every}")
        self.csv_every = csv_every
        self.history = history
        self.orders_per_minute = orders_per_minute
        self.history_orders_per_minute = history_orders_per_minute
        self._ports = {"shop": shop_port, "erp": erp_port, "spryker": spryker_port}
        if shop2 is not None:
            self._ports["shop2"] = shop2_port
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._serving: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def shop_url(self) -> str:
        return self._url("shop")

    @property
    def erp_url(self) -> str:
        return self._url("erp")

    @property
    def spryker_url(self) -> str:
        return self._url("spryker")

    @property
    def shop2_url(self) -> str:
        if self.shop2 is None:
            raise RuntimeError("no second shop: pass second_shop=True")
        return self._url("shop2")

    @property
    def shops(self) -> list[SandboxShop]:
        """The shops this sandbox serves: the first, then the second if enabled."""
        return [self.shop] if self.shop2 is None else [self.shop, self.shop2]

    def env(self) -> dict[str, str]:
        """The environment variables that point the project at this sandbox (the CSV folder
        too when there is one)."""
        env = {
            "SHOP_API_URL": self.shop_url,
            "SHOP_CLIENT_ID": self.shop.client_id,
            "SHOP_CLIENT_SECRET": self.shop.client_secret,
            "ERP_API_URL": self.erp_url,
            "ERP_DIVISION": self.erp.division,
            "ERP_CLIENT_ID": self.erp.client_id,
            "ERP_CLIENT_SECRET": self.erp.client_secret,
            "ERP_REFRESH_TOKEN": self.erp.refresh_token,
            "SPRYKER_API_URL": self.spryker_url,
            "SPRYKER_USERNAME": self.spryker.username,
            "SPRYKER_PASSWORD": self.spryker.password,
        }
        if self.csv_drop is not None:
            env["CSV_ORDERS_FOLDER"] = str(self.csv_drop.folder)
        return env

    def start(self) -> Sandbox:
        if self._servers:
            raise RuntimeError("sandbox already started")
        self._add_history()
        apps: dict[str, App] = {"shop": self.shop, "erp": self.erp, "spryker": self.spryker}
        if self.shop2 is not None:
            apps["shop2"] = self.shop2
        try:
            for name, port in self._ports.items():
                self._servers[name] = make_server(apps[name], self.host, port)
        except OSError:
            self.stop()
            raise
        for server in self._servers.values():
            # A short poll interval makes stop() quick (shutdown waits for the next poll).
            serve = functools.partial(server.serve_forever, poll_interval=0.05)
            self._spawn(serve, f"sandbox-{server.server_address[1]}")
            self._serving.append(server)
        if self.orders_per_minute > 0:
            self._start_arrivals()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for server in self._serving:  # shutdown() waits for serve_forever: only if it runs
            server.shutdown()
        for server in self._servers.values():
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

    def _url(self, name: str) -> str:
        if not self._servers:
            raise RuntimeError("sandbox not started")
        host, port = self._servers[name].server_address[:2]
        return f"http://{host}:{port}"

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _add_history(self) -> None:
        """Orders over ``[now - history, now)`` in every system, and a few order files."""
        if self.history <= timedelta(0):
            return
        for shop in self.shops:
            shop.add_history(self.history, self.history_orders_per_minute)
        self.spryker.add_history(self.history, self.history_orders_per_minute)
        if self.csv_drop is not None:
            drop, end = self.csv_drop, self.clock()
            count = max(1, min(CSV_HISTORY_FILES, int(self.history / self.csv_every)))
            rng = random.Random(f"csv-history:{self.seed}")
            for n in range(count):
                moment = end - self.history * (count - 1 - n) / count
                bad = 1 if n == min(1, count - 1) else 0  # one file shows a quarantined order
                spread = self.history / count
                drop.write_file(moment, rng.randint(3, 6), bad_rows=bad, spread=spread)

    def _start_arrivals(self) -> None:
        """A thread per system adding orders created now, and one dropping order files."""
        streams: list[tuple[Callable[[datetime], Any], str]] = [
            (self.shop.add_random_order, "arrivals"),
            (self._add_spryker_order, "arrivals:spryker"),
        ]
        if self.shop2 is not None:
            streams.append((self.shop2.add_random_order, "arrivals:b2b"))
        for add, stream in streams:
            name = "sandbox-" + stream.replace(":", "-")
            self._spawn(functools.partial(self._arrivals, add, stream), name)
        if self.csv_drop is not None:
            self._spawn(self._csv_drops, "sandbox-csv-drops")

    def _add_spryker_order(self, moment: datetime) -> Any:
        return self.spryker.add_orders([moment])

    def _arrivals(self, add: Callable[[datetime], Any], stream: str) -> None:
        """New orders at about ``orders_per_minute``, so every 5-minute window gets some."""
        rng = random.Random(f"{stream}:{self.seed}")
        mean_gap = 60.0 / self.orders_per_minute
        while not self._stopping.wait(mean_gap * rng.uniform(0.7, 1.3)):
            add(self.clock())

    def _csv_drops(self) -> None:
        """A file every ``csv_every`` with a few orders, now and then one defective row. A
        file that cannot be written (disk full, folder removed) is logged and the next tried."""
        assert self.csv_drop is not None
        rng = random.Random(f"csv-arrivals:{self.seed}")
        every = self.csv_every
        while not self._stopping.wait(every.total_seconds()):
            bad = 1 if rng.random() < CSV_BAD_SHARE else 0
            try:
                self.csv_drop.write_file(
                    self.clock(), rng.randint(2, 5), bad_rows=bad, spread=every
                )
            except OSError as exc:
                logger.warning("could not write a marketplace order file: %s", exc)
