"""The sandbox shop's orders: what is stored, and the ways tests and demos put orders in.

Orders live in memory keyed by id; tests put them into exact windows with
:meth:`ShopOrders.add_order`, :meth:`~ShopOrders.add_orders` and
:meth:`~ShopOrders.add_raw_order`, and entries a dict cannot carry (``null``, ``1e400``, 5,000
levels of nesting) with :meth:`~ShopOrders.add_verbatim`. History and arrivals come from
:meth:`~ShopOrders.add_history` and :meth:`~ShopOrders.add_random_order`; benchmarks store a
day of orders compactly with :meth:`~ShopOrders.add_bulk`. The HTTP side (tokens, the order
search) is :class:`~integration_project.sandbox.shop.SandboxShop`, which is a ``ShopOrders``.
"""

from __future__ import annotations

import copy
import random
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from integration_project.sandbox.common import Clock, system_clock
from integration_project.sandbox.data import OrderFactory, OrderTruth
from integration_project.sandbox.shop_search import VERBATIM_KEY, pack
from integration_project.sandbox.world import SandboxData
from integration_project.shopware.models import format_shop_datetime

#: ``states`` of a shop: the state of its generated (history, arrivals) orders.
SHOP_STATES = frozenset({"open", "mixed"})


class ShopOrders:
    """A shop's stored orders and their ground truth; thread-safe (one lock around the state).

    Orders come from an :class:`OrderFactory` over ``data`` (numbers from
    ``first_order_number``, random stream ``order_stream``, sales channel ``sales_channel``,
    ``company_share`` as there). ``states``: ``"open"`` = generated orders (history, arrivals)
    are all open; ``"mixed"`` = their state is drawn (~5 % cancelled, ~10 % completed, ~5 % in
    progress). :meth:`add_order` makes open orders either way unless given ``state``.
    """

    def __init__(
        self,
        *,
        seed: int,
        data: SandboxData | None,
        clock: Clock | None,
        first_order_number: int,
        order_stream: str,
        sales_channel: str,
        company_share: float | None,
        states: str,
    ) -> None:
        if states not in SHOP_STATES:
            raise ValueError(f"states must be one of {sorted(SHOP_STATES)}, not {states!r}")
        self.data = data or SandboxData.build(seed)
        self.factory = OrderFactory(
            self.data,
            first_order_number=first_order_number,
            stream=order_stream,
            sales_channel=sales_channel,
            company_share=company_share,
        )
        self.states = states
        self.clock = clock or system_clock
        #: Every order, keyed by id (insertion order = arrival order).
        self.orders: dict[str, dict[str, Any]] = {}
        # The first shop keeps its historical stream name; others get their own.
        history_key = "history" if order_stream == "orders" else f"history:{order_stream}"
        self._history_rng = random.Random(f"{history_key}:{seed}")
        self._lock = threading.RLock()
        #: Orders added by :meth:`add_bulk`, each zlib-compressed JSON (append-only).
        self._packed: list[bytes] = []
        #: Bumped whenever an order is added; search results are cached per version.
        self._version = 0
        #: Entries served as raw JSON text (:meth:`add_verbatim`), by key.
        self._verbatim: dict[str, str] = {}
        #: Their place in searches: a stand-in order with ``id``, ``createdAt`` and the key.
        self._verbatim_places: list[dict[str, Any]] = []

    @property
    def truth(self) -> dict[str, OrderTruth]:
        """Ground truth of every generated order (not of raw ones), keyed by order id."""
        return self.factory.truth

    def add_order(self, created_at: datetime | None = None, **options: Any) -> dict[str, Any]:
        """Generate and store one order created at ``created_at`` (default: now); returns it.

        ``options`` go to :meth:`OrderFactory.make_order` (``malformed``, ``shipping_country``,
        ``billing_country``, ``email``, ``skus``, ``countries``, ``state``). The defaults give an
        order the route should deliver: well-formed, open, shipped and billed to one EU country.
        The returned dict is the stored order itself: changing it changes what the shop answers.
        """
        options.setdefault("countries", "eu")
        with self._lock:
            order = self.factory.make_order(created_at or self.clock(), **options)
            self.orders[order["id"]] = order
            self._version += 1
            return order

    def add_orders(
        self,
        n: int,
        *,
        created_at: datetime | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """``n`` orders, all at ``created_at``, or spread over ``[start, end)`` (first at start)."""
        if (start is None) != (end is None):
            raise ValueError("give both start and end, or neither")
        if start is not None and end is not None:
            times = [start + (end - start) * i / n for i in range(n)]
        else:
            times = [created_at or self.clock()] * n
        return [self.add_order(t, **options) for t in times]

    def add_random_order(self, created_at: datetime | None = None) -> dict[str, Any]:
        """One order as history and arrivals make them: country mix, ~3 % bad, per ``states``."""
        state = "random" if self.states == "mixed" else "open"
        return self.add_order(created_at, malformed="random", countries="mix", state=state)

    def add_raw_order(self, order: dict[str, Any]) -> dict[str, Any]:
        """Store ``order`` exactly as given (it needs an ``id``); for hand-made broken orders."""
        if not order.get("id"):
            raise ValueError("a raw order needs an 'id'")
        with self._lock:
            self.orders[order["id"]] = copy.deepcopy(order)
            self._version += 1
            return self.orders[order["id"]]

    def add_verbatim(self, created_at: datetime, text: str, *, sort_id: str | None = None) -> str:
        """Test hook: serve ``text`` as it is, one entry of ``data``, in the order searches
        whose ``createdAt`` range covers ``created_at``; returns the entry's key.

        ``text`` is JSON (or anything else) that is neither parsed nor checked: ``null``, ``5``,
        ``{"id": 1}``, ``{"amountTotal": 1e400}``, an order with 5,000 levels of nesting, an
        order a dict cannot hold. The entry takes its place in the search as an order with
        ``createdAt`` = ``created_at`` and ``id`` = ``sort_id`` would (default: after the
        stored orders of the same millisecond); filters other than the range see nothing else
        of it. Not in :attr:`orders` or :attr:`truth`.
        """
        with self._lock:
            key = f"verbatim-{len(self._verbatim):06d}"
            self._verbatim[key] = text
            self._verbatim_places.append(
                {
                    "id": sort_id if sort_id is not None else f"~{key}",
                    "createdAt": format_shop_datetime(created_at),
                    VERBATIM_KEY: key,
                }
            )
            self._version += 1
            return key

    def clear_verbatim(self) -> None:
        """Test hook: stop serving every :meth:`add_verbatim` entry."""
        with self._lock:
            self._verbatim.clear()
            self._verbatim_places.clear()
            self._version += 1

    def add_history(
        self, history: timedelta, orders_per_minute: float, *, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Orders over ``[until - history, until)``, ``orders_per_minute`` on average, ~3 % bad.

        Their states follow ``states`` (see :meth:`add_random_order`).
        """
        end = until or self.clock()
        t = end - history
        mean_gap = 60.0 / orders_per_minute
        added = []
        while t < end:
            added.append(self.add_random_order(t))
            t += timedelta(seconds=mean_gap * self._history_rng.uniform(0.5, 1.5))
        return added

    def add_bulk(self, n: int, *, start: datetime, end: datetime) -> Counter[str]:
        """``n`` orders as history makes them (country mix, ~3 % bad, states per ``states``),
        spread evenly over ``[start, end)``, stored compactly for benchmarks (a day at 70 a
        minute is ~100,000 orders: ~1.4 GiB as dicts, ~0.2 GiB packed).

        Bulk orders are served by the order search like any other, but are not in
        :attr:`orders` or :attr:`truth`: the ground truth is the returned tally (``orders``,
        ``eu``, ``expected_in_erp``, ``malformed``). While bulk orders exist, a search's matches
        are computed on its first page and reused for the following pages of the same criteria
        (until an order is added), as a database with an index would answer.
        """
        state = "random" if self.states == "mixed" else "open"
        tally: Counter[str] = Counter()
        with self._lock:
            for i in range(n):
                created_at = start + (end - start) * i / n
                order = self.factory.make_order(
                    created_at, malformed="random", countries="mix", state=state
                )
                truth = self.factory.truth.pop(order["id"])
                tally["orders"] += 1
                tally["eu"] += truth.eu
                tally["expected_in_erp"] += truth.expected_in_erp
                tally["malformed"] += truth.malformed is not None
                self._packed.append(pack(order))
            self._version += 1
        return tally

    def _searchable(self) -> tuple[list[dict[str, Any]], list[bytes], int]:
        """What a search sees now: the stored orders and verbatim stand-ins, the packed
        orders (append-only: the list itself), and the version they are at."""
        with self._lock:
            orders = list(self.orders.values()) + list(self._verbatim_places)
            return orders, self._packed, self._version

    def truth_between(self, start: datetime, end: datetime) -> list[OrderTruth]:
        """Ground truth of the generated orders created in ``[start, end)``, oldest first."""
        with self._lock:
            truths = [t for t in self.truth.values() if start <= t.created_at < end]
        return sorted(truths, key=lambda t: (t.created_at, t.order_id))
