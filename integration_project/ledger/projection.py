"""Staged orders as the mapping reads them, cut down in SQL (DuckDB's JSON reader, not Python's).

A staged payload is ~8 KB of Shopware JSON of which the mapping reads about 1 KB, and reading
all of it into Python dicts costs more than mapping the order. So a :class:`Projector` reads
each batch of payloads once with ``json_transform`` (in C, in a private in-memory DuckDB: the
ledger's file is let go first) and decides per staged order:

* **clean**: the payload has a shape :class:`~integration_project.shopware.models.ShopOrder`
  takes as it is: every field of every order model the type it declares (text or ``null``;
  an object or ``null``; a list), its ``id`` is its staging key and it is no stand-in. The
  check is built from the models themselves (``declared_fields``), so it cannot drift from
  them. It vouches for less than pydantic takes: ``json_transform`` reads a value that is no
  object where an object belongs (``5``, ``[]``) as it reads ``{}`` or an object whose fields
  are all null, so such objects are not vouched for, nor is a list that is missing or null. An
  order it does not vouch for reaches Python whole, where the transforms decide (and
  quarantine) exactly as they always did.
* **outside**: a clean order whose destination (the first delivery's country, else the billing
  country, as ``transforms.destination_country`` picks it) is a plain two-letter code of a known
  country outside the route's: it is ``skipped`` without its payload ever reaching Python.
* **cut**: any other clean order reaches Python as only the fields the mapping reads
  (``transforms.ORDER_FIELDS_READ``); a field that was missing reads ``null`` (the models and
  the transforms take both as None).

Values stay as they were: DuckDB writes a float back in its shortest form (the same Python
float) and an integer too large for 64 bits as its digits. Where a value's type is read from
its text, it is read from its first character: DuckDB writes JSON without whitespace. The
tests in ``test_bad_shapes.py`` hold both paths to the same outcome for every odd shape.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from integration_project.shopware.models import DeclaredField, ShopOrder, declared_fields

Path = tuple[str, ...]

#: The private database the projection runs in: one thread (DuckDB's JSON functions keep what
#: they parse, ~50 KB an order, until the end of each chunk of 2,048 rows: one chunk at a time
#: is ~100 MB), and room for that beyond the batch itself.
PROJECTION_CONFIG = {"threads": 1, "memory_limit": "1GB"}


@dataclass(frozen=True)
class Projection:
    """What the mapping asks of the staged payloads.

    ``fields``: the fields it reads (``transforms.ORDER_FIELDS_READ``), or None for whole
    payloads (a route with mapping hooks: they get the order as the shop sent it).
    ``allowed``: the route's countries, or None to skip nothing in SQL (a before_mapping hook
    may change or drop any order first). ``known``: the country codes that are not "unknown".
    """

    fields: Mapping[str, Any] | None
    allowed: frozenset[str] | None
    known: frozenset[str]


@dataclass(frozen=True)
class StagedForMapping:
    """A staged order as the mapping gets it: ``payload`` whole or cut to the fields read, and
    ``outside``: the country when SQL found that it ships outside the route's (its payload then
    holds only ``orderNumber`` and ``createdAt``)."""

    shop_order_id: str
    payload: Any
    outside: str | None = None


class Projector:
    """Runs a :class:`Projection` over batches of staged rows (``shop_order_id`` and
    ``payload`` text, as read from the ledger) in a private in-memory DuckDB of its own, so
    the ledger's file is not held while DuckDB reads the payloads, and its memory limit and
    threads do not bound the JSON reader. Close it when done (or use it in a ``with``)."""

    def __init__(self, projection: Projection | None) -> None:
        self.projection = projection
        self._sql: dict[str, str] = {}
        self._con: duckdb.DuckDBPyConnection | None = None
        if projection is not None and (projection.fields or projection.allowed) is not None:
            for order in ("n", "shop_order_id"):  # the batch's own order, or by shop id
                self._sql[order] = select_sql(projection, "SELECT * FROM staged_batch", order)
            # Its own folder for anything it spills (DuckDB's default is ./.tmp, in whatever
            # folder the run starts in), removed on close.
            self._spill = tempfile.TemporaryDirectory(prefix="projection-")
            config = {**PROJECTION_CONFIG, "temp_directory": self._spill.name}
            self._con = duckdb.connect(":memory:", config=config)

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
            self._spill.cleanup()

    def read(self, batch: pa.Table, *, by_id: bool = False) -> list[StagedForMapping]:
        """The batch's orders as the mapping gets them: in the batch's order, or by shop id."""
        if self._con is None:
            if by_id:
                batch = batch.sort_by("shop_order_id")  # UTF-8 bytes: as DuckDB orders text
            ids, texts = batch.column("shop_order_id").to_pylist(), batch.column("payload")
            pairs = zip(ids, texts.to_pylist(), strict=True)
            return [StagedForMapping(i, json.loads(text)) for i, text in pairs]
        numbered = batch.append_column("n", pa.array(range(batch.num_rows), pa.int64()))
        self._con.register("staged_batch", numbered)
        try:
            rows = self._con.execute(self._sql["shop_order_id" if by_id else "n"]).fetchall()
        finally:
            self._con.unregister("staged_batch")
        return [StagedForMapping(r[0], json.loads(r[1]), r[2]) for r in rows]


def select_sql(projection: Projection, source: str, order_by: str) -> str:
    """``SELECT shop_order_id, payload, outside`` over ``source`` (a query with
    ``shop_order_id`` and ``payload`` columns) ``ORDER BY order_by`` (``source``'s columns); it
    adds no parameters of its own."""
    plan = _Plan(projection.fields or {})
    outside = plan.outside_sql(projection) if projection.allowed is not None else "NULL"
    cut = plan.cut_sql() if projection.fields is not None else "payload::VARCHAR"
    stub = _object_sql({key: plan.leaf((key,)) for key in ("orderNumber", "createdAt")})
    structure = json.dumps(plan.structure).replace("'", "''")  # last: all asked for by now
    return f"""
        SELECT shop_order_id,
               CASE WHEN outside IS NOT NULL THEN {stub}
                    WHEN clean THEN {cut}
                    ELSE payload::VARCHAR END,
               outside
        FROM (
            SELECT *, CASE WHEN clean THEN {outside} END AS outside
            FROM (
                SELECT *, coalesce({plan.clean}, false) AS clean
                FROM (
                    SELECT *, json_transform(payload, '{structure}') AS t
                    FROM ({source}) AS src
                ) AS read
            ) AS checked
        ) AS decided
        ORDER BY {order_by}
    """


def _json_path(path: Path) -> str:
    quoted = ".".join('"' + key.replace('"', '\\"') + '"' for key in path)
    return "'$." + quoted.replace("'", "''") + "'"


def _column(root: str, path: Path) -> str:
    return root + "".join(f'."{key}"' for key in path)


def _whole(model: type[BaseModel]) -> bool:
    """Whether an object of ``model`` inside a list's element is read whole, as JSON text (its
    shape then from its first character and one ``json_type``), not as a struct: an object of
    one declared field (a line's ``payload``) is small, and its one field is often null, which
    a struct could not tell from an object that is no object."""
    return len(declared_fields(model)) == 1


class _Plan:
    """The SQL of one projection: the ``json_transform`` structure (``"JSON"`` leaves, structs,
    lists), the clean check, the cut and the country filter, all over the column ``t``."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = dict(fields)
        self.structure: dict[str, Any] = _structure(self.fields)  # what the cut reads first
        checks = [
            f"json_extract_string({self.leaf(('id',))}, '$') = shop_order_id",
            f"{self.leaf(('_unreadable',))} IS NULL",  # no stand-in (null reads as NULL too)
        ]
        texts: list[str] = []
        for field in declared_fields(ShopOrder):
            if field.name == "id":
                continue  # checked above: it must be the staging key
            if field.kind == "list":
                checks.append(self._list(field))
            elif field.kind == "str" and field.nullable:
                texts.append(self.leaf((field.name,)))
            elif field.kind == "model" and field.model is not None and field.nullable:
                checks.append(self._object_check(field.model, field.name))
            elif field.kind != "any":
                raise TypeError(f"no SQL shape check for ShopOrder.{field.name}")
        firsts = ", ".join(f"left({x}, 1)" for x in texts)
        checks.append(f"regexp_full_match(concat({firsts}), '\"*')")
        self.clean = " AND ".join(checks)

    def leaf(self, path: Path, node: dict[str, Any] | None = None, sql: str = "t") -> str:
        """The JSON text at ``path`` under the struct ``sql`` (read per ``node``; objects
        along the path read as structs), SQL NULL where it is missing or null."""
        node = self.structure if node is None else node
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise TypeError(f"{'.'.join(path)} is read both whole and in parts")
        if node.setdefault(path[-1], "JSON") != "JSON":
            raise TypeError(f"{'.'.join(path)} is read both whole and in parts")
        return _column(sql, path)

    # --- the clean check -----------------------------------------------------------------------

    def _fields_check(self, model: type[BaseModel], node: dict[str, Any], sql: str) -> str:
        """SQL true when each field of the struct ``sql`` (read per ``node``, an object of
        ``model``) is as declared: the text fields (nested objects' too) by one regular
        expression over their first characters (each one a quote, or NULL: missing or
        null), nested objects as :meth:`_object_check` says."""
        texts: list[str] = []
        checks: list[str] = []
        self._collect(model, node, sql, texts, checks)
        if texts:
            firsts = ", ".join(f"left({x}, 1)" for x in texts)
            checks.insert(0, f"regexp_full_match(concat({firsts}), '\"*')")
        return " AND ".join(checks) or "true"

    def _collect(
        self,
        model: type[BaseModel],
        node: dict[str, Any],
        sql: str,
        texts: list[str],
        checks: list[str],
    ) -> None:
        for field in declared_fields(model):
            if field.required or not (field.nullable or field.kind == "any"):
                # a struct reads a missing field, and a null one, as NULL
                raise TypeError(f"no SQL shape check for {model.__name__}.{field.name}")
            if field.kind == "any":
                node.setdefault(field.name, "JSON")  # read (whole unless the cut reads parts)
            elif field.kind == "str":
                texts.append(self.leaf((field.name,), node, sql))
            elif field.kind == "model" and field.model is not None and sql == "t":
                checks.append(self._object_check(field.model, field.name))
            elif field.kind == "model" and field.model is not None and _whole(field.model):
                checks.append(_whole_check(field, self.leaf((field.name,), node, sql)))
            elif field.kind == "model" and field.model is not None:
                inner, column = node.setdefault(field.name, {}), _column(sql, (field.name,))
                self._collect(field.model, inner, column, texts, checks)
                checks.append(f"({column} IS NULL OR {_present(inner, column)})")
            else:
                raise TypeError(f"no SQL shape check for a list inside an object: {field.name}")

    def _object_check(self, model: type[BaseModel], name: str) -> str:
        """An object field of the order: missing or null (a NULL struct), or an object with
        some field set (see the module's docstring) and each field as declared."""
        node, column = self.structure.setdefault(name, {}), _column("t", (name,))
        fields = self._fields_check(model, node, column)
        return f"({column} IS NULL OR ({_present(node, column)} AND {fields}))"

    def _list(self, field: DeclaredField) -> str:
        """A list that is a list (not missing or null: not told from a value that is no list)
        whose every element is an object of the element model (``null`` too when the model
        takes it) with some field set, each field as declared."""
        assert field.model is not None
        element: dict[str, Any] = self.structure.setdefault(field.name, [{}])[0]
        fields = self._fields_check(field.model, element, "e")
        check = f"{_present(element, 'e')} AND {fields}"
        if field.element_nullable:
            check = f"(e IS NULL OR ({check}))"
        column = _column("t", (field.name,))
        every = f"list_bool_and(list_transform({column}, lambda e: {check}))"
        return f"({column} IS NOT NULL AND coalesce({every}, true))"

    # --- the cut -------------------------------------------------------------------------------

    def cut_sql(self) -> str:
        """The order cut to the fields the mapping reads, as JSON text."""
        return self._cut_node(self.structure, "t", self.fields, ShopOrder)

    def _cut_node(
        self, node: dict[str, Any], sql: str, spec: Mapping[str, Any], model: type[BaseModel]
    ) -> str:
        """The struct ``sql`` (read per ``node``, an object of ``model``) cut to ``spec``."""
        by_name = {f.name: f for f in declared_fields(model)}
        values = {}
        for key, sub in spec.items():
            inner, field, column = node.get(key), by_name.get(key), _column(sql, (key,))
            inner_model = field.model if field is not None else None
            if isinstance(sub, Mapping) and isinstance(inner, dict) and inner_model is None:
                # A field typed as anything, read as a struct of the keys the mapping reads
                # (see _structure): an object cut to them, anything else as an object of nulls.
                cut = _object_sql({k: self.leaf((k,), inner, column) for k in sub})
                values[key] = f"CASE WHEN {column} IS NULL THEN NULL ELSE {cut} END"
            elif isinstance(sub, list) and isinstance(inner, list) and inner_model is not None:
                each = self._cut_node(inner[0], "e", sub[0], inner_model)
                each = f"CASE WHEN e IS NULL THEN 'null' ELSE {each} END"
                joined = f"array_to_string(list_transform({column}, lambda e: {each}), ',')"
                values[key] = (
                    f"CASE WHEN {column} IS NULL THEN NULL ELSE '[' || {joined} || ']' END"
                )
            elif isinstance(sub, Mapping) and isinstance(inner, dict) and inner_model is not None:
                cut = self._cut_node(inner, column, sub, inner_model)
                values[key] = f"CASE WHEN {column} IS NULL THEN NULL ELSE {cut} END"
            else:  # whole, or a field typed as anything (an object cut to the spec's keys)
                values[key] = _cut_text(self.leaf((key,), node, sql), sub)
        return _object_sql(values)

    # --- the country filter --------------------------------------------------------------------

    def outside_sql(self, projection: Projection) -> str:
        """The destination country of a clean order when it is a plain known code outside the
        route's, else NULL (the order then goes to Python, which decides as before). A delivery
        whose country is missing, null or ``""`` is passed over, as the transforms do."""
        deliveries = self.structure.get("deliveries")
        if not isinstance(deliveries, list):
            raise TypeError("the deliveries are not read element by element")
        iso = self.leaf(("shippingOrderAddress", "country", "iso"), deliveries[0], "e")
        isos = f'list_transform(t."deliveries", lambda e: {iso})'
        first = f"list_filter({isos}, lambda s: s IS NOT NULL AND s <> '\"\"')[1]"
        chosen = f"coalesce({first}, {self.leaf(('billingAddress', 'country', 'iso'))})"
        country = f"upper(substr({chosen}, 2, 2))"
        return (
            f"CASE WHEN regexp_full_match({chosen}, '\"[A-Za-z]{{2}}\"') "
            f"AND {_one_of(country, projection.known)} "
            f"AND NOT {_one_of(country, projection.allowed or frozenset())} "
            f"THEN {country} END"
        )


def _structure(
    spec: Mapping[str, Any], model: type[BaseModel] = ShopOrder, *, element: bool = False
) -> dict[str, Any]:
    """The ``json_transform`` structure of what the cut reads: ``"JSON"`` for a field read
    whole, a struct for ``{key: ...}`` (an object of a model, or a field typed as anything of
    which the mapping reads only those keys, and only when it is an object: a struct reads
    anything else as nulls, which the mapping reads alike), a list for ``[...]``. An object
    of a list's element that the check reads whole (see :func:`_whole`) is read whole."""
    fields = {f.name: f for f in declared_fields(model)}
    found: dict[str, Any] = {}
    for key, sub in spec.items():
        field = fields.get(key)
        inner = field.model if field is not None else None
        if isinstance(sub, list) and len(sub) == 1 and inner is not None:
            found[key] = [_structure(sub[0], inner, element=True)]
        elif isinstance(sub, Mapping) and inner is not None and not (element and _whole(inner)):
            found[key] = _structure(sub, inner)
        elif isinstance(sub, Mapping) and inner is None:
            found[key] = {k: "JSON" for k in sub}  # anything, of which only these keys count
        else:
            found[key] = "JSON"
    return found


def _present(node: dict[str, Any], sql: str) -> str:
    """SQL true when the struct ``sql`` (read per ``node``) has a field set: some value read
    in it, or in a struct in it, is not NULL."""

    def leaves(inner: dict[str, Any], column: str) -> list[str]:
        found = []
        for key, value in inner.items():
            found += leaves(value, _column(column, (key,))) if isinstance(value, dict) else []
            found += [_column(column, (key,))] if value == "JSON" else []
        return found

    return f"coalesce({', '.join(leaves(node, sql)) or 'NULL'}) IS NOT NULL"


def _whole_check(field: DeclaredField, x: str) -> str:
    """SQL true when the JSON text ``x`` (an object of ``field``'s model read whole; SQL NULL
    where missing or null) is one pydantic takes: its fields' types read with one
    ``json_type`` and matched by one regular expression (quick for DuckDB to plan)."""
    assert field.model is not None
    allowed = [f"{x} IS NULL"]
    inner = declared_fields(field.model)
    if field.php_empty and not any(f.required for f in inner):
        allowed.append(f"{x} = '[]'")
    rules, paths = [], []
    for one in inner:
        if one.kind not in ("str", "any") or one.required:
            raise TypeError(f"no SQL shape check for {field.name}.{one.name}")
        if one.kind == "str":
            paths.append(_json_path((one.name,)))
            rules.append('(?:null|"NULL"|"VARCHAR")' if one.nullable else '"VARCHAR"')
    types_ = f"to_json(json_type({x}, [{', '.join(paths)}]))::VARCHAR"
    pattern = r"\[" + ",".join(rules) + r"\]"
    shape = f"regexp_full_match({types_}, '{pattern}')" if paths else "true"
    allowed.append(f"(starts_with({x}, '{{') AND {shape})")
    return "(" + " OR ".join(allowed) + ")"


def _cut_text(x: str, spec: Any) -> str:
    """The JSON text ``x`` (a value read whole) cut to ``spec``: an object to the keys the spec
    names (``null`` where missing), anything else whole. (A list in ``spec`` is not cut.)"""
    if not isinstance(spec, Mapping):
        return x
    paths: list[Path] = []

    def walk(node: Mapping[str, Any], parent: Path) -> None:
        for key, sub in node.items():
            paths.append((*parent, key))
            if isinstance(sub, Mapping):
                walk(sub, (*parent, key))

    walk(spec, ())
    var = "v_" + "".join(c for c in x if c.isalnum())

    def build(node: Mapping[str, Any], parent: Path) -> str:
        pairs = {}
        for key, sub in node.items():
            value = f"{var}[{paths.index((*parent, key)) + 1}]::VARCHAR"
            if isinstance(sub, Mapping):
                inner = build(sub, (*parent, key))
                value = f"CASE WHEN starts_with({value}, '{{') THEN {inner} ELSE {value} END"
            pairs[key] = value
        return _object_sql(pairs)

    extracted = f"json_extract({x}, [{', '.join(_json_path(p) for p in paths)}])"
    cut = f"list_transform([{extracted}], lambda {var}: {build(spec, ())})[1]"
    return f"CASE WHEN starts_with({x}, '{{') THEN {cut} ELSE {x} END"


def _object_sql(values: Mapping[str, str]) -> str:
    """SQL for the JSON text of an object of ``values`` (SQL expressions of JSON text, NULL
    for ``null``), written out directly: each value is JSON text already, and ``json_object``
    would read every one of them again."""
    parts = []
    for n, (key, value) in enumerate(values.items()):
        text = ("{" if n == 0 else ",") + json.dumps(key) + ":"
        parts.append(f"'{text.replace(chr(39), chr(39) * 2)}' || coalesce({value}, 'null')")
    return "(" + " || ".join(parts or ["'{'"]) + " || '}')"


def _one_of(code: str, codes: frozenset[str]) -> str:
    """SQL true when ``code`` is one of the two-letter ``codes`` (a regular expression: one
    text is quicker for DuckDB to plan than a list of 250)."""
    plain = sorted(c for c in codes if len(c) == 2 and c.isascii() and c.isalpha())
    return f"regexp_full_match({code}, '{'|'.join(plain)}')" if plain else "false"
