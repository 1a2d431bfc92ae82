"""OData ``$filter`` for the sandbox ERP: the subset of OData v2 that clients send to Exact.

Exact evaluates ``$filter`` as OData v2 (WCF Data Services): comparisons ``eq ne gt ge lt
le``, ``and`` / ``or`` / ``not``, parentheses, and typed literals: ``'text'`` (quotes doubled
inside), ``guid'…'``, ``datetime'…'``, numbers, ``true`` / ``false`` / ``null``. A literal of
the wrong type is refused, in Exact's words: ``Code eq 200184`` -> 400 "Operator 'eq'
incompatible with operand types 'System.String' and 'System.Int32' at position 5."
(picqer/exact-php-client#173), ``Account eq '<guid>'`` -> the same for Guid and String
(picqer#52). ``trim(Field)`` is Exact's documented way to match a code without its padding.
Text compares case-insensitively (Exact's SQL collation). Other functions (``substringof``,
``startswith`` …) exist at Exact but not here: the sandbox refuses them, naming them.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

EDM_GUID, EDM_INT, EDM_DOUBLE = "Edm.Guid", "Edm.Int32", "Edm.Double"
EDM_DATETIME, EDM_BOOL, EDM_STRING, EDM_NULL = "Edm.DateTime", "Edm.Boolean", "Edm.String", "null"
_NUMERIC = frozenset({EDM_INT, EDM_DOUBLE})
_SYSTEM_TYPE = {
    EDM_GUID: "System.Guid",
    EDM_INT: "System.Int32",
    EDM_DOUBLE: "System.Double",
    EDM_DATETIME: "System.DateTime",
    EDM_BOOL: "System.Boolean",
    EDM_STRING: "System.String",
    EDM_NULL: "null",
}
_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_FUNCTIONS = frozenset({"trim"})
_KNOWN_ELSEWHERE = frozenset(
    {"substringof", "startswith", "endswith", "indexof", "tolower", "toupper", "length",
     "substring", "replace", "concat", "year", "month", "day", "hour", "minute", "second",
     "round", "floor", "ceiling", "isof", "cast", "any", "all"}
)  # fmt: skip
_FILTER_TOKEN = re.compile(
    r"""(?P<guid>guid'(?P<guid_v>[^']*)')
      | (?P<datetime>datetime'(?P<datetime_v>[^']*)')
      | (?P<string>'(?P<string_v>(?:[^']|'')*+)')
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[mMdDfFlL]?)(?![A-Za-z0-9_'])
      | (?P<open>\()
      | (?P<close>\))
      | (?P<comma>,)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)""",
    re.VERBOSE,
)
_GUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class FilterError(ValueError):
    """A ``$filter`` Exact would refuse (400); the message names what was not understood."""


@dataclasses.dataclass(frozen=True)
class _Tok:
    kind: str  # guid datetime string number open close comma name end
    value: Any
    pos: int


def _filter_tokens(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        match = _FILTER_TOKEN.match(text, pos)
        if match is None:
            if text[pos] == "'" or text[pos:].startswith(("guid'", "datetime'")):
                raise FilterError(f"Unterminated string literal at position {pos} in '{text}'.")
            raise FilterError(f"Syntax error: '{text[pos]}' at position {pos} in '{text}'.")
        kind = match.lastgroup or ""
        if kind.endswith("_v"):
            kind = kind[:-2]
        raw = match.group(kind)
        value: Any = raw
        if kind == "guid":
            value = match.group("guid_v")
            if not _GUID_TEXT.match(value):
                raise FilterError(f"Unrecognized 'Edm.Guid' literal '{raw}' at position {pos}.")
            value = value.lower()
        elif kind == "datetime":
            try:
                value = _naive_utc(datetime.fromisoformat(match.group("datetime_v")))
            except ValueError:
                raise FilterError(
                    f"Unrecognized 'Edm.DateTime' literal '{raw}' at position {pos}."
                ) from None
        elif kind == "string":
            value = match.group("string_v").replace("''", "'")
        elif kind == "number":
            body = raw.rstrip("mMdDfFlL")
            is_int = re.fullmatch(r"-?\d+", body) is not None and raw[-1:] not in "mMdDfF"
            value = int(body) if is_int else float(body)
        tokens.append(_Tok(kind, value, pos))
        pos = match.end()
    tokens.append(_Tok("end", None, len(text)))
    return tokens


#: A compiled filter: row -> bool (None = unknown, treated as no match).
Predicate = Any


class _FilterParser:
    """Recursive descent over :func:`_filter_tokens`; type-checks as it goes."""

    def __init__(self, text: str, types: dict[str, str], type_name: str) -> None:
        self.text = text
        self.types = types
        self.type_name = type_name
        self.tokens = _filter_tokens(text)
        self.i = 0

    def parse(self) -> Predicate:
        kind, evaluate = self._or()
        end = self._peek()
        if end.kind != "end":
            raise FilterError(
                f"Syntax error at position {end.pos} in '{self.text}': "
                f"unexpected '{self._show(end)}'."
            )
        if kind != EDM_BOOL:
            raise FilterError(f"Expression of type '{kind}' expected to be 'Edm.Boolean'.")
        return evaluate

    # -- grammar: or > and > not > comparison > operand ------------------------------------

    def _or(self) -> tuple[str, Predicate]:
        kind, left = self._and()
        while self._keyword("or"):
            pos = self._next().pos
            left = self._logical("or", pos, (kind, left), self._and())
            kind = EDM_BOOL
        return kind, left

    def _and(self) -> tuple[str, Predicate]:
        kind, left = self._not()
        while self._keyword("and"):
            pos = self._next().pos
            left = self._logical("and", pos, (kind, left), self._not())
            kind = EDM_BOOL
        return kind, left

    def _not(self) -> tuple[str, Predicate]:
        if self._keyword("not"):
            pos = self._next().pos
            kind, inner = self._not()
            if kind != EDM_BOOL:
                raise FilterError(f"Operator 'not' incompatible with operand type '{kind}' at "
                                  f"position {pos}.")  # fmt: skip
            return EDM_BOOL, lambda row: None if (v := inner(row)) is None else not v
        return self._comparison()

    def _comparison(self) -> tuple[str, Predicate]:
        left = self._operand()
        token = self._peek()
        if token.kind == "name" and token.value.lower() in _COMPARISONS:
            self._next()
            op = token.value.lower()
            right = self._operand()
            return EDM_BOOL, self._compare(op, token.pos, left, right)
        if token.kind == "name" and token.value.lower() not in ("and", "or"):
            raise FilterError(
                f"Syntax error at position {token.pos} in '{self.text}': "
                f"'{token.value}' is not an operator this filter understands "
                "(eq, ne, gt, ge, lt, le, and, or, not)."
            )
        return left

    def _operand(self) -> tuple[str, Predicate]:
        token = self._next()
        if token.kind == "open":
            inner = self._or()
            close = self._next()
            if close.kind != "close":
                raise FilterError(
                    f"Syntax error at position {close.pos} in '{self.text}': ')' expected."
                )
            return inner
        literal_kinds = {
            "guid": EDM_GUID, "datetime": EDM_DATETIME, "string": EDM_STRING,
        }  # fmt: skip
        if token.kind in literal_kinds:
            value = token.value
            return literal_kinds[token.kind], lambda row: value
        if token.kind == "number":
            value = token.value
            return (EDM_INT if isinstance(value, int) else EDM_DOUBLE), lambda row: value
        if token.kind != "name":
            raise FilterError(
                f"Syntax error at position {token.pos} in '{self.text}': "
                f"expression expected, found '{self._show(token)}'."
            )
        word = token.value
        if word in ("true", "false"):
            flag = word == "true"
            return EDM_BOOL, lambda row: flag
        if word == "null":
            return EDM_NULL, lambda row: None
        if self._peek().kind == "open":
            return self._function(token)
        if word not in self.types:
            raise FilterError(
                f"No property '{word}' exists in type '{self.type_name}' at position {token.pos}."
            )
        kind = self.types[word]
        return kind, lambda row: _field_value(row.get(word), kind)

    def _function(self, name: _Tok) -> tuple[str, Predicate]:
        function = name.value
        if function not in _FUNCTIONS:
            known = "an OData function the sandbox does not evaluate" if (
                function in _KNOWN_ELSEWHERE
            ) else "not a known function"  # fmt: skip
            raise FilterError(
                f"Unsupported $filter at position {name.pos}: '{function}' is {known} "
                "(the sandbox evaluates eq, ne, gt, ge, lt, le, and, or, not, trim)."
            )
        self._next()  # (
        kind, argument = self._or()
        close = self._next()
        if close.kind != "close":
            raise FilterError(
                f"Syntax error at position {close.pos} in '{self.text}': ')' expected."
            )
        if kind != EDM_STRING:
            raise FilterError(
                f"No function signature for the function with name '{function}' matches the "
                f"argument type '{kind}' at position {name.pos}."
            )
        return EDM_STRING, lambda row: None if (v := argument(row)) is None else v.strip()

    # -- semantics ---------------------------------------------------------------------------

    def _logical(
        self, op: str, pos: int, left: tuple[str, Predicate], right: tuple[str, Predicate]
    ) -> Predicate:
        for kind, _ in (left, right):
            if kind != EDM_BOOL:
                raise FilterError(
                    f"Operator '{op}' incompatible with operand types '{_SYSTEM_TYPE[left[0]]}' "
                    f"and '{_SYSTEM_TYPE[right[0]]}' at position {pos}."
                )
        a, b = left[1], right[1]
        if op == "and":
            return lambda row: _and3(a(row), b(row))
        return lambda row: _or3(a(row), b(row))

    def _compare(
        self, op: str, pos: int, left: tuple[str, Predicate], right: tuple[str, Predicate]
    ) -> Predicate:
        (lk, lf), (rk, rf) = left, right
        same = lk == rk or EDM_NULL in (lk, rk) or (lk in _NUMERIC and rk in _NUMERIC)
        ordered = op in ("eq", "ne") or lk not in (EDM_GUID, EDM_BOOL)
        if not same or not ordered:
            raise FilterError(
                f"Operator '{op}' incompatible with operand types '{_SYSTEM_TYPE[lk]}' and "
                f"'{_SYSTEM_TYPE[rk]}' at position {pos}."
            )

        def compare(row: dict[str, Any]) -> bool | None:
            a, b = lf(row), rf(row)
            if a is None or b is None:  # C# null semantics, as Exact's LINQ provider
                return (a is None and b is None) == (op == "eq") if op in ("eq", "ne") else False
            if isinstance(a, str):
                a, b = a.casefold(), b.casefold()
            return {
                "eq": a == b, "ne": a != b, "gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b,
            }[op]  # fmt: skip

        return compare

    # -- tokens ------------------------------------------------------------------------------

    def _peek(self) -> _Tok:
        return self.tokens[self.i]

    def _next(self) -> _Tok:
        token = self.tokens[self.i]
        if token.kind == "end":
            raise FilterError(f"Syntax error: '{self.text}' ends where an expression was expected.")
        self.i += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        return token.kind == "name" and token.value.lower() == word

    def _show(self, token: _Tok) -> str:
        return self.text[token.pos :].split(" ", 1)[0] or "end of the filter"


def _and3(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or3(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


_JSON_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")


def _field_value(value: Any, kind: str) -> Any:
    """A row's value as the filter compares it (None when absent or not of that type)."""
    if value is None:
        return None
    try:
        if kind == EDM_STRING:
            return str(value)
        if kind == EDM_GUID:
            return str(value).lower()
        if kind in _NUMERIC:
            return float(value)
        if kind == EDM_BOOL:
            return bool(value)
        if kind == EDM_DATETIME:
            if isinstance(value, datetime):
                return _naive_utc(value)
            if match := _JSON_DATE.match(str(value)):
                return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC).replace(tzinfo=None)
            return _naive_utc(datetime.fromisoformat(str(value)))
    except (TypeError, ValueError):
        return None
    return value


def compile_filter(text: str, types: dict[str, str], type_name: str) -> Predicate:
    """``$filter`` text -> a predicate over rows; :class:`FilterError` when Exact would refuse
    it (or the sandbox cannot evaluate it). ``types``: field -> Edm type of the entity."""
    predicate = _FilterParser(text, types, type_name).parse()
    return lambda row: predicate(row) is True
