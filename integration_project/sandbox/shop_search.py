"""The sandbox shop's order search: matching, sorting, paging and the shape of the answer.

Association fields (order state, line items, currency, addresses, deliveries and their
shipping method, transactions and their payment method) are only filled
when the criteria ask for them, as Shopware 6.6 does (6.5 still autoloaded
``stateMachineState``); otherwise they are ``null``. The order's customer (``orderCustomer``, a
one-to-one association) is autoloaded, as in both versions. Filters see the whole stored order,
loaded or not. To-many associations (``lineItems``) come back in a shuffled order, fixed per
order, unless the association is sorted in the criteria
(``"associations": {"lineItems": {"sort": [{"field": "position"}]}}``): the database promises
no order either. Entries stored as raw text (verbatim) are put into the answer as they are.

Bulk orders (:class:`~integration_project.sandbox.shop_orders.BulkSegment`, up to millions)
are found two ways. Criteria that are only range filters on ``createdAt`` and/or
``autoIncrement``, sorted by ``createdAt`` + ``id`` or by ``autoIncrement`` (page numbers or
keyset paging, as the route's client sends) are answered from an index: bisection over the
bulk orders, which rise in both, merged with the stored orders that match
(:func:`_indexed_page`). Any other criteria scan every order once and keep the sorted matches
for the following pages (:class:`MatchCache`). An answer to criteria with exactly the route's
associations (:data:`~integration_project.shopware.models.ORDER_ASSOCIATIONS`) is spliced from
each entry's ready JSON text (a bulk order's rendered from its template, never a dict);
other answers are encoded from dicts. Both ways give the same bytes
(``SandboxShop.fast_search = False`` takes the general way; tests compare the two).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import random
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from integration_project.sandbox.shop_criteria import Criteria, parse_criteria, sort_key
from integration_project.shopware.models import ORDER_ASSOCIATIONS, SortField, format_shop_datetime

if TYPE_CHECKING:
    from integration_project.sandbox.shop_orders import BulkOrders

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
    "deliveries": {"shippingOrderAddress": {"country": {}}, "shippingMethod": {}},
    "transactions": {"paymentMethod": {}},
}


@functools.cache
def _route_projection() -> tuple[dict[str, Any], dict[str, list[SortField]]]:
    """The association tree and sorts of the route's client (:data:`ORDER_ASSOCIATIONS`)."""
    criteria = parse_criteria(json.dumps({"associations": ORDER_ASSOCIATIONS}).encode())
    return criteria.associations, criteria.association_sorts


def route_answer_text(order: dict[str, Any]) -> str:
    """``order`` as one entry of an answer to criteria with the route's associations."""
    tree, sorts = _route_projection()
    projected = _project(order, LOADABLE_ASSOCIATIONS, tree, sorts, seed=str(order.get("id")))
    return json.dumps(projected, ensure_ascii=False)


def _asks_route_associations(criteria: Criteria) -> bool:
    return (criteria.associations, criteria.association_sorts) == _route_projection()


#: A match: a stored order (or verbatim stand-in) itself, or a bulk order's place in
#: :class:`~integration_project.sandbox.shop_orders.BulkOrders`.
Match = dict[str, Any] | int


