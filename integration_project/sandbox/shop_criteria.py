"""Shopware ``Criteria`` as the sandbox shop's order search reads them.

:func:`parse_criteria` checks a search body the way Shopware does (``page``/``limit``,
``total-count-mode`` (names or the legacy integers), ``filter`` (``range``, ``equals``,
``equalsAny``; on any dotted field), ``sort``, ``ids`` and ``associations``) and compiles its
filters into predicates over stored orders; :func:`sort_key` orders them as MySQL would (NULLs
first). A range filter on a date compares its bound *as text* with the stored value in
Shopware's storage format (UTC ``2026-11-22 06:15:00.000``), as the database does: a bound sent
in another form (``T``, an offset) selects the wrong orders. Integer columns
(:data:`INTEGER_FIELDS`: ``autoIncrement``) compare as integers, and take a bound sent as a
number or as its digits (``12345`` or ``"12345"``), as MySQL compares an INT with either.

Criteria whose filters are all ranges on :data:`INDEXED_FIELDS` keep those ranges in
:attr:`Criteria.ranges`, so the search can answer them from the bulk orders' index instead of
a scan.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from integration_project.shopware.models import (
    RangeParameters,
    SortField,
    format_storage_datetime,
)

DATETIME_FIELDS = frozenset({"createdAt", "updatedAt", "orderDateTime"})
#: Integer columns: compared and sorted as integers (Shopware's ``AutoIncrementField`` is one).
INTEGER_FIELDS = frozenset({"autoIncrement"})
#: Order fields the bulk orders are indexed on (both rise with the order's place in storage).
INDEXED_FIELDS = frozenset({"createdAt", "autoIncrement"})
#: Shopware's ``total-count-mode``: names, and the integers older clients send.
TOTAL_COUNT_MODES = {"none": "none", "exact": "exact", "next-pages": "next-pages"} | {
    "0": "none", "1": "exact", "2": "next-pages"
}  # fmt: skip
_RANGE_OPERATORS = frozenset(RangeParameters.model_fields)


class BadCriteria(ValueError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class Criteria:
    page: int
    limit: int
    total_count_mode: str
    filters: list[Callable[[dict[str, Any]], bool]]
    sort: list[SortField]
    associations: dict[str, Any]
    ids: list[str] | None
    #: Sorts of to-many associations, by dotted path (``"lineItems"``).
    association_sorts: dict[str, list[SortField]]
    #: (field, bounds) of every filter when all are ranges on :data:`INDEXED_FIELDS` (bounds as
    #: the predicates compare them: storage text for dates, numbers for integers); else None.
    ranges: list[tuple[str, dict[str, Any]]] | None = None


def parse_criteria(raw: bytes, max_limit: int = 500, default_limit: int = 25) -> Criteria:
    """Parse and check a ``Criteria`` body; :class:`BadCriteria` for anything Shopware rejects."""
    try:
        body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except ValueError as exc:
        raise BadCriteria("FRAMEWORK__INVALID_REQUEST_BODY", f"Invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadCriteria("FRAMEWORK__INVALID_CRITERIA", "The criteria must be a JSON object.")
    page = body.get("page", 1)
    if not _is_int(page) or page < 1:
        detail = "The page parameter must be a positive integer greater or equals than 1."
        raise BadCriteria("FRAMEWORK__INVALID_PAGE_QUERY", detail)
    limit = body.get("limit", default_limit)
    if not _is_int(limit) or not 1 <= limit <= max_limit:
        detail = f"The limit parameter must be an integer between 1 and {max_limit}."
        raise BadCriteria("FRAMEWORK__INVALID_LIMIT_QUERY", detail)
    mode = TOTAL_COUNT_MODES.get(str(body.get("total-count-mode", "none")))
    if mode is None:
        detail = "total-count-mode must be one of none, exact, next-pages (or 0, 1, 2)."
        raise BadCriteria("FRAMEWORK__INVALID_TOTAL_COUNT_MODE", detail)
    filters = body.get("filter", [])
    if not isinstance(filters, list):
        raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", "filter must be a list.")
    sort = _parse_sort(body.get("sort", []))
    ids = body.get("ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise BadCriteria("FRAMEWORK__INVALID_CRITERIA", "ids must be a list of strings.")
    association_sorts: dict[str, list[SortField]] = {}
    return Criteria(
        page=page,
        limit=limit,
        total_count_mode=mode,
        filters=[_compile_filter(f) for f in filters],
        sort=sort,
        associations=_association_tree(body.get("associations"), sorts=association_sorts),
        ids=ids,
        association_sorts=association_sorts,
        ranges=_index_ranges(filters),
    )


def _parse_sort(sorts: Any) -> list[SortField]:
    if not isinstance(sorts, list):
        raise BadCriteria("FRAMEWORK__INVALID_SORT_QUERY", "sort must be a list.")
    try:
        return [
            SortField.model_validate({**s, "order": str(s.get("order", "ASC")).upper()})
            for s in sorts
        ]
    except (ValidationError, TypeError, AttributeError) as exc:
        detail = "Each sort needs a field and an order of ASC or DESC."
        raise BadCriteria("FRAMEWORK__INVALID_SORT_QUERY", detail) from exc


def _compile_filter(raw: Any) -> Callable[[dict[str, Any]], bool]:
    if not isinstance(raw, dict) or not isinstance(raw.get("field"), str) or not raw["field"]:
        raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", "A filter needs a type and a field.")
    kind, field = raw.get("type"), raw["field"].removeprefix("order.")
    if kind == "range":
        params = raw.get("parameters")
        if not isinstance(params, dict) or not params or set(params) - _RANGE_OPERATORS:
            detail = f"A range filter needs parameters among {sorted(_RANGE_OPERATORS)}."
            raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail)
        bounds = _range_bounds(field, params)
        if field.rsplit(".", 1)[-1] in DATETIME_FIELDS:
            # The database compares the bound as sent with the stored text (storage format).
            return lambda order: any(_in_range(v, bounds) for v in _stored_dates(order, field))
        return lambda order: any(_in_range(v, bounds) for v in _values(order, field, coerce=True))
    if kind == "equals":
        if "value" not in raw:
            raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", "An equals filter needs a value.")
        return lambda order: any(_same(v, raw["value"]) for v in _values(order, field) or [None])
    if kind == "equalsAny":
        wanted = raw.get("value")
        if isinstance(wanted, str):
            wanted = wanted.split("|")
        if not isinstance(wanted, list):
            detail = "An equalsAny filter needs a list value."
            raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail)
        return lambda order: any(_same(v, w) for v in _values(order, field) for w in wanted)
    detail = f"Filter type {kind!r} is not supported (the sandbox knows range, equals, equalsAny)."
    raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail)


def _range_bounds(field: str, params: dict[str, Any]) -> dict[str, Any]:
    """A range filter's bounds as its predicate compares them: the text as sent for a date
    (checked to be one), a number for an integer field, else :func:`_comparable`."""
    if field.rsplit(".", 1)[-1] in DATETIME_FIELDS:
        return {op: _date_bound(field, value) for op, value in params.items()}
    return {op: _comparable(field, value, strict=True) for op, value in params.items()}


def _index_ranges(filters: list[Any]) -> list[tuple[str, dict[str, Any]]] | None:
    """(field, bounds) per filter if every filter is a range on :data:`INDEXED_FIELDS`
    (filters already checked by :func:`_compile_filter`), else None."""
    ranges = []
    for raw in filters:
        field = raw["field"].removeprefix("order.")
        if raw.get("type") != "range" or field not in INDEXED_FIELDS:
            return None
        ranges.append((field, _range_bounds(field, raw["parameters"])))
    return ranges


def _association_tree(
    raw: Any, *, sorts: dict[str, list[SortField]] | None = None, prefix: str = ""
) -> dict[str, Any]:
    """``{"a": {"associations": {"b": {}}}, "c.d": {}}`` -> ``{"a": {"b": {}}, "c": {"d": {}}}``.

    An association's own ``sort`` goes into ``sorts`` under its dotted path (``"a.b"``).
    """
    if raw is None or raw == []:  # PHP clients send an empty list for an empty object
        return {}
    if not isinstance(raw, dict):
        raise BadCriteria("FRAMEWORK__INVALID_CRITERIA", "associations must be an object.")
    tree: dict[str, Any] = {}
    for key, sub in raw.items():
        if sub == []:
            sub = {}
        if not isinstance(sub, dict):
            detail = f"association {key!r} must be a criteria object."
            raise BadCriteria("FRAMEWORK__INVALID_CRITERIA", detail)
        path = f"{prefix}{key}"
        nested = _association_tree(sub.get("associations"), sorts=sorts, prefix=f"{path}.")
        head, _, rest = key.partition(".")
        if rest:
            nested = _merge(nested, _association_tree({rest: {}}))
        if sorts is not None and sub.get("sort"):
            sorts[path] = _parse_sort(sub["sort"])
        tree[head] = _merge(tree.get(head, {}), nested)
    return tree


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    merged = dict(a)
    for key, value in b.items():
        merged[key] = _merge(merged.get(key, {}), value)
    return merged


def _values(entity: Any, field: str, *, coerce: bool = False) -> list[Any]:
    """Every value at a dotted path (to-many associations fan out), ``null`` left out."""
    current = [entity]
    for part in field.split("."):
        following = []
        for item in current:
            value = item.get(part) if isinstance(item, dict) else None
            following.extend(value if isinstance(value, list) else [value])
        current = following
    found = [v for v in current if v is not None]
    if coerce:
        return [c for v in found if (c := _comparable(field, v, strict=False)) is not None]
    return found


def _date_bound(field: str, value: Any) -> str:
    """A range bound on a date, kept as the text it was sent as (checked to be a date)."""
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        detail = (
            f"{value!r} is not a date for {field}: send Shopware's storage format, UTC "
            "(2026-11-22 06:15:00.000); ISO 8601 parses but compares as text."
        )
        raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail) from None
    return value


def _stored_dates(order: dict[str, Any], field: str) -> list[str]:
    """Every date at ``field`` as the database holds it: UTC, storage format, as text."""
    stored = []
    for value in _values(order, field):
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            continue
        utc = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        stored.append(format_storage_datetime(utc))
    return stored


def _comparable(field: str, value: Any, *, strict: bool) -> Any:
    """Dates compare as datetimes, numbers as floats; ``strict`` = raise on a bad bound."""
    if field.rsplit(".", 1)[-1] in DATETIME_FIELDS:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            if strict:
                detail = f"{value!r} is not an ISO 8601 date for {field}."
                raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail) from None
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if field.rsplit(".", 1)[-1] in INTEGER_FIELDS:
        number = _number(value)
        if number is None and strict:
            detail = f"{value!r} is not a number for {field} (an integer column)."
            raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail)
        return number
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if strict and not isinstance(value, str):
        raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", f"bad range bound {value!r}")
    return value


def _number(value: Any) -> int | float | None:
    """``value`` as a finite number for an integer column (ints stay ints, digits in a string
    are read), or None: what MySQL would compare an INT column with."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _in_range(value: Any, bounds: dict[str, Any]) -> bool:
    try:
        return all(
            {"gt": value > b, "gte": value >= b, "lt": value < b, "lte": value <= b}[op]
            for op, b in bounds.items()
        )
    except TypeError:  # e.g. a number against a string bound
        return False


def _same(value: Any, wanted: Any) -> bool:
    if value == wanted:
        return True
    return value is not None and wanted is not None and str(value) == str(wanted)


def sort_key(field: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    """A sort key on ``field`` as MySQL orders: NULLs first (ascending), then dates and
    numbers by value, then text."""

    def key(order: dict[str, Any]) -> tuple[int, Any]:
        values = _values(order, field, coerce=True)
        if not values:
            return (0, 0)  # NULLs first when ascending, like MySQL
        value = values[0]
        if isinstance(value, datetime):
            return (1, value.timestamp())
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (1, value)
        return (2, str(value))

    return key


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
