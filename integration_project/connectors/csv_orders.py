"""A CSV order file → Shopware-shaped orders, plus a validation report. Pure: bytes in, data out.

The route's mapping (:func:`integration_project.transforms.evaluate_order`) reads orders in
Shopware's wire shape, so a file's orders are written in that shape and mapped like any
other: the same VAT split, the same money check, the same quarantine.

A route declares which of the file's columns hold which of our fields
(:class:`CsvSourceConfig`, ``columns``: canonical field -> header name). The canonical fields:

=====================  ======  ===============================================================
field                  level   meaning
=====================  ======  ===============================================================
order_number *         order   the shop's order number (the ERP's YourRef; groups the rows)
created_at *           order   when the order was placed: ISO 8601 or ``date_format``; a date
                               without offset is in ``timezone``
customer_email *       order   who ordered (finds or creates the ERP account)
customer_first_name    order
customer_last_name     order
company                order   the ERP account is named after it when given
shipping_country *     order   ISO 3166 alpha-2 code of the delivery address
billing_country        order   ISO alpha-2; defaults to shipping_country
street, zip, city      order   the delivery address (the billing address too)
currency               order   ISO 4217 code; EUR when the column is absent or blank
shipping_total         order   shipping costs, priced like unit_price; 0 when absent
order_total            order   what the customer paid, as the file says: when declared it must
                               match the lines plus shipping (plus VAT for net prices)
product_number *       line    the product's number (the ERP item's Code)
product_label          line    the line's description; the product number when blank
quantity *             line    a positive whole number
unit_price *           line    price of one piece: gross (VAT included) unless the route's
                               ``tax_status`` is ``net`` or ``tax-free``; up to 4 decimals
tax_rate (*)           line    VAT rate in percent (``19``, ``5.5``, ``21%``); required unless
                               ``tax_status`` is ``tax-free``
=====================  ======  ===============================================================

``*``: the column must be declared and the value given. One row is one order line; the rows of
an order share its order number and need not be adjacent. Order-level values must agree
across the rows of an order (a row may leave one blank). Taxes follow Shopware's cart: a line's
tax is its total times rate / (100 + rate) for gross prices (rate / 100 for net ones), rounded
half up to the cent, and shipping costs are split over the rates of the goods in proportion to
their prices.

Whatever is wrong with a row quarantines its order, naming the file, the line and the field;
the other orders go through. What is wrong with the file as a whole (not text, not CSV, a
declared column missing from the header, broken quoting) raises :class:`CsvFileError`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from integration_project.settings import ISO_COUNTRIES
from integration_project.shopware.models import format_shop_datetime
from integration_project.transforms import (
    CENT,
    MAX_AMOUNT,
    MAX_QUANTITY,
    MAX_SKU,
    MAX_YOUR_REF,
    UNIT,
)

#: Fields of the whole order: every row of an order repeats them (or leaves them blank).
ORDER_FIELDS = (
    "order_number",
    "created_at",
    "customer_email",
    "customer_first_name",
    "customer_last_name",
    "company",
    "shipping_country",
    "billing_country",
    "street",
    "zip",
    "city",
    "currency",
    "shipping_total",
    "order_total",
)
#: Fields of one order line (one row).
LINE_FIELDS = ("product_number", "product_label", "quantity", "unit_price", "tax_rate")
CANONICAL_FIELDS = ORDER_FIELDS + LINE_FIELDS
#: Columns every route declares (``tax_rate`` too unless its prices are tax-free).
REQUIRED_FIELDS = (
    "order_number",
    "created_at",
    "customer_email",
    "shipping_country",
    "product_number",
    "quantity",
    "unit_price",
)
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
HUNDRED = Decimal(100)
MAX_TEXT = 255
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_NUMBER = re.compile(r"^[+-]?\d+(?:([.,])(\d+))?$")
#: Reasons shown in full per quarantined order; the rest are counted.
SHOWN_PROBLEMS = 3


class CsvFileError(ValueError):
    """The file as a whole cannot be read as the route's order file: the caller fails the run
    and moves the file aside. ``kind``: ``empty``, ``encoding``, ``binary``, ``not_csv``,
    ``missing_columns``, ``header`` or ``malformed``."""

    def __init__(self, file_name: str, kind: str, problem: str) -> None:
        super().__init__(f"{file_name}: {problem}")
        self.file_name = file_name
        self.kind = kind


class CsvSourceConfig(BaseModel):
    """What a route says about its order files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Canonical field -> the file's header name (matched trimmed and case-insensitively).
    columns: dict[str, str]
    #: ``,`` ``;`` ``\\t`` ``|`` (or comma, semicolon, tab, pipe); None: detected.
    delimiter: str | None = None
    #: A Python codec name; None: detected (BOM, else UTF-8, else cp1252, else latin-1).
    encoding: str | None = None
    #: A ``strptime`` format for created_at; None: ISO 8601.
    date_format: str | None = None
    #: None: either ``.`` or ``,`` (no thousands separators either way).
    decimal_separator: Literal[".", ","] | None = None
    #: The zone of created_at values without an offset (an IANA name).
    timezone: str = "UTC"
    #: What unit_price and shipping_total are: gross (VAT included), net, or tax-free.
    tax_status: Literal["gross", "net", "tax-free"] = "gross"

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(CANONICAL_FIELDS))
        if unknown:
            raise ValueError(f"unknown fields {unknown}; known: {', '.join(CANONICAL_FIELDS)}")
        missing = [name for name in REQUIRED_FIELDS if name not in columns]
        if missing:
            raise ValueError(f"required fields not declared: {', '.join(missing)}")
        blank = sorted(name for name, header in columns.items() if not header.strip())
        if blank:
            raise ValueError(f"blank header names for {', '.join(blank)}")
        return {name: header.strip() for name, header in columns.items()}

    @field_validator("delimiter")
    @classmethod
    def _known_delimiter(cls, value: str | None) -> str | None:
        names = {name: char for char, name in DELIMITER_NAMES.items()}
        value = names.get(value, value) if value is not None else None
        if value is not None and value not in DELIMITERS:
            raise ValueError(f"delimiter {value!r} is not one of {', '.join(names)}")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        try:
            return codecs.lookup(value).name if value is not None else None
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @model_validator(mode="after")
    def _rates_declared(self) -> CsvSourceConfig:
        if self.tax_status != "tax-free" and "tax_rate" not in self.columns:
            raise ValueError(f"tax_rate must be declared for {self.tax_status} prices")
        return self