class MatchCache:
    """Sorted matches of the last few searches over bulk orders, per criteria and version.

    Computed on page 1 (and whenever an order was added since), reused for later pages of the
    same filter/sort/ids: paging costs one pass over the orders, not one a page. Only for
    criteria the bulk index cannot answer (:func:`find_page`).
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
        bulk: BulkOrders,
        version: int,
    ) -> list[Match]:
        body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        key = json.dumps([body.get(k) for k in ("filter", "sort", "ids")], sort_keys=True)
        with self._lock:
            hit = self._entries.get(key)
        if criteria.page > 1 and hit is not None and hit[0] == version:
            return hit[1]
        entries = _match_all(criteria, orders, bulk)
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (version, entries)
        return entries


def _match_all(criteria: Criteria, orders: list[dict[str, Any]], bulk: BulkOrders) -> list[Match]:
    """Matching orders, sorted: a stored order itself, or the place of a bulk one."""
    wanted = set(criteria.ids) if criteria.ids is not None else None
    sort_keys = [sort_key(s.field) for s in criteria.sort]
    rows: list[tuple[list[Any], Match]] = []
    # One bulk order made at a time: they never all sit in memory as dicts.
    stored = ((o, o) for o in orders)
    derived = ((bulk.order(g), g) for g in range(len(bulk)))
    for order, ref in itertools.chain(stored, derived):
        if wanted is not None and order.get("id") not in wanted:
            continue
        if all(f(order) for f in criteria.filters):
            rows.append(([k(order) for k in sort_keys], ref))
    for n in reversed(range(len(sort_keys))):
        rows.sort(key=lambda row: row[0][n], reverse=criteria.sort[n].order == "DESC")
    return [ref for _, ref in rows]


def _stored_matches(criteria: Criteria, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored orders (and verbatim stand-ins) that match, sorted."""
    if criteria.ids is not None:
        wanted = set(criteria.ids)
        orders = [o for o in orders if o.get("id") in wanted]
    matched = [o for o in orders if all(f(o) for f in criteria.filters)]
    for sort in reversed(criteria.sort):
        matched.sort(key=sort_key(sort.field), reverse=sort.order == "DESC")
    return matched


def find_page(
    criteria: Criteria,
    raw: bytes,
    orders: list[dict[str, Any]],
    bulk: BulkOrders,
    version: int,
    cache: MatchCache,
    *,
    indexed: bool = True,
) -> tuple[int, list[Match]]:
    """(how many orders match, the requested page of them). ``orders``: stored orders and
    verbatim stand-ins; ``bulk``: bulk orders, answered from their index when the criteria
    allow it (:func:`_indexed_page`; ``indexed`` False = never), else through ``cache``."""
    offset = (criteria.page - 1) * criteria.limit
    if len(bulk):
        answered = _indexed_page(criteria, orders, bulk) if indexed else None
        if answered is not None:
            return answered
        entries = cache.matches(raw, criteria, orders, bulk, version)
        return len(entries), entries[offset : offset + criteria.limit]
    matched = _stored_matches(criteria, orders)
    return len(matched), matched[offset : offset + criteria.limit]


def _total(criteria: Criteria, matched: int, page_size: int) -> int:
    """``total`` per ``total-count-mode``."""
    offset = (criteria.page - 1) * criteria.limit
    if criteria.total_count_mode == "exact":
        total = matched
    elif criteria.total_count_mode == "next-pages":
        # Shopware only looks a few pages ahead in this mode.
        total = offset + min(matched - offset, criteria.limit * 5 + 1)
    else:  # "none": Shopware reports the size of the page
        total = page_size
    return max(total, 0)


def search_body(criteria: Criteria, matched: int, page: list[dict[str, Any]]) -> dict[str, Any]:
    """The search answer: ``total`` per ``total-count-mode``, the page's orders with only the
    associations asked for (a verbatim entry as its placeholder, see :func:`with_verbatim`)."""
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
    return {"total": _total(criteria, matched, len(page)), "data": data, "aggregations": []}


def _entry_bytes(entry: Match, bulk: BulkOrders, texts: Mapping[str, str], errors: str) -> bytes:
    """One entry of an answer with the route's associations, as UTF-8."""
    if isinstance(entry, int):
        return bulk.answer(entry)
    text = texts[entry[VERBATIM_KEY]] if VERBATIM_KEY in entry else route_answer_text(entry)
    return text.encode("utf-8", errors)


def answer_bytes(
    criteria: Criteria,
    matched: int,
    page: list[Match],
    bulk: BulkOrders,
    texts: Mapping[str, str],
    *,
    splice: bool = True,
) -> bytes:
    """The answer's JSON. For the route's associations (and ``splice``) each entry's text is
    joined into the envelope as is (a bulk order's rendered from its template, no dict made);
    otherwise :func:`search_body` is encoded. Both give the same bytes."""
    if splice and _asks_route_associations(criteria):
        # As :func:`with_verbatim`: with a verbatim entry, the whole answer passes surrogates.
        raw = any(isinstance(e, dict) and VERBATIM_KEY in e for e in page)
        errors = "surrogatepass" if raw else "strict"
        parts = [_entry_bytes(e, bulk, texts, errors) for e in page]
        total = _total(criteria, matched, len(page))
        return b'{"total": %d, "data": [%s], "aggregations": []}' % (total, b", ".join(parts))
    orders = [bulk.order(e) if isinstance(e, int) else e for e in page]
    body = search_body(criteria, matched, orders)
    if has_verbatim(body):
        return with_verbatim(body, texts)
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


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


