"""What the UI shows about a run: each report of fetching, mapping and delivery as the metadata
of its materialization (or observation). The key names are what operators, checks and
sensors read, so they stay as they are.

Reports are plain data and know nothing of Dagster; :func:`as_metadata` is their presentation,
one function per report type.
"""

from __future__ import annotations

from functools import singledispatch
from typing import Any

import dagster as dg

from integration_project.connectors.csv_files import FileReport
from integration_project.delivery import (
    DeliveryPreview,
    DeliveryProgress,
    DeliveryReport,
    LeaseHeld,
)
from integration_project.fetching import PREVIEW_ROWS, FetchReport
from integration_project.ledger.views import Views
from integration_project.mapping import MappingReport
from integration_project.redact import mask_emails
from integration_project.tables import table_metadata

Metadata = dict[str, Any]


def md_table(header: list[str], rows: list[list[Any]]) -> dg.MetadataValue:
    """A markdown table for the UI's metadata (previews), e-mail addresses masked."""

    def cell(value: Any) -> str:
        # Every preview cell: e-mail addresses masked (README, "Personal data").
        text = mask_emails(str(value if value is not None else ""))
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    if not rows:
        lines.append("| " + " | ".join("" for _ in header) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def latest_delivered_table(views: Views, limit: int = PREVIEW_ROWS) -> dg.TableMetadataValue:
    """The route's most recently delivered orders, as a typed table: which shop order became
    which ERP order, and when."""
    with views.latest_delivered(limit) as result:
        return table_metadata(result)


@singledispatch
def as_metadata(report: object) -> Metadata:
    """The metadata a report shows in the UI."""
    raise TypeError(f"no metadata for a {type(report).__name__}")


@as_metadata.register
def _fetch(report: FetchReport) -> Metadata:
    window = report.window
    return {
        "fetched": report.fetched,
        "new": report.new,
        "refetched": report.refetched,
        "pages": report.pages,
        "late": report.late,
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat(),
        "lookback_minutes": window.lookback.total_seconds() / 60,
        "dagster/row_count": report.staged_in_window,
        "preview": md_table(
            ["orderNumber", "createdAt", "ships to", "amountTotal", "currency"], report.preview
        ),
        # Test mode: the run staged at most this many orders (0: the window was read whole).
        "test_mode_limit": report.limit or 0,
    }


@as_metadata.register
def _file(report: FileReport) -> Metadata:
    """An order file's validation report (encoding, delimiter, rows, orders, why orders were
    quarantined, the amounts it passes on) and what staging made of it."""
    figures = report.report
    return {
        "file": report.file_name,
        "sha256": report.sha256,
        "encoding": figures["encoding"],
        "delimiter": figures["delimiter"],
        "rows": figures["rows"],
        "orders": figures["orders"],
        "quarantined": figures["quarantined"],
        "quarantine_reasons": dg.MetadataValue.json(figures["reasons"]),
        "amount_total": dg.MetadataValue.json(figures["amount_total"]),
        "new": report.new,
        "refetched": report.refetched,
        "window_start": report.start.isoformat() if report.start else "",
        "window_end": report.end.isoformat() if report.end else "",
        "dagster/row_count": figures["orders"],
        "preview": md_table(
            ["orderNumber", "createdAt", "ships to", "amountTotal", "currency"], report.preview
        ),
        "quarantined_preview": md_table(
            ["line(s)", "orderNumber", "reason"], report.quarantined_preview
        ),
    }


@as_metadata.register
def _mapping(report: MappingReport) -> Metadata:
    counts = report.counts
    return {
        "staged": report.staged,
        # Orders that pass the filter (the quarantined ones among them too).
        "eu": report.staged - counts["skipped"],
        "mapped": counts["mapped"],
        "dropped_non_eu": counts["skipped"],
        "quarantined": counts["quarantined"],
        # Orders of earlier windows mapped now because their own run had failed.
        "caught_up": report.caught_up,
        # Orders left for the next run after a transient ERP error on their look-ups.
        "deferred": report.deferred,
        "erp_lookups": report.erp_lookups,
        "erp_accounts_created": report.accounts_created,
        # Per look-up table of the route (mapping.lookups): orders matched, given the
        # route's default, quarantined.
        "lookups": md_table(
            ["lookup", "matched", "defaulted", "quarantined"], report.lookup_rows()
        ),
        "allowed_countries": ", ".join(sorted(report.allowed_countries)),
        "dagster/row_count": counts["mapped"],
        "quarantined_preview": md_table(["orderNumber", "reason"], report.quarantine_preview),
        "payload_preview": md_table(["orderNumber", "ERP sales order"], report.payload_preview),
    }


@as_metadata.register
def _delivery(report: DeliveryReport) -> Metadata:
    tally, counts = report.tally, report.ledger_counts
    metadata: Metadata = {
        "sent": tally["sent"],
        "found_in_erp": tally["found_in_erp"],
        # The ERP holds a different order under the YourRef (see the conflict check).
        "conflicts": tally["conflict"],
        "failed": tally["failed"],
        "unknown_outcome": tally["unknown"],
        "pending_left": report.pending_left,
        "held_back_outside_countries": report.held_back[0],
        # How long the longest-waiting order has waited since it was mapped (0: none wait).
        "oldest_pending_age_s": report.oldest_pending_age_s or 0.0,
        "erp_calls": report.erp_calls,
        "ledger_delivered": counts.get("delivered", 0),
        "ledger_failed": counts.get("failed", 0),
        "ledger_sending": counts.get("sending", 0),
        "ledger_conflict": counts.get("conflict", 0),
        "erp_host": report.erp_host,
        "erp_division": report.erp_division,
        "dagster/row_count": counts.get("delivered", 0),
        "stopped_early": report.stopped or "no",
        # Longest wait from mapping to the ERP among the orders this run delivered.
        "latency_seconds_max": report.latency_seconds_max,
        "sent_preview": md_table(
            ["orderNumber", "ERP OrderNumber", "ERP OrderID"], report.sent_preview
        ),
        "requeued": report.requeued,  # failed orders an operator asked to send again
    }
    if report.calls_left_minute is not None:
        metadata["erp_calls_left_minute"] = report.calls_left_minute
    if report.calls_left_day is not None:
        metadata["erp_calls_left_day"] = report.calls_left_day
    return metadata


@as_metadata.register
def _lease_held(report: LeaseHeld) -> Metadata:
    # The ledger's totals, so this materialization does not hide what the sending run is
    # doing behind "sent 0" and an empty row count.
    delivered = report.ledger_counts.get("delivered", 0)
    return {
        "skipped": f"delivery run {report.holder} was already sending",
        "sent": 0,
        "sending_run": report.holder,
        "pending_left": report.pending_left,
        "ledger_delivered": delivered,
        "ledger_sending": report.ledger_counts.get("sending", 0),
        "dagster/row_count": delivered,
    }


@as_metadata.register
def _preview(report: DeliveryPreview) -> Metadata:
    return {
        "dry_run": True,
        "would_send": report.would_send,
        "sent": 0,
        "payload_preview": md_table(["YourRef order", "ERP sales order"], report.rows),
    }


@as_metadata.register
def _progress(report: DeliveryProgress) -> Metadata:
    return {
        "in_progress_run": report.run_id,
        "handled": report.handled,
        "of": report.of,
        "sent_so_far": report.sent,
        "failed_so_far": report.failed,
    }