@dataclass(frozen=True)
class QuarantinedOrder:
    """An order of the file that is not passed on: ``order_number`` None for a row that names
    none. ``lines``: the file's line numbers of its rows; ``kind``: the first problem's kind."""

    order_number: str | None
    lines: tuple[int, ...]
    reason: str
    kind: str = ""


@dataclass(frozen=True)
class CsvParse:
    """One file read: orders ready to stage, orders held back, and a report for metadata."""

    orders: list[dict[str, Any]]
    quarantined: list[QuarantinedOrder]
    report: dict[str, Any]


def file_sha256(data: bytes) -> str:
    """The file's identity: the same bytes are the same file, whatever its name or date."""
    return hashlib.sha256(data).hexdigest()


# --- bytes -> text -> rows -------------------------------------------------------------------


def decode_file(data: bytes, file_name: str, encoding: str | None = None) -> tuple[str, str]:
    """The file's text and the encoding it was read in: the declared one, else by its byte
    order mark, else UTF-8, else cp1252 (Windows' Western European), else latin-1."""
    if not data.strip():
        raise CsvFileError(file_name, "empty", "the file is empty")
    if encoding is not None:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise CsvFileError(
                file_name, "encoding", f"not {encoding} text: byte {exc.start} cannot be read"
            ) from None
        used = encoding
    elif data.startswith(codecs.BOM_UTF8):
        text, used = data.decode("utf-8-sig", "strict"), "utf-8-sig"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text, used = data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise CsvFileError(file_name, "encoding", "not UTF-16 despite its BOM") from None
    else:
        text, used = _decode_guessing(data)
    text = text.removeprefix("\ufeff")
    _refuse_binary(text, file_name)
    return text, used


