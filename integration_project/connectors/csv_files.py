"""A folder of CSV order files as a route's source: which files are ready, reading one into the
ledger's staging, and moving a file that is not the route's CSV aside. No Dagster here: the
route's sensor (:mod:`integration_project.sensors`) and its ``source_orders`` asset
(:mod:`integration_project.assets`) call these.

A file is known by its content (SHA-256): renamed, touched or copied in again, it is the same
file, and its orders are staged under the same ids (:func:`~.csv_orders.order_id`), so reading
it twice stages nothing twice. Orders the file cannot pass on (a bad row, a number the ledger
already holds) are staged as stand-ins that carry the reason, file and line: the mapping
quarantines them, so they show in the ledger's quarantine like any shop order's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from integration_project.connectors.csv_orders import (
    CsvFileError,
    CsvParse,
    CsvSourceConfig,
    file_sha256,
    order_id,
    parse_order_file,
)
from integration_project.fetching import Window
from integration_project.ledger import Ledger, SourceFile, parse_created_at
from integration_project.ledger.db import now_utc
from integration_project.shopware.models import unreadable_order

#: Where files that are not the route's CSV are moved, inside the route's folder.
REJECTED_FOLDER = "rejected"
#: Names of files still being written by a copy tool, a browser or an editor: never read.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", ".swp", "~")
#: The file name beside a rejected file that says why it was rejected.
REASON_SUFFIX = ".reason.txt"
_HASH_CHUNK = 1 << 20


class CsvFolderError(OSError):
    """The route's folder cannot be read (missing, not a folder, no permission)."""


class CsvFileChanged(ValueError):
    """The file's content is not the content its partition was created for."""


class OrderFileMissing(FileNotFoundError):
    """No file in the folder has the content the partition was created for."""


class OrderFileRejected(ValueError):
    """The file is not the route's CSV; it was moved to ``rejected/``."""


@dataclass(frozen=True)
class FolderFile:
    """A file in the folder, ready to read: its name and its content's SHA-256."""

    name: str
    sha256: str
    size: int
    mtime_ns: int


def _is_candidate(name: str) -> bool:
    return not name.startswith((".", "~")) and not name.lower().endswith(PARTIAL_SUFFIXES)


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ready_files(
    folder: Path, *, settle_s: float, now: float, known: dict[str, list[Any]] | None = None
) -> tuple[list[FolderFile], dict[str, list[Any]]]:
    """The folder's files (top level only: ``rejected/`` and other subfolders are not read)
    that have not changed for ``settle_s`` seconds, by name. ``known``: name -> [size,
    mtime_ns, sha256] of an earlier call (a sensor's cursor): a file whose size and time did
    not change is not hashed again. Returns the files and the cache for the next call."""
    known = known or {}
    cache: dict[str, list[Any]] = {}
    files = []
    for entry in _entries(folder):
        try:
            if not _is_candidate(entry.name) or not entry.is_file():
                continue
            stat = entry.stat()
            if now - stat.st_mtime < settle_s:
                continue  # still being written, perhaps: the next tick looks again
            cached = known.get(entry.name)
            if cached and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
                digest = cached[2]
            else:
                digest = hash_file(Path(entry.path))
        except FileNotFoundError:
            continue  # moved away meanwhile (a run rejected it, someone tidied the folder)
        cache[entry.name] = [stat.st_size, stat.st_mtime_ns, digest]
        files.append(FolderFile(entry.name, digest, stat.st_size, stat.st_mtime_ns))
    return files, cache


def _entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            yield from sorted(entries, key=lambda entry: entry.name)
    except FileNotFoundError:
        raise CsvFolderError(f"order folder {folder} does not exist") from None
    except NotADirectoryError:
        raise CsvFolderError(f"order folder {folder} is not a folder") from None
    except PermissionError:
        raise CsvFolderError(f"order folder {folder} cannot be read (permission denied)") from None


def find_file(folder: Path, sha256: str, name: str | None = None) -> Path | None:
    """The file in ``folder`` with this content: ``name`` first, else any ready file."""
    if name and _is_candidate(name) and (folder / name).is_file():
        with contextlib.suppress(FileNotFoundError):
            if hash_file(folder / name) == sha256:
                return folder / name
    for entry in _entries(folder):
        try:
            if _is_candidate(entry.name) and entry.is_file():
                if hash_file(Path(entry.path)) == sha256:
                    return Path(entry.path)
        except FileNotFoundError:
            continue  # moved away meanwhile
    return None


def reject(folder: Path, path: Path, reason: str) -> Path:
    """Move ``path`` to ``<folder>/rejected/`` (its name kept, or made unique with its hash)
    with ``<name>.reason.txt`` beside it saying why; where it went."""
    target_dir = folder / REJECTED_FOLDER
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    if target.exists():
        target = target_dir / f"{path.stem}.{hash_file(path)[:12]}{path.suffix}"
    os.replace(path, target)  # the same file system: the file is never half moved
    target.with_name(target.name + REASON_SUFFIX).write_text(reason + "\n", encoding="utf-8")
    return target


