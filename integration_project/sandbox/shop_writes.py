"""The sandbox shop's ``PATCH /api/order/{id}``: the part of Shopware's entity write the route
uses (custom fields and tags on an order), answered as Shopware answers it.

What Shopware does, and so this does (``reference/shopware-writeback.md``):

* success is ``204 No Content`` with a ``Location`` header, unless ``?_response`` asks for the
  entity (``ApiController::write``);
* an id no order has is not a 404: the write becomes an insert, and an update that would insert
  is refused with ``400 FRAMEWORK__WRITE_TYPE_INTEND_ERROR`` (``WriteCommandQueue::ensureIs``);
  an id that is not 32 hex characters is ``400 FRAMEWORK__INVALID_UUID``;
* ``customFields`` of an existing order are merged key by key (``CustomFieldsSerializer``: a
  JSON update), so other keys stay;
* ``tags`` is a many-to-many association: each entry is upserted as a tag by its ``id`` and
  assigned to the order, which keeps its other tags; an entry without an ``id`` creates a new
  tag every time (tag names are not unique), so only a fixed id makes the write idempotent;
* a body that is a list is ``400`` ("Only single write operations are supported").

Where the sandbox is simpler: a written order's ``tags`` come back in every search answer
(Shopware loads them only when the criteria ask for the association), and orders stored by
``add_bulk`` (benchmarks) cannot be written: their ids answer as unknown.

Test hooks: :meth:`OrderWrites.refuse` makes every write a ``400`` with the given words; a 503
is the shop's fault plan (``shop.faults.add("503", path_contains="/api/order/",
method="PATCH")``).
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from typing import Any

from integration_project.sandbox.common import Request, Response
from integration_project.sandbox.shop_answers import shop_error

ORDER_PATH_PREFIX = "/api/order/"
#: Faults the shop's fault plan may inject into a write.
FAULTS_WRITE = frozenset({"500", "503", "429", "slow"})
_ID = re.compile(r"[0-9a-f]{32}")
_WRITABLE = frozenset({"customFields", "tags"})
_UPDATE = "Shopware\\Core\\Framework\\DataAbstractionLayer\\Write\\Command\\UpdateCommand"
_INSERT = "Shopware\\Core\\Framework\\DataAbstractionLayer\\Write\\Command\\InsertCommand"


class BadWrite(ValueError):
    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class OrderWrites:
    """Tags the shop knows, every write it took, and the refusal hook; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Every tag by id: its name.
        self.tags: dict[str, str] = {}
        #: (order id, body) of every write the shop took, in order.
        self.log: list[tuple[str, dict[str, Any]]] = []
        self._refusal: str | None = None

    def refuse(self, detail: str | None = "This value should not be blank.") -> None:
        """Test hook: answer every write with a 400 and ``detail`` (None: stop refusing)."""
        with self._lock:
            self._refusal = detail

    def count(self, order_id: str) -> int:
        """How many writes the shop took for ``order_id``."""
        with self._lock:
            return sum(1 for written, _ in self.log if written == order_id)

    def apply(self, orders: dict[str, dict[str, Any]], request: Request, base: str) -> Response:
        """Apply one ``PATCH /api/order/{id}`` to ``orders`` (the caller holds their lock)."""
        order_id = request.path[len(ORDER_PATH_PREFIX) :]
        try:
            body = _body(request, order_id)
            with self._lock:
                if self._refusal is not None:
                    raise BadWrite(self._refusal, "FRAMEWORK__WRITE_CONSTRAINT_VIOLATION")
            order = orders.get(order_id)
            if order is None:
                raise BadWrite(
                    f'Expected command for "order" to be "{_UPDATE}". (Got: {_INSERT}) '
                    "Hint: Use POST method to create new entities.",
                    "FRAMEWORK__WRITE_TYPE_INTEND_ERROR",
                )
            changed = copy.deepcopy(order)
            if "customFields" in body:
                changed["customFields"] = _merged_fields(changed.get("customFields"), body)
            if "tags" in body:
                with self._lock:
                    changed["tags"] = self._assigned(changed.get("tags"), body["tags"])
        except BadWrite as bad:
            return shop_error(400, "Bad Request", bad.detail, bad.code)
        order.clear()
        order.update(changed)
        with self._lock:
            self.log.append((order_id, body))
        return Response(204, None, {"Location": f"{base}{ORDER_PATH_PREFIX}{order_id}"})

    def _assigned(self, current: Any, entries: Any) -> list[dict[str, Any]]:
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise BadWrite("tags: expected a list of objects.", "FRAMEWORK__WRITE_MALFORMED_INPUT")
        assigned = {t["id"]: t for t in current or [] if isinstance(t, dict) and "id" in t}
        for entry in entries:
            tag_id = entry.get("id") or uuid.uuid4().hex
            if not isinstance(tag_id, str) or not _ID.fullmatch(tag_id):
                raise BadWrite(
                    f'The provided UUID "{tag_id}" is invalid.', "FRAMEWORK__INVALID_UUID"
                )
            name = entry.get("name", self.tags.get(tag_id))
            if not isinstance(name, str) or not name.strip():
                raise BadWrite("/tags/0/name: This value should not be blank.", "c1051bb4")
            self.tags[tag_id] = name
            assigned[tag_id] = {"id": tag_id, "name": name}
        return list(assigned.values())


def _body(request: Request, order_id: str) -> dict[str, Any]:
    if not _ID.fullmatch(order_id):
        raise BadWrite(f'The provided UUID "{order_id}" is invalid.', "FRAMEWORK__INVALID_UUID")
    content_type = request.headers.get("content-type", "").partition(";")[0].strip()
    if content_type != "application/json":
        raise BadWrite(
            f'The Content-Type "{content_type}" is unsupported.', "FRAMEWORK__UNSUPPORTED_MEDIA"
        )
    try:
        body = request.json()
    except ValueError:
        raise BadWrite("Syntax error, malformed JSON.", "FRAMEWORK__MALFORMED_JSON") from None
    if isinstance(body, list):
        raise BadWrite(
            "Only single write operations are supported. Please send the entities one by one "
            "or use the /sync api endpoint.",
            "FRAMEWORK__BAD_REQUEST",
        )
    if not isinstance(body, dict):
        raise BadWrite("Expected a JSON object.", "FRAMEWORK__MALFORMED_JSON")
    unknown = sorted(set(body) - _WRITABLE - {"id"})
    if unknown:
        raise BadWrite(
            f"The sandbox shop only writes customFields and tags, not {', '.join(unknown)}.",
            "SANDBOX__UNSUPPORTED_WRITE",
        )
    return body


def _merged_fields(current: Any, body: dict[str, Any]) -> dict[str, Any] | None:
    fields = body["customFields"]
    if fields is None:
        return None
    if not isinstance(fields, dict):
        raise BadWrite(
            "customFields: This value should be of type array.", "FRAMEWORK__WRITE_MALFORMED_INPUT"
        )
    return {**(current if isinstance(current, dict) else {}), **fields}
