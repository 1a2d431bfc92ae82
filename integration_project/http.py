"""What both HTTP clients share: sessions with bounded retries for safe calls, and errors that
name the URL and the status (never a credential)."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

#: (connect, read) seconds: fail fast on a dead host, give a busy API time to answer.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)
USER_AGENT = "integration_project/0.1 (+https://github.com/; dagster order route)"


class ApiError(RuntimeError):
    """An HTTP call failed. The message names the method, URL and status, never a secret."""

    def __init__(self, message: str, *, method: str, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status


class AuthError(ApiError):
    """The credentials were refused. The message names the variables to check."""


def safe_url(url: str) -> str:
    """The URL without user info or query string values (they may carry tokens)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def build_session(
    *,
    retry_methods: Collection[str],
    retry_statuses: Collection[int] = (429, 500, 502, 503, 504),
    total: int = 4,
    read_retries: int = 0,
    backoff_factor: float = 0.5,
    retry_class: type[Retry] = Retry,
) -> requests.Session:
    """One session per client, retrying only the methods the caller declares safe.

    Retries honour ``Retry-After``. A create POST must never be listed in ``retry_methods``:
    a timeout there means "unknown", not "failed". Read timeouts are retried only when the
    caller says the call is a pure read (``read_retries``). ``retry_class``: a ``Retry``
    subclass, e.g. one that caps how long ``Retry-After`` may make it wait.
    """
    retry = retry_class(
        total=total,
        connect=total,
        read=read_retries,
        status=total,
        backoff_factor=backoff_factor,
        backoff_max=30,
        status_forcelist=tuple(retry_statuses),
        allowed_methods=frozenset(m.upper() for m in retry_methods),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1")
