"""The sandbox shop's order search: matching, sorting, paging and the shape of the answer.

Association fields (order state, line items, currency, addresses, deliveries) are only filled
when the criteria ask for them, as Shopware 6.6 does (6.5 still autoloaded
``stateMachineState``); otherwise they are ``null``. The order's customer (``orderCustomer``, a
one-to-one association) is autoloaded, as in both versions. Filters see the whole stored order,
loaded or not. To-many associations (``lineItems``) come back in a shuffled order, fixed per
order, unless the association is sorted in the criteria
(``"associations": {"lineItems": {"sort": [{"field": "position"}]}}``): the database promises
no order either. Entries stored as raw text (verbatim) are put into the answer as they are.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import zlib
from collections.abc import Mapping
from typing import Any

from integration_project.sandbox.shop_criteria import Criteria, sort_key
from integration_project.shopware.models import SortField

#: Key that marks a search stand-in for a verbatim entry
#: (:meth:`~integration_project.sandbox.shop_orders.ShopOrders.add_verbatim`), and the prefix
#: of its placeholder in an answer (no JSON text of a real order holds a NUL).
VERBATIM_KEY = "\x00verbatim"
_VERBATIM_MARK = "\x00verbatim:"

#: Order fields that Shopware only loads when the criteria ask for the association, nested the
#: same way (e.g. ``billingAddress.country``). Everything else in a stored order is always sent,
#: ``orderCustomer`` included: ``OneToOneAssociationField`` autoloads unless told otherwise.
LOADABLE_ASSOCIATIONS: dict[str, dict[str, Any]] = {
    "stateMachineState": {},
    "lineItems": {},
    "currency": {},
    "billingAddress": {"country": {}},
    "deliveries": {"shippingOrderAddress": {"country": {}}},
}


def pack(order: dict[str, Any]) -> bytes:
    """An order as compact as the search can still read it: zlib-compressed JSON."""
    return zlib.compress(json.dumps(order, separators=(",", ":")).encode("utf-8"), 1)


def _unpack(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob))


#: A match: a stored order (or verbatim stand-in) itself, or the index of a packed order.
Match = dict[str, Any] | int


class MatchCache:
    """Sorted matches of the last few searches over bulk orders, per criteria and version.

    Computed on page 1 (and whenever an order was added since), reused for later pages of the
    same filter/sort/ids: paging a day costs one pass over the orders, not one a page.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._entries: dict[str, tuple[int, list[Match]]] = {}
        self._lock = threading.Lock()

    def matches(
        self,
        raw: bytes,
        criteria: Criteria,
        orders: list[dict[str, Any]],
        packed: list[bytes],
        version: int,
    ) -> list[Match]:
        body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        key = json.dumps([body.get(k) for k in ("filter", "sort", "ids")], sort_keys=True)
        with self._lock:
            hit = self._entries.get(key)
        if criteria.page > 1 and hit is not None and hit[0] == version:
            return hit[1]
        entries = _match_all(criteria, orders, packed)
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (version, entries)
        return entries


def _match_all(
    criteria: Criteria, orders: list[dict[str, Any]], packed: list[bytes]
) -> list[Match]:
    """Matching orders, sorted: a stored order itself, or the index of a packed one."""
    wanted = set(criteria.ids) if criteria.ids is not None else None
    sort_keys = [sort_key(s.field) for s in criteria.sort]
    rows: list[tuple[list[Any], Match]] = []
    # One order decoded at a time: the packed ones never all sit in memory as dicts.
    stored = ((o, o) for o in orders)
    bulk = ((_unpack(b), i) for i, b in enumerate(packed))
    for order, ref in itertools.chain(stored, bulk):
        if wanted is not None and order.get("id") not in wanted:
            continue
        if all(f(order) for f in criteria.filters):
            rows.append(([k(order) for k in sort_keys], ref))
    for n in reversed(range(len(sort_keys))):
        rows.sort(key=lambda row: row[0][n], reverse=criteria.sort[n].order == "DESC")
    return [ref for _, ref in rows]


