"""Plumbing both sandbox servers share: clocks, one request in / one response out, the server.

Each sandbox system (:class:`~integration_project.sandbox.shop.SandboxShop`,
:class:`~integration_project.sandbox.erp.SandboxErp`) is a plain object with
``handle(request) -> Response``. This module adapts such an object to ``http.server``, so the
systems stay ordinary Python that tests can drive and inspect, and the socket details (keep-alive,
dropped connections, quiet logs) live in one place.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger("integration_project.sandbox")

#: Every time the sandbox uses comes from a clock: tests inject one to expire tokens, move
#: rate-limit windows and place orders without sleeping.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (for tests). Timezone-aware UTC only."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or system_clock()
        if start.tzinfo is None:
            raise ValueError("naive datetime: pass timezone-aware UTC datetimes")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds, **delta)
            return self._now

    def set(self, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("naive datetime: pass timezone-aware UTC datetimes")
        with self._lock:
            self._now = now.astimezone(UTC)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # keys lower-cased
    body: bytes
    host: str

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The body as JSON; raises ``ValueError`` on anything else."""
        return json.loads(self.body.decode("utf-8"))

    def bearer(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list -> JSON, bytes -> sent as is, None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    #: Close the connection without answering: the client sees the response as lost.
    drop: bool = False

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")


class Forwarded:
    """An attribute kept on a part of the object (``obj.<part>.<name>``), read and set under
    its own name on the object: a system built from parts keeps the attributes its callers
    and tests use (``erp.refresh_token``, ``shop.client_id``) where they always were."""

    def __init__(self, part: str, name: str | None = None) -> None:
        self.part = part
        self.name = name or ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj: object, value: Any) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class App(Protocol):
    def handle(self, request: Request) -> Response: ...

    def internal_error(self, message: str) -> Response: ...


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive like the real APIs do (a client's pooled connection can
    # then be dropped mid-request, which is one of the faults we simulate).
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle's algorithm on, the second waits for
    # the client's delayed ACK (~40 ms) on a kept-alive connection. Real servers do not
    # stall so: every sandbox call would pay a latency no real API has.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
            host=self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2]),
        )
        try:
            response = self.server.app.handle(request)
        except Exception as exc:  # a sandbox bug must not hang the client
            logger.exception("sandbox error on %s %s", self.command, self.path)
            response = self.server.app.internal_error(f"sandbox error: {exc!r}")
        if response.drop:
            self.close_connection = True
            return
        payload = response.encoded()
        self.send_response(response.status)
        if payload or response.body is not None:
            self.send_header("Content-Type", f"{response.content_type}; charset=utf-8")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet by default: request logs go to `logging` at DEBUG, never to stderr directly.
        logger.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)


def make_server(app: App, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for ``app`` bound to ``host:port`` (0 = a free port), not yet serving."""
    return _Server((host, port), app)