@dataclass(frozen=True)
class FileReport:
    """What reading one order file did: the parse's report and what staging made of it."""

    file_name: str
    sha256: str
    report: dict[str, Any]
    new: int
    refetched: int
    #: Orders the file's mapping reads: ``[start, end)`` of their ``created_at``.
    start: datetime | None
    end: datetime | None
    #: (line(s), order number, reason) of the quarantined orders, first ones.
    quarantined_preview: list[list[Any]]
    #: (order number, created, ships to, total, currency) of the first orders.
    preview: list[list[Any]]


def stage_order_file(
    ledger: Ledger,
    path: Path,
    sha256: str,
    config: CsvSourceConfig,
    *,
    run_id: str,
    log: logging.Logger,
    now: datetime,
    preview_rows: int = 10,
) -> FileReport:
    """Read the file at ``path`` (which must still have content ``sha256``) into staging as
    run ``run_id``, in one commit, and record it in ``source_files``. Raises
    :class:`~.csv_orders.CsvFileError` when the file as a whole is not the route's CSV."""
    data = path.read_bytes()
    if file_sha256(data) != sha256:
        raise CsvFileChanged(
            f"{path}: its content changed since it was picked up (sha256 {sha256[:12]}…); "
            "the new content is picked up as a new file"
        )
    parse = _parse(ledger, data, path.name, config)
    standins = [
        unreadable_order(q.reason, {"id": order_id(sha256, q), "orderNumber": q.order_number})
        for q in parse.quarantined
    ]
    ledger.staging.begin_fetch(run_id)
    try:
        ledger.staging.stage_page(run_id, [*parse.orders, *standins], fallback_created_at=now)
        new, refetched = ledger.staging.commit_fetch(run_id)
    except BaseException:
        ledger.staging.abort_fetch(run_id)
        raise
    created = [parse_created_at(o["createdAt"]) or now for o in parse.orders]
    created += [now] * len(standins)
    start = min(created) if created else None
    end = max(created) + timedelta(microseconds=1) if created else None
    record = SourceFile(
        sha256, path.name, len(parse.orders), len(standins), start, end, now, run_id
    )
    ledger.source_files.record(record)
    log.info(
        "Read %s: %s orders to map, %s quarantined (%s of them new to the ledger)",
        path.name,
        len(parse.orders),
        len(standins),
        new,
    )
    return FileReport(
        path.name,
        sha256,
        parse.report,
        new,
        refetched,
        start,
        end,
        [[_lines(q.lines), q.order_number or "", q.reason] for q in parse.quarantined][
            :preview_rows
        ],
        [_preview(order) for order in parse.orders[:preview_rows]],
    )


def _parse(ledger: Ledger, data: bytes, name: str, config: CsvSourceConfig) -> CsvParse:
    """The file parsed, with the order numbers the ledger already holds quarantined (parsed a
    second time only when there are some)."""
    parse = parse_order_file(data, name, config)
    digest = parse.report["sha256"]
    numbers = [o["orderNumber"] for o in parse.orders]
    numbers += [q.order_number for q in parse.quarantined if q.order_number is not None]
    taken = ledger.staging.numbers_taken(numbers, [order_id(digest, n) for n in numbers])
    return parse_order_file(data, name, config, taken) if taken else parse


def _lines(lines: tuple[int, ...]) -> str:
    return ", ".join(str(line) for line in lines[:5]) + (" …" if len(lines) > 5 else "")


def _preview(order: dict[str, Any]) -> list[Any]:
    ship = order["deliveries"][0]["shippingOrderAddress"]["country"]["iso"]
    return [
        order["orderNumber"],
        order["createdAt"],
        ship,
        order["amountTotal"],
        order["currency"]["isoCode"],
    ]


def read_order_file(
    ledger: Ledger,
    folder: Path,
    sha256: str,
    config: CsvSourceConfig,
    *,
    file_name: str,
    run_id: str,
    log: logging.Logger,
) -> FileReport:
    """Find the folder's file with content ``sha256`` (``file_name`` first) and stage it
    (:func:`stage_order_file`). A file that is not the route's CSV is moved to
    ``rejected/`` and :class:`OrderFileRejected` raised, naming the file, why and where it is."""
    path = find_file(folder, sha256, file_name)
    if path is None:
        shown = f"{file_name!r} " if file_name else ""
        raise OrderFileMissing(
            f"order file {shown}(sha256 {sha256[:12]}…) is no longer in {folder}: it was moved "
            f"or changed since it was picked up (a file in {REJECTED_FOLDER}/ was rejected)"
        )
    try:
        return stage_order_file(ledger, path, sha256, config, run_id=run_id, log=log, now=now_utc())
    except CsvFileError as exc:
        moved = reject(folder, path, str(exc))
        raise OrderFileRejected(f"{exc}; the file was moved to {moved}") from None


def file_window(ledger: Ledger, sha256: str) -> Window:
    """The span of ``created_at`` of the orders staged from the file: what its mapping reads."""
    read = ledger.source_files.get(sha256)
    if read is None:
        raise OrderFileMissing(
            f"order file sha256 {sha256[:12]}… was not read yet: materialize its "
            "source_orders partition first"
        )
    if read.first_created_at is None or read.end_created_at is None:
        return Window(read.read_at, read.read_at, timedelta(0))  # a file without orders
    return Window(read.first_created_at, read.end_created_at, timedelta(0))
