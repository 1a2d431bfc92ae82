"""The sandbox shop's orders: what is stored, and the ways tests and demos put orders in.

Orders live in memory keyed by id; tests put them into exact windows with
:meth:`ShopOrders.add_order`, :meth:`~ShopOrders.add_orders` and
:meth:`~ShopOrders.add_raw_order`, and entries a dict cannot carry (``null``, ``1e400``, 5,000
levels of nesting) with :meth:`~ShopOrders.add_verbatim`. History and arrivals come from
:meth:`~ShopOrders.add_history` and :meth:`~ShopOrders.add_random_order`; benchmarks store up
to millions of orders with :meth:`~ShopOrders.add_bulk`. The HTTP side (tokens, the order
search) is :class:`~integration_project.sandbox.shop.SandboxShop`, which is a ``ShopOrders``.

``autoIncrement``: as in Shopware (``OrderDefinition``'s ``AutoIncrementField``, a MySQL
AUTO_INCREMENT column), every stored order gets the next number in the order the shop *stored*
it, whatever its ``createdAt``: an order added now with a ``createdAt`` two hours ago gets the
next number. The counter starts at the shop's ``first_order_number`` (10001, 50001 for the B2B
shop), so an order made by :meth:`~ShopOrders.add_order` has ``autoIncrement`` = its order
number until raw orders or verbatim entries take numbers in between. A raw order that brings
its own ``autoIncrement`` keeps it, and the counter moves past it as MySQL's does.

Bulk orders (:class:`BulkSegment`): one :meth:`~ShopOrders.add_bulk` call makes at most
``templates`` (default :data:`BULK_TEMPLATES`) distinct orders with
:meth:`OrderFactory.make_order`, exactly as the shop would make them one by one, and derives
order ``i`` from template ``i % templates``: same customer, goods, prices, countries, state and
defects, with its own ``createdAt`` (and every date that follows from it), ``orderNumber``,
``autoIncrement`` and own ids (the order's, its line items', addresses', customer's and
delivery's, and ``deepLinkCode``: each keeps the template's last 16 hex digits behind 16 drawn
from the order's ``autoIncrement``, so ids are unique across the shop). Orders
``0 .. templates - 1`` are the templates themselves. Nothing per order is stored: a derived
order is rendered on demand from its template's JSON text, with slots for what differs
(:meth:`BulkSegment.answer`, the search answer's text for the route's associations;
:meth:`BulkSegment.order`, the order as a dict). ``createdAt`` and ``autoIncrement`` both rise
with ``i``, which lets the search answer range filters on them by bisection.
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import operator
import random
import re
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from integration_project.sandbox.common import Clock, system_clock
from integration_project.sandbox.data import OrderFactory, OrderTruth
from integration_project.sandbox.shop_search import VERBATIM_KEY, route_answer_text
from integration_project.sandbox.world import SandboxData
from integration_project.shopware.models import format_shop_datetime, format_storage_datetime

#: ``states`` of a shop: the state of its generated (history, arrivals) orders.
SHOP_STATES = frozenset({"open", "mixed"})
#: Distinct orders one :meth:`ShopOrders.add_bulk` call makes; the rest are derived from them.
BULK_TEMPLATES = 4096
_MASK64 = (1 << 64) - 1
#: Slots of a bulk template (see :class:`_Template`); own ids follow from :data:`_ID_SLOTS` on.
_CREATED, _NUMBER, _AUTO, _DATE, _EARLIEST, _LATEST = range(6)
_ID_SLOTS = 6


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
        #: Orders added by :meth:`add_bulk`, a segment per call (append-only).
        self._bulk: list[BulkSegment] = []
        #: The next ``autoIncrement`` (see the module docstring).
        self._next_auto = first_order_number
        #: Mixed into the ids of derived bulk orders, so each shop's differ.
        self._id_salt = random.Random(f"bulk-ids:{order_stream}:{seed}").getrandbits(64)
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
            order["autoIncrement"] = self._take_auto()
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
        """Store ``order`` as given (it needs an ``id``); for hand-made broken orders.

        Without an ``autoIncrement`` it gets the next one (added last); with one, it keeps it
        (a copy of a stored order keeps the original's number unless the test drops it).
        """
        if not order.get("id"):
            raise ValueError("a raw order needs an 'id'")
        with self._lock:
            stored = copy.deepcopy(order)
            stored["autoIncrement"] = self._take_auto(stored.get("autoIncrement"))
            self.orders[order["id"]] = stored
            self._version += 1
            return stored

    def _take_auto(self, given: Any = None) -> Any:
        """The next ``autoIncrement``; or ``given`` kept, the counter moved past it if it is an
        integer at or above it (as MySQL's AUTO_INCREMENT does). Under the lock."""
        if given is None:
            given = self._next_auto
        if isinstance(given, int) and not isinstance(given, bool):
            self._next_auto = max(self._next_auto, given + 1)
        return given

    def add_verbatim(self, created_at: datetime, text: str, *, sort_id: str | None = None) -> str:
        """Test hook: serve ``text`` as it is, one entry of ``data``, in the order searches
        whose ``createdAt`` range covers ``created_at``; returns the entry's key.

        ``text`` is JSON (or anything else) that is neither parsed nor checked: ``null``, ``5``,
        ``{"id": 1}``, ``{"amountTotal": 1e400}``, an order with 5,000 levels of nesting, an
        order a dict cannot hold. The entry takes its place in the search as an order with
        ``createdAt`` = ``created_at`` and ``id`` = ``sort_id`` would (default: after the
        stored orders of the same millisecond), and ``autoIncrement`` the next number (an entry
        is stored like an order); filters other than ranges on these see nothing else of it.
        Not in :attr:`orders` or :attr:`truth`.
        """
        with self._lock:
            key = f"verbatim-{len(self._verbatim):06d}"
            self._verbatim[key] = text
            self._verbatim_places.append(
                {
                    "id": sort_id if sort_id is not None else f"~{key}",
                    "createdAt": format_shop_datetime(created_at),
                    "autoIncrement": self._take_auto(),
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

    def add_bulk(
        self, n: int, *, start: datetime, end: datetime, templates: int = BULK_TEMPLATES
    ) -> Counter[str]:
        """``n`` orders as history makes them (country mix, ~3 % bad, states per ``states``),
        spread evenly over ``[start, end)`` (order ``i`` at ``start + (end - start) * i / n``),
        for benchmarks: a million orders over 30 days in seconds and a few MiB beyond the
        ``templates`` distinct orders they are derived from (see the module docstring).

        Bulk orders are served by the order search like any other, but are not in
        :attr:`orders` or :attr:`truth`: the ground truth is the returned tally (``orders``,
        ``eu``, ``expected_in_erp``, ``malformed``). They take order numbers and
        ``autoIncrement`` values ``n`` at a time, in order of ``createdAt``.
        """
        if n < 1 or templates < 1:
            raise ValueError(f"add_bulk needs n >= 1 and templates >= 1, not {n}, {templates}")
        state = "random" if self.states == "mixed" else "open"
        with self._lock:
            first_number, first_auto = self.factory.next_order_number, self._next_auto
            made = []
            for j in range(min(n, templates)):
                created_at = start + (end - start) * j / n
                order = self.factory.make_order(
                    created_at, malformed="random", countries="mix", state=state
                )
                order["autoIncrement"] = first_auto + j
                made.append(_Template(order, self.factory.truth.pop(order["id"])))
            segment = BulkSegment(
                made,
                n=n,
                start=start,
                end=end,
                first_number=first_number,
                first_auto=first_auto,
                salt=self._id_salt,
            )
            self.factory.next_order_number = first_number + n
            self._next_auto = first_auto + n
            self._bulk.append(segment)
            self._version += 1
        return segment.tally()

    @property
    def bulk_count(self) -> int:
        """How many orders :meth:`add_bulk` stored."""
        with self._lock:
            return sum(segment.n for segment in self._bulk)

    def _searchable(self) -> tuple[list[dict[str, Any]], BulkOrders, int]:
        """What a search sees now: the stored orders and verbatim stand-ins, the bulk orders,
        and the version they are at."""
        with self._lock:
            orders = list(self.orders.values()) + list(self._verbatim_places)
            return orders, BulkOrders(tuple(self._bulk)), self._version

    def truth_between(self, start: datetime, end: datetime) -> list[OrderTruth]:
        """Ground truth of the generated orders created in ``[start, end)``, oldest first."""
        with self._lock:
            truths = [t for t in self.truth.values() if start <= t.created_at < end]
        return sorted(truths, key=lambda t: (t.created_at, t.order_id))


# --- Bulk orders -------------------------------------------------------------------------------

#: Fields of the order, and of the entities it owns, that follow from its ``createdAt``.
_TIME_SLOTS = {
    "createdAt": _CREATED,
    "orderDateTime": _CREATED,
    "orderDate": _DATE,
    "shippingDateEarliest": _EARLIEST,
    "shippingDateLatest": _LATEST,
}
#: Fields of the order itself that a derived order numbers anew.
_NUMBER_SLOTS = {"orderNumber": _NUMBER, "autoIncrement": _AUTO}
#: A slot in a template's JSON text (a NUL never occurs in a generated order).
_SLOT = re.compile(rb'"\\u0000(\d+)\\u0000"')


def _slot(index: int) -> str:
    return f"\x00{index}\x00"


class _Text:
    """JSON text (UTF-8) with slots: literal pieces, and which slot's value goes between each
    two. Bytes, not str: a page is joined and sent with no wide string to build and encode."""

    __slots__ = ("parts", "pick")

    def __init__(self, text: str) -> None:
        # literal, slot, literal, ..., literal
        self.parts: list[bytes] = _SLOT.split(text.encode("utf-8"))
        slots = [int(k) for k in self.parts[1::2]]
        pick = operator.itemgetter(*slots)
        self.pick = pick if len(slots) > 1 else lambda values: (pick(values),)

    def render(self, values: list[bytes]) -> bytes:
        out = self.parts.copy()
        out[1::2] = self.pick(values)
        return b"".join(out)


class _Template:
    """A generated order as JSON texts with a slot for each value a derived order changes:
    ``stored`` (the order as stored) and ``answer`` (as the search answers it for the route's
    associations). ``quoted_ids``: its own ids as JSON, order id first (slot
    :data:`_ID_SLOTS` + k)."""

    __slots__ = ("answer", "quoted_ids", "stored", "truth")

    def __init__(self, order: dict[str, Any], truth: OrderTruth) -> None:
        own = _own_ids(order)
        slotted = _slotted(order, order["id"], {x: _ID_SLOTS + k for k, x in enumerate(own)})
        stored = json.dumps(slotted, ensure_ascii=False)
        answer = route_answer_text(slotted)
        self.stored = _Text(stored)
        self.answer = self.stored if answer == stored else _Text(answer)
        self.quoted_ids = [f'"{x}"'.encode() for x in own]
        self.truth = truth


def _own_ids(order: dict[str, Any]) -> list[str]:
    """The ids a derived order must not share: the order's, ``deepLinkCode``, and the ``id`` of
    every entity that belongs to the order (``orderId`` = its id), order id first."""
    own = [order["id"], order["deepLinkCode"]]
    stack: list[Any] = [order]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if value.get("orderId") == order["id"] and value.get("id") not in own:
                own.append(value["id"])
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return own


def _slotted(value: Any, order_id: str, own: dict[str, int], *, top: bool = True) -> Any:
    """A copy of ``value`` with a slot for every own id, every time of the order and of the
    entities it owns, and (at the top) its numbers."""
    if isinstance(value, dict):
        mine = top or value.get("orderId") == order_id
        out = {}
        for key, item in value.items():
            if mine and key in _TIME_SLOTS and item is not None:
                out[key] = _slot(_TIME_SLOTS[key])
            elif top and key in _NUMBER_SLOTS:
                out[key] = _slot(_NUMBER_SLOTS[key])
            else:
                out[key] = _slotted(item, order_id, own, top=False)
        return out
    if isinstance(value, list):
        return [_slotted(item, order_id, own, top=False) for item in value]
    if isinstance(value, str) and value in own:
        return _slot(own[value])
    return value


class BulkSegment:
    """The orders of one :meth:`ShopOrders.add_bulk` call: ``n`` orders over ``[start, end)``,
    order ``i`` derived from template ``i % len(templates)`` (see the module docstring)."""

    def __init__(
        self,
        templates: list[_Template],
        *,
        n: int,
        start: datetime,
        end: datetime,
        first_number: int,
        first_auto: int,
        salt: int,
    ) -> None:
        self.templates = templates
        self.n = n
        self.start = start
        self.span = end - start
        self.first_number = first_number
        self.first_auto = first_auto
        self.salt = salt
        #: createdAt (to the millisecond, as stored) strictly rises with i: at least 1.001 ms
        #: apart before rounding. Sorting by createdAt then id is then sorting by i.
        self.strict = self.span / max(n, 1) >= timedelta(microseconds=1001)

    def created(self, i: int) -> datetime:
        return self.start + self.span * i / self.n

    def storage_text(self, i: int) -> str:
        """``createdAt`` as the database holds it, which range filters compare with."""
        return format_storage_datetime(self.created(i))

    def _values(self, i: int) -> list[bytes]:
        """The JSON value (UTF-8) of every slot of order ``i``'s template."""
        at = self.created(i)
        template = self.templates[i % len(self.templates)]
        ids = template.quoted_ids
        if i >= len(self.templates):
            drawn = ((self.first_auto + i) * 0x9E3779B97F4A7C15 ^ self.salt) & _MASK64
            prefix = b'"%016x' % drawn
            ids = [prefix + quoted[17:] for quoted in ids]
        return [
            f'"{format_shop_datetime(at)}"'.encode(),
            b'"%d"' % (self.first_number + i),
            b"%d" % (self.first_auto + i),
            f'"{at.date().isoformat()}"'.encode(),
            f'"{format_shop_datetime(at + timedelta(days=1))}"'.encode(),
            f'"{format_shop_datetime(at + timedelta(days=3))}"'.encode(),
            *ids,
        ]

    def answer(self, i: int) -> bytes:
        """Order ``i`` as the search answers it when asked for the route's associations."""
        return self.templates[i % len(self.templates)].answer.render(self._values(i))

    def order(self, i: int) -> dict[str, Any]:
        """Order ``i`` as stored (a new dict each time)."""
        return json.loads(self.templates[i % len(self.templates)].stored.render(self._values(i)))

    def order_id(self, i: int) -> str:
        return self._values(i)[_ID_SLOTS][1:-1].decode()

    def narrow(self, field: str, bounds: dict[str, Any], lo: int, hi: int) -> tuple[int, int]:
        """The orders of ``[lo, hi)`` inside a range on ``createdAt`` (bounds: storage text,
        compared as text as the database does) or ``autoIncrement`` (numbers)."""
        for op, bound in bounds.items():
            if lo >= hi:
                return lo, lo
            if field == "createdAt":
                cut = bisect.bisect_left if op in ("gte", "lt") else bisect.bisect_right
                at = cut(range(self.n), bound, lo, hi, key=self.storage_text)
            else:  # autoIncrement = first_auto + i, an integer: where the bound cuts
                cut = math.floor(bound) + 1 if op in ("gt", "lte") else math.ceil(bound)
                at = min(max(cut - self.first_auto, lo), hi)
            lo, hi = (at, hi) if op in ("gt", "gte") else (lo, at)
        return lo, max(lo, hi)

    def tally(self) -> Counter[str]:
        """Ground truth of the segment: ``orders``, ``eu``, ``expected_in_erp``, ``malformed``."""
        tally: Counter[str] = Counter()
        k = len(self.templates)
        for j, template in enumerate(self.templates):
            copies = self.n // k + (j < self.n % k)
            truth = template.truth
            tally["orders"] += copies
            tally["eu"] += copies * truth.eu
            tally["expected_in_erp"] += copies * truth.expected_in_erp
            tally["malformed"] += copies * (truth.malformed is not None)
        return tally


class BulkOrders:
    """The bulk orders a search sees: its segments one after another, order ``g`` overall
    being order ``g - base`` of the segment it falls in."""

    def __init__(self, segments: tuple[BulkSegment, ...]) -> None:
        self.segments = segments
        self.bases = [0]
        for segment in segments:
            self.bases.append(self.bases[-1] + segment.n)

    def __len__(self) -> int:
        return self.bases[-1]

    def locate(self, g: int) -> tuple[BulkSegment, int]:
        k = bisect.bisect_right(self.bases, g) - 1
        return self.segments[k], g - self.bases[k]

    def order(self, g: int) -> dict[str, Any]:
        segment, i = self.locate(g)
        return segment.order(i)

    def answer(self, g: int) -> bytes:
        segment, i = self.locate(g)
        return segment.answer(i)