def find_page(
    criteria: Criteria,
    raw: bytes,
    orders: list[dict[str, Any]],
    packed: list[bytes],
    version: int,
    cache: MatchCache,
) -> tuple[int, list[dict[str, Any]]]:
    """(how many orders match, the requested page of them). ``orders``: stored orders and
    verbatim stand-ins; ``packed``: bulk orders (searched through ``cache``)."""
    offset = (criteria.page - 1) * criteria.limit
    if packed:
        entries = cache.matches(raw, criteria, orders, packed, version)
        page = [
            e if isinstance(e, dict) else _unpack(packed[e])
            for e in entries[offset : offset + criteria.limit]
        ]
        return len(entries), page
    if criteria.ids is not None:
        wanted = set(criteria.ids)
        orders = [o for o in orders if o.get("id") in wanted]
    matched = [o for o in orders if all(f(o) for f in criteria.filters)]
    for sort in reversed(criteria.sort):
        matched.sort(key=sort_key(sort.field), reverse=sort.order == "DESC")
    return len(matched), matched[offset : offset + criteria.limit]


def search_body(criteria: Criteria, matched: int, page: list[dict[str, Any]]) -> dict[str, Any]:
    """The search answer: ``total`` per ``total-count-mode``, the page's orders with only the
    associations asked for (a verbatim entry as its placeholder, see :func:`with_verbatim`)."""
    offset = (criteria.page - 1) * criteria.limit
    if criteria.total_count_mode == "exact":
        total = matched
    elif criteria.total_count_mode == "next-pages":
        # Shopware only looks a few pages ahead in this mode.
        total = offset + min(matched - offset, criteria.limit * 5 + 1)
    else:  # "none": Shopware reports the size of the page
        total = len(page)
    data = [
        _VERBATIM_MARK + o[VERBATIM_KEY]
        if VERBATIM_KEY in o
        else _project(
            o,
            LOADABLE_ASSOCIATIONS,
            criteria.associations,
            criteria.association_sorts,
            seed=str(o.get("id")),
        )
        for o in page
    ]
    return {"total": max(total, 0), "data": data, "aggregations": []}


def has_verbatim(body: dict[str, Any]) -> bool:
    return any(isinstance(o, str) for o in body["data"])


def with_verbatim(body: dict[str, Any], texts: Mapping[str, str]) -> bytes:
    """The answer as JSON, each verbatim entry put in as its raw text (``texts``: by key)."""
    text = json.dumps(body, ensure_ascii=False)
    for entry in body["data"]:
        if isinstance(entry, str):
            text = text.replace(json.dumps(entry), texts[entry[len(_VERBATIM_MARK) :]])
    return text.encode("utf-8", "surrogatepass")


def _project(
    entity: dict[str, Any],
    loadable: dict[str, Any],
    wanted: dict[str, Any],
    sorts: dict[str, list[SortField]] | None = None,
    *,
    seed: str,
    prefix: str = "",
) -> Any:
    """``entity`` with every association that was not asked for set to ``null``, and each
    loaded to-many association in the order of its sort, or else shuffled (fixed per ``seed``)."""
    sorts = sorts or {}
    out = dict(entity)
    for name, sub in loadable.items():
        value = out.get(name)
        path = f"{prefix}{name}"
        if name not in wanted:
            out[name] = None
        elif isinstance(value, list):
            items = [
                _project(v, sub, wanted[name], sorts, seed=seed, prefix=f"{path}.")
                for v in value
                if isinstance(v, dict)
            ]
            out[name] = _arrange(items, sorts.get(path, []), f"{seed}:{path}")
        elif isinstance(value, dict):
            out[name] = _project(value, sub, wanted[name], sorts, seed=seed, prefix=f"{path}.")
    return out


def _arrange(items: list[Any], sort: list[SortField], seed: str) -> list[Any]:
    """A to-many association as the database returns it: in no promised order (shuffled with
    ``seed``, never the stored order when there are two or more), then stably sorted by
    ``sort`` if the criteria gave one (ties keep the shuffled order, as in MySQL)."""
    if len(items) > 1:
        shuffled = list(items)
        random.Random(seed).shuffle(shuffled)
        if all(a is b for a, b in zip(shuffled, items, strict=True)):
            shuffled = shuffled[1:] + shuffled[:1]
        items = shuffled
    for by in reversed(sort):
        items.sort(key=sort_key(by.field), reverse=by.order == "DESC")
    return items