def _decode_guessing(data: bytes) -> tuple[str, str]:
    for candidate in ("utf-8", "cp1252"):
        try:
            return data.decode(candidate), candidate
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"  # reads any bytes


def _refuse_binary(text: str, file_name: str) -> None:
    """Text files carry no NUL and hardly a control character; binary files are full of them."""
    if "\x00" in text:
        raise CsvFileError(
            file_name,
            "binary",
            "contains NUL bytes: a binary file, not CSV (or UTF-16 without a byte order "
            "mark: declare its encoding)",
        )
    sample = text[:65536]
    controls = sum(
        1 for c in sample if c not in "\t\r\n" and unicodedata.category(c) in ("Cc", "Cs")
    )
    if controls > max(2, len(sample) // 100):
        raise CsvFileError(
            file_name, "binary", f"{controls} control characters: a binary file, not CSV"
        )


def _first_line(text: str) -> str:
    """The header line: the first line with anything on it."""
    return next((line for line in re.split(r"\r\n|\r|\n", text) if line.strip()), "")


def _sniffed(line: str) -> str | None:
    try:
        return csv.Sniffer().sniff(line, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        return None


def find_header(
    text: str, file_name: str, config: CsvSourceConfig
) -> tuple[str, dict[str, int], int]:
    """The delimiter, each declared field's column index and the header's column count.

    The delimiter is the declared one, else what :class:`csv.Sniffer` makes of the header line,
    checked against the declared header names; when those do not all match, the delimiter
    under which most of them do."""
    line = _first_line(text)
    sniffed = _sniffed(line)
    candidates = [config.delimiter] if config.delimiter else [sniffed, *DELIMITERS]
    best: tuple[int, str, list[str]] | None = None
    for delimiter in dict.fromkeys(c for c in candidates if c):
        cells = next(csv.reader([line], delimiter=delimiter), [])
        names = {cell.strip().casefold() for cell in cells}
        found = sum(1 for header in config.columns.values() if header.casefold() in names)
        if best is None or found > best[0]:
            best = (found, delimiter, cells)
    assert best is not None
    found, delimiter, cells = best
    if found == 0 or len(cells) < 2:
        shown = DELIMITER_NAMES[delimiter]
        raise CsvFileError(
            file_name,
            "not_csv",
            f"no CSV header matching the route's columns: the first line reads as "
            f"{len(cells)} column(s) split by {shown}, none of them one of "
            f"{', '.join(sorted(set(config.columns.values())))}",
        )
    return delimiter, _column_indexes(cells, file_name, config), len(cells)


def _column_indexes(cells: list[str], file_name: str, config: CsvSourceConfig) -> dict[str, int]:
    positions: dict[str, list[int]] = {}
    for index, cell in enumerate(cells):
        positions.setdefault(cell.strip().casefold(), []).append(index)
    missing = sorted({h for h in config.columns.values() if h.casefold() not in positions})
    if missing:
        raise CsvFileError(
            file_name,
            "missing_columns",
            f"the header lacks the declared column(s) {', '.join(map(repr, missing))}",
        )
    twice = sorted({h for h in config.columns.values() if len(positions[h.casefold()]) > 1})
    if twice:
        raise CsvFileError(
            file_name, "header", f"column(s) {', '.join(map(repr, twice))} appear twice"
        )
    return {name: positions[header.casefold()][0] for name, header in config.columns.items()}


def read_rows(text: str, file_name: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """The data rows after the header, with the file line each starts on; blank rows left out.
    Broken quoting (a quote never closed swallows the rest of the file) fails the file: no
    row after it can be trusted to be the row it looks like."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows = []
    end = 0
    header_read = False  # the first row with anything in it (blank lines may come before)
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if header_read:
                rows.append((start, cells))
            header_read = True
    except csv.Error as exc:
        raise CsvFileError(
            file_name, "malformed", f"line {reader.line_num}: broken CSV quoting ({exc})"
        ) from None
    return rows


# --- values ------------------------------------------------------------------------------------


class _Bad(Exception):
    """A value that is not what its field takes; ``kind`` names the rule broken."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class _Context:
    file_name: str
    config: CsvSourceConfig
    zone: tzinfo


def _text(value: str, ctx: _Context, limit: int = MAX_TEXT) -> str:
    if len(value) > limit or not value.isprintable():
        raise _Bad("bad_text", f"not printable text of at most {limit} characters: {value!r:.60}")
    return value


def _decimal(value: str, ctx: _Context, places: Decimal, what: str = "a number") -> Decimal:
    match = _NUMBER.match(value)
    declared = ctx.config.decimal_separator
    if match is None:
        raise _Bad("bad_number", f"expected {what}, got {value!r:.60}")
    if declared is not None and match.group(1) not in (None, declared):
        raise _Bad(
            "bad_number", f"{value!r:.60} does not use the declared decimal separator {declared!r}"
        )
    decimals = match.group(2) or ""
    if len(decimals) > -places.as_tuple().exponent:
        raise _Bad("bad_number", f"{value!r:.60} has more than {len(str(places)) - 2} decimals")
    amount = Decimal(value.replace(",", "."))
    if amount < 0:
        raise _Bad("bad_number", f"negative amount {value!r:.60}")
    if amount >= MAX_AMOUNT:
        raise _Bad("bad_number", f"implausible amount {value!r:.60}")
    return amount.copy_abs().quantize(places)  # -0 is 0


def _quantity(value: str, ctx: _Context) -> int:
    if not re.fullmatch(r"\+?\d{1,9}", value) or not 0 < int(value) <= MAX_QUANTITY:
        raise _Bad("bad_quantity", f"expected a positive whole number, got {value!r:.60}")
    return int(value)


def _rate(value: str, ctx: _Context) -> Decimal:
    rate = _decimal(value.removesuffix("%"), ctx, UNIT, "a VAT rate in percent")
    if rate >= HUNDRED:
        raise _Bad("bad_number", f"implausible VAT rate {value!r:.60}")
    return rate


def _created_at(value: str, ctx: _Context) -> datetime:
    fmt = ctx.config.date_format
    try:
        if fmt is not None:
            moment = datetime.strptime(value, fmt)  # noqa: DTZ007 - the zone is added below
        else:
            moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        wanted = f"a date in the format {fmt!r}" if fmt else "an ISO 8601 date-time"
        raise _Bad("bad_date", f"expected {wanted}, got {value!r:.60}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ctx.zone)
    if not 2000 <= moment.year <= 2100:
        raise _Bad("bad_date", f"implausible date {value!r:.60}")
    return moment.astimezone(UTC)


def _email(value: str, ctx: _Context) -> str:
    if not _EMAIL.match(value) or len(value) > 254:
        raise _Bad("bad_email", f"not an e-mail address: {value!r:.60}")
    return value


def _country(value: str, ctx: _Context) -> str:
    if value.upper() not in ISO_COUNTRIES:
        raise _Bad("bad_country", f"not an ISO 3166 alpha-2 country code: {value!r:.60}")
    return value.upper()


def _currency(value: str, ctx: _Context) -> str:
    if not _CURRENCY.match(value.upper()):
        raise _Bad("bad_currency", f"not an ISO 4217 currency code: {value!r:.60}")
    return value.upper()


def _order_number(value: str, ctx: _Context) -> str:
    return _text(value, ctx, MAX_YOUR_REF)


def _product_number(value: str, ctx: _Context) -> str:
    return _text(value, ctx, MAX_SKU)


def _cents(value: str, ctx: _Context) -> Decimal:
    return _decimal(value, ctx, CENT, "an amount")


def _unit(value: str, ctx: _Context) -> Decimal:
    return _decimal(value, ctx, UNIT, "a price")


_PARSERS: dict[str, Callable[[str, _Context], Any]] = {
    "order_number": _order_number,
    "created_at": _created_at,
    "customer_email": _email,
    "shipping_country": _country,
    "billing_country": _country,
    "currency": _currency,
    "shipping_total": _cents,
    "order_total": _cents,
    "product_number": _product_number,
    "quantity": _quantity,
    "unit_price": _unit,
    "tax_rate": _rate,
}


# --- rows -> orders ----------------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    raw: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    #: (kind, message) of everything wrong with the row.
    problems: list[tuple[str, str]] = field(default_factory=list)
    #: (kind, message) of what is wrong with the row's order, messages naming their lines.
    notes: list[tuple[str, str]] = field(default_factory=list)


def _required_on_line(name: str, ctx: _Context) -> bool:
    if name == "tax_rate":
        return ctx.config.tax_status != "tax-free"
    return name in REQUIRED_FIELDS and name in LINE_FIELDS


def _parse_row(
    line: int, cells: list[str], columns: dict[str, int], width: int, ctx: _Context
) -> _Row:
    raw = {name: cells[i].strip() if i < len(cells) else "" for name, i in columns.items()}
    row = _Row(line, raw)
    if len(cells) != width:
        # Fields shifted by a stray delimiter: no value of the row can be trusted.
        row.problems.append(("field_count", f"{len(cells)} fields, the header has {width}"))
        row.values["order_number"] = raw["order_number"] or None
        return row
    for name, text in raw.items():
        header = ctx.config.columns[name]
        if not text:
            if _required_on_line(name, ctx):
                row.problems.append(("missing", f"{name} ({header!r}) is empty"))
            continue
        try:
            row.values[name] = _PARSERS.get(name, _text)(text, ctx)
        except _Bad as bad:
            row.problems.append((bad.kind, f"{name} ({header!r}): {bad}"))
    return row


def _lines_text(lines: Collection[int]) -> str:
    shown = sorted(lines)
    return f"line {shown[0]}" if len(shown) == 1 else f"lines {', '.join(map(str, shown))}"


def _order_problems(rows: list[_Row], ctx: _Context) -> list[tuple[str, str]]:
    """What is wrong with an order's rows, each message naming its line(s)."""
    problems = [
        (kind, f"line {row.line}: {message}") for row in rows for kind, message in row.problems
    ]
    for name in ORDER_FIELDS:
        if name not in ctx.config.columns:
            continue
        seen: dict[Any, list[_Row]] = {}
        for row in rows:
            if name in row.values:
                seen.setdefault(row.values[name], []).append(row)
        header = ctx.config.columns[name]
        if len(seen) > 1:
            shown = " vs ".join(
                f"{group[0].raw[name]!r:.40} on {_lines_text([r.line for r in group])}"
                for group in seen.values()
            )
            where = _lines_text([r.line for group in seen.values() for r in group])
            message = f"{where}: {name} ({header!r}) differs between rows: {shown}"
            problems.append(("conflict", message))
        elif name in REQUIRED_FIELDS and not any(row.raw[name] for row in rows):
            where = _lines_text([r.line for r in rows])
            problems.append(("missing", f"{where}: {name} ({header!r}) is empty"))
    problems += _repeated_rows(rows, ctx)
    problems += [note for row in rows for note in row.notes]
    return problems


def _repeated_rows(rows: list[_Row], ctx: _Context) -> list[tuple[str, str]]:
    """Rows identical in every declared column: a file exported twice, or pasted into twice;
    Shopware itself books one product once per order, so the copy would be a second charge."""
    first: dict[tuple[str, ...], int] = {}
    problems = []
    for row in rows:
        key = tuple(row.raw[name] for name in ctx.config.columns)
        if key in first:
            problems.append(("duplicate_row", f"line {row.line} repeats line {first[key]} exactly"))
        else:
            first[key] = row.line
    return problems


def _reason(file_name: str, problems: list[tuple[str, str]]) -> str:
    shown = "; ".join(message for _, message in problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return f"{file_name} {shown}" + (f" (and {more} more)" if more > 0 else "")


def parse_order_file(
    data: bytes,
    file_name: str,
    config: CsvSourceConfig,
    known_order_numbers: Collection[str] = frozenset(),
) -> CsvParse:
    """One order file's orders in Shopware's wire shape, its quarantined orders and a report.

    ``known_order_numbers``: numbers the ledger already holds (from earlier files or the shop);
    an order of the file with one of them is quarantined, never passed on twice. Raises
    :class:`CsvFileError` when the file as a whole is not the route's CSV.
    """
    digest = file_sha256(data)
    text, encoding = decode_file(data, file_name, config.encoding)
    delimiter, columns, width = find_header(text, file_name, config)
    ctx = _Context(file_name, config, ZoneInfo(config.timezone))
    rows = [
        _parse_row(line, cells, columns, width, ctx)
        for line, cells in read_rows(text, file_name, delimiter)
    ]
    groups, quarantined = _group(rows, ctx)
    known = {number.strip() for number in known_order_numbers}
    orders = []
    for number, group in groups.items():
        lines = tuple(row.line for row in group)
        if number in known:
            reason = (
                f"{file_name} {_lines_text(lines)}: order number {number!r} is already known "
                "(delivered, or staged from an earlier file)"
            )
            quarantined.append(QuarantinedOrder(number, lines, reason, "known"))
            continue
        problems = _order_problems(group, ctx)
        if not problems:
            problems, order = _build_order(number, group, ctx, digest)
            if order is not None:
                orders.append(order)
                continue
        reason = _reason(file_name, problems)
        quarantined.append(QuarantinedOrder(number, lines, reason, problems[0][0]))
    report = _report(file_name, digest, encoding, delimiter, len(rows), orders, quarantined)
    return CsvParse(orders, quarantined, report)


def _group(rows: list[_Row], ctx: _Context) -> tuple[dict[str, list[_Row]], list[QuarantinedOrder]]:
    """Rows by order number, in the order the numbers first appear. A row without a number is
    quarantined on its own, and it takes the order of the row above it along: exports that
    write the number on an order's first row only would otherwise pass the order on without
    the lines below it."""
    groups: dict[str, list[_Row]] = {}
    orphans: list[QuarantinedOrder] = []
    previous: str | None = None
    header = ctx.config.columns["order_number"]
    for row in rows:
        number = row.values.get("order_number")
        if number is not None:
            groups.setdefault(number, []).append(row)
            previous = number
            continue
        problems = [(kind, f"line {row.line}: {message}") for kind, message in row.problems]
        if not row.raw["order_number"]:
            problems.insert(0, ("missing", f"line {row.line}: order_number ({header!r}) is empty"))
        reason = _reason(ctx.file_name, problems)
        orphans.append(QuarantinedOrder(None, (row.line,), reason, problems[0][0]))
        if previous is not None:
            note = f"line {row.line} after this order's rows names no order: it may be one of them"
            groups[previous][-1].notes.append(("missing", note))
    return groups, orphans


# --- Shopware's wire shape ---------------------------------------------------------------------


def _hex_id(*parts: str) -> str:
    """A stable 32-hex-digit id (Shopware's id format) for the same file and order."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]


def order_id(digest: str, order: QuarantinedOrder | str) -> str:
    """The id an order of the file is staged under (a quarantined one too): the same for the
    same file content and order number, or, for a row that names no order, its line."""
    if isinstance(order, str):
        return _hex_id(digest, order)
    if order.order_number is not None:
        return _hex_id(digest, order.order_number)
    return _hex_id(digest, "line", str(order.lines[0]))


def _tax(price: Decimal, rate: Decimal, tax_status: str) -> Decimal:
    """The VAT in (gross) or on (net) ``price`` at ``rate`` percent, half up to the cent."""
    if tax_status == "gross":
        return (price * rate / (HUNDRED + rate)).quantize(CENT, rounding=ROUND_HALF_UP)
    return (price * rate / HUNDRED).quantize(CENT, rounding=ROUND_HALF_UP)


def _split(amount: Decimal, weights: dict[Decimal, Decimal]) -> list[tuple[Decimal, Decimal]]:
    """``amount`` over the rates in ``weights`` in proportion, the last rate taking the rest
    (Shopware's ``PercentageTaxRuleBuilder``): ``[(rate, part)]`` summing to ``amount``."""
    items = list(weights.items())
    total = sum(weights.values(), Decimal(0))
    if len(items) == 1 or total == 0:
        return [(items[0][0], amount)]
    parts, rest = [], amount
    for rate, weight in items[:-1]:
        part = (amount * weight / total).quantize(CENT, rounding=ROUND_HALF_UP)
        parts.append((rate, part))
        rest -= part
    parts.append((items[-1][0], rest))
    return parts


class _Taxes:
    """The order's taxes by rate, as each price adds its own."""

    def __init__(self, tax_status: str) -> None:
        self.tax_status = tax_status
        self.by_rate: dict[Decimal, list[Decimal]] = {}  # rate -> [price, tax]

    def price(self, unit: Decimal, quantity: int, parts: list[tuple[Decimal, Decimal]]) -> dict:
        """A Shopware ``CalculatedPrice`` of ``parts`` ((rate, price) each)."""
        taxes, rules = [], []
        total = sum((p for _, p in parts), Decimal(0))
        for rate, part in parts if self.tax_status != "tax-free" else []:
            tax = _tax(part, rate, self.tax_status)
            slot = self.by_rate.setdefault(rate, [Decimal(0), Decimal(0)])
            slot[0] += part
            slot[1] += tax
            taxes.append({"tax": float(tax), "taxRate": float(rate), "price": float(part)})
            share = float(part / total * HUNDRED) if total else 100.0
            rules.append({"taxRate": float(rate), "percentage": share})
        return {
            "unitPrice": float(unit),
            "quantity": quantity,
            "totalPrice": float(total),
            "calculatedTaxes": taxes,
            "taxRules": rules,
        }

    @property
    def total(self) -> Decimal:
        return sum((tax for _, tax in self.by_rate.values()), Decimal(0))


def _order_value(rows: list[_Row], name: str, default: Any = None) -> Any:
    for row in rows:
        if name in row.values:
            return row.values[name]
    return default


def _line_item(
    row: _Row, position: int, order_id: str, taxes: _Taxes
) -> tuple[dict[str, Any], Decimal, Decimal]:
    """A product line item, its total (half up to the cent) and its VAT rate."""
    quantity, unit = row.values["quantity"], row.values["unit_price"]
    total = (unit * quantity).quantize(CENT, rounding=ROUND_HALF_UP)
    rate = row.values.get("tax_rate", Decimal(0))
    sku = row.values["product_number"]
    item = {
        "id": _hex_id(order_id, "line", str(row.line)),
        "type": "product",
        "label": row.values.get("product_label") or sku,
        "position": position,
        "quantity": quantity,
        "unitPrice": float(unit),
        "totalPrice": float(total),
        "price": taxes.price(unit, quantity, [(rate, total)]),
        "payload": {"productNumber": sku},
        "good": True,
    }
    return item, total, rate


def _build_order(
    number: str, rows: list[_Row], ctx: _Context, digest: str
) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
    """The order in Shopware's wire shape, or what keeps it from adding up."""
    status = ctx.config.tax_status
    taxes = _Taxes(status)
    order_id = _hex_id(digest, number)  # = order_id(digest, number)
    items, goods, weights = [], Decimal(0), {}
    for position, row in enumerate(rows, 1):
        item, total, rate = _line_item(row, position, order_id, taxes)
        items.append(item)
        weights[rate] = weights.get(rate, Decimal(0)) + total
        goods += total
    shipping = _order_value(rows, "shipping_total", Decimal("0.00"))
    shipping_price = taxes.price(shipping, 1, _split(shipping, weights))
    net = goods + shipping if status != "gross" else goods + shipping - taxes.total
    paid = net + taxes.total if status == "net" else goods + shipping
    declared = _order_value(rows, "order_total")
    if declared is not None and abs(declared - paid) > CENT * len(rows):
        header = ctx.config.columns["order_total"]
        where = _lines_text([row.line for row in rows])
        message = f"{where}: order_total ({header!r}) is {declared}, but the lines" + (
            f" and shipping come to {paid}"
            if status != "net"
            else f", shipping and VAT come to {paid}"
        )
        return [("total_mismatch", message)], None
    amounts = {
        "amountTotal": float(paid),
        "amountNet": float(net),
        "positionPrice": float(goods),
        "shippingTotal": float(shipping),
        "shippingCosts": shipping_price,
        "taxStatus": status,
        "price": _order_price(taxes, paid, net, goods),
    }
    return [], _order_dict(number, rows, ctx, digest, order_id, amounts, items)


def _order_price(taxes: _Taxes, paid: Decimal, net: Decimal, goods: Decimal) -> dict[str, Any]:
    return {
        "netPrice": float(net),
        "totalPrice": float(paid),
        "positionPrice": float(goods),
        "rawTotal": float(paid),
        "taxStatus": taxes.tax_status,
        "calculatedTaxes": [
            {"tax": float(tax), "taxRate": float(rate), "price": float(price)}
            for rate, (price, tax) in taxes.by_rate.items()
        ],
    }


def _order_dict(
    number: str,
    rows: list[_Row],
    ctx: _Context,
    digest: str,
    order_id: str,
    amounts: dict[str, Any],
    items: list[dict[str, Any]],
) -> dict[str, Any]:
    def value(name: str) -> Any:
        return _order_value(rows, name)

    created = format_shop_datetime(value("created_at"))
    person = {"firstName": value("customer_first_name"), "lastName": value("customer_last_name")}
    ship = value("shipping_country")
    return {
        "id": order_id,
        "orderNumber": number,
        "orderDateTime": created,
        "createdAt": created,
        **amounts,
        "currency": {"isoCode": value("currency") or "EUR"},
        "orderCustomer": {
            "id": _hex_id(order_id, "customer"),
            "email": value("customer_email"),
            **person,
            "company": value("company"),
            "customerNumber": None,
        },
        "billingAddress": _address(rows, order_id, "billing", value("billing_country") or ship),
        "deliveries": [
            {
                "id": _hex_id(order_id, "delivery"),
                "shippingOrderAddress": _address(rows, order_id, "shipping", ship),
                "shippingCosts": amounts["shippingCosts"],
            }
        ],
        "lineItems": items,
        # Where the order came from, for whoever traces an ERP order back to its file.
        "customFields": {
            "csvFile": ctx.file_name,
            "csvSha256": digest,
            "csvLines": [row.line for row in rows],
        },
    }


def _address(rows: list[_Row], order_id: str, role: str, country: str) -> dict[str, Any]:
    """An order address: the file has one street, zip and city, the delivery address's; the
    billing address repeats them (with the billing country when the file names one)."""
    return {
        "id": _hex_id(order_id, role),
        "firstName": _order_value(rows, "customer_first_name"),
        "lastName": _order_value(rows, "customer_last_name"),
        "company": _order_value(rows, "company"),
        "street": _order_value(rows, "street"),
        "zipcode": _order_value(rows, "zip"),
        "city": _order_value(rows, "city"),
        "country": {"iso": country},
    }


def _report(
    file_name: str,
    digest: str,
    encoding: str,
    delimiter: str,
    rows: int,
    orders: list[dict[str, Any]],
    quarantined: list[QuarantinedOrder],
) -> dict[str, Any]:
    """The file's figures, as Dagster metadata takes them (text, numbers, a flat dict)."""
    reasons: dict[str, int] = {}
    for order in quarantined:
        reasons[order.kind] = reasons.get(order.kind, 0) + 1
    paid: dict[str, Decimal] = {}
    for order in orders:
        currency = order["currency"]["isoCode"]
        paid[currency] = paid.get(currency, Decimal(0)) + Decimal(repr(order["amountTotal"]))
    return {
        "file": file_name,
        "sha256": digest,
        "encoding": encoding,
        "delimiter": DELIMITER_NAMES[delimiter],
        "rows": rows,
        "orders": len(orders),
        "quarantined": len(quarantined),
        "reasons": dict(sorted(reasons.items())),
        "amount_total": {currency: str(amount) for currency, amount in sorted(paid.items())},
    }