# --- The bulk index ----------------------------------------------------------------------------

#: Sorts the bulk index answers, by (field, order) pairs: bulk orders are stored by createdAt
#: (ids break no ties when each has its own millisecond) and autoIncrement, both rising.
_INDEX_SORTS = {
    (("createdAt", "ASC"), ("id", "ASC")): "createdAt",
    (("autoIncrement", "ASC"),): "autoIncrement",
}


class _Run:
    """The bulk orders a search selects, in sort order: spans ``[lo, hi)`` of places in
    :class:`BulkOrders`, each span's keys below the next's."""

    def __init__(self, spans: list[tuple[int, int]], key: Callable[[int], Any]) -> None:
        self.spans = spans
        self.key = key
        self.starts = list(itertools.accumulate((hi - lo for lo, hi in spans), initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    def at(self, v: int) -> int:
        """The place of the ``v``-th bulk order of the run."""
        k = bisect.bisect_right(self.starts, v) - 1
        return self.spans[k][0] + v - self.starts[k]

    def rank(self, key: Any) -> int:
        """How many orders of the run sort before one with ``key`` (ties: none)."""
        before = 0
        for lo, hi in self.spans:
            at = bisect.bisect_left(range(hi), key, lo, hi, key=self.key)
            before += at - lo
            if at < hi:
                break
        return before


def _bulk_run(criteria: Criteria, kind: str, bulk: BulkOrders) -> _Run | None:
    """The bulk orders inside ``criteria.ranges``, or None if the index cannot give them in
    ``kind``'s order (a segment's orders share milliseconds, or segments overlap in time)."""
    assert criteria.ranges is not None
    keys = [sort_key(s.field) for s in criteria.sort]

    def key(g: int) -> tuple[Any, ...]:
        segment, i = bulk.locate(g)
        stub = {
            "createdAt": format_shop_datetime(segment.created(i)),
            "id": segment.order_id(i) if kind == "createdAt" else None,
            "autoIncrement": segment.first_auto + i,
        }
        return tuple(k(stub) for k in keys)

    spans = []
    for base, segment in zip(bulk.bases, bulk.segments, strict=False):
        if kind == "createdAt" and not segment.strict:
            return None
        lo, hi = 0, segment.n
        for field, bounds in criteria.ranges:
            lo, hi = segment.narrow(field, bounds, lo, hi)
        if lo < hi:
            if spans and not key(spans[-1][1] - 1) < key(base + lo):
                return None
            spans.append((base + lo, base + hi))
    return _Run(spans, key)


def _indexed_page(
    criteria: Criteria, orders: list[dict[str, Any]], bulk: BulkOrders
) -> tuple[int, list[Match]] | None:
    """The page from the bulk index merged with the stored orders that match, as the general
    path would give it; None if the criteria are not only ranges on indexed fields with an
    indexed sort. A stored order goes before a bulk order with the same key (the general
    path's stable sort sees stored orders first)."""
    sort = tuple((s.field, s.order) for s in criteria.sort)
    kind = _INDEX_SORTS.get(sort)
    if criteria.ranges is None or criteria.ids is not None or kind is None:
        return None
    run = _bulk_run(criteria, kind, bulk)
    if run is None:
        return None
    stored = _stored_matches(criteria, orders)
    keys = [sort_key(s.field) for s in criteria.sort]

    def place(j: int) -> int:  # where stored match j lands among all matches
        return j + run.rank(tuple(k(stored[j]) for k in keys))

    total = len(stored) + len(run)
    offset = (criteria.page - 1) * criteria.limit
    j = bisect.bisect_left(range(len(stored)), offset, key=place)
    upcoming = place(j) if j < len(stored) else total
    page: list[Match] = []
    for at in range(offset, min(offset + criteria.limit, total)):
        if at == upcoming:
            page.append(stored[j])
            j += 1
            upcoming = place(j) if j < len(stored) else total
        else:
            page.append(run.at(at - j))
    return total, page
