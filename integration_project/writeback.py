"""After delivery, the ERP's order number written back onto each Shopware order, once.

Shop staff then see in the shop which orders the ERP holds: as a custom field
(``PATCH /api/order/{id}`` with ``{"customFields": {"erp_order_number": 1234}}``, merged with
the order's other custom fields) or as a tag (``{"tags": [{"id": ..., "name": "ERP 1234"}]}``:
the tag's id is derived from its name, so writing it twice assigns the same tag, never a second
one). Both are idempotent in Shopware, so a write repeated after a lost answer is harmless.

The ledger (:mod:`.ledger.acknowledgements`) records ``acknowledged_at`` when the shop took it;
that order is never written again. What the shop could not be asked (no connection, 5xx, 429)
stays waiting and the run stops there: the next run carries on. What the shop refused (another
4xx) is recorded with its words, bounded, shown in the metadata, and tried again on later runs
after the orders never tried. Paced: at most ``max_per_run`` writes a run, ``pause_s`` apart.

:class:`WritebackRun` is plain code; :func:`build_writeback_asset` the Dagster shell around it.
"""

import hashlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from integration_project import settings
from integration_project.http import ApiError, AuthError
from integration_project.ledger import Ledger
from integration_project.ledger.acknowledgements import WaitingAcknowledgement
from integration_project.resources import ErpResource, ShopResource, open_ledger
from integration_project.routes.config import RouteConfig, WritebackConfig
from integration_project.shopware.client import ShopwareClient

#: The shop's words kept per refusal (ledger and metadata): enough to act on, bounded.
MAX_ERROR_CHARS = 300
#: Acknowledgements recorded in one ledger statement (a connection each costs tens of ms).
ACK_BATCH = 50
#: Refusals shown in the metadata.
PREVIEW_REFUSALS = 10


@dataclass
class WritebackReport:
    enabled: bool
    acknowledged: int = 0
    refused: int = 0
    #: Orders still waiting when the run ended (refused ones included).
    pending_left: int = 0
    #: Why the run stopped before its batch was done (shop unreachable, credentials refused).
    stopped_early: str | None = None
    #: (order number, the shop's words) of this run's refusals.
    refusals: list[tuple[str, str]] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        shown = [f"{number}: {words}" for number, words in self.refusals[:PREVIEW_REFUSALS]]
        metadata: dict[str, Any] = {
            "enabled": self.enabled,
            "acknowledged": self.acknowledged,
            "refused": self.refused,
            "pending_left": self.pending_left,
            "refused_preview": dg.MetadataValue.md(
                "\n".join(f"- {line}" for line in shown) if shown else "none"
            ),
        }
        if self.stopped_early:
            metadata["stopped_early"] = self.stopped_early
        return metadata


def order_changes(config: WritebackConfig, order: WaitingAcknowledgement) -> dict[str, Any]:
    """The ``PATCH`` body that puts ``order``'s ERP number on the shop order."""
    if config.mode == "custom_field":
        return {"customFields": {config.custom_field: order.erp_order_number}}
    name = config.tag_template.format(
        erp_order_number=order.erp_order_number, order_number=order.order_number
    )
    return {"tags": [{"id": tag_id(name), "name": name}]}


def tag_id(name: str) -> str:
    """A tag's id derived from its name, as Shopware's ``Uuid::fromStringToHex`` (MD5 in hex):
    the same name is always the same tag."""
    return hashlib.md5(name.encode("utf-8"), usedforsecurity=False).hexdigest()


def _bounded(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _transient(exc: ApiError) -> bool:
    """No answer, a server error or a rate limit: the shop was not asked, or could not say."""
    return exc.status is None or exc.status >= 500 or exc.status == 429


class WritebackRun:
    """One run: the waiting orders (at most ``max_per_run``), written one by one."""

    def __init__(
        self,
        ledger: Ledger,
        config: WritebackConfig,
        open_client: Callable[[], AbstractContextManager[ShopwareClient]],
        *,
        log: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._ledger = ledger
        self._config = config
        self._open_client = open_client
        self._log = log
        self._sleep = sleep

    def run(self) -> WritebackReport:
        acks = self._ledger.acknowledgements
        if not self._config.enabled:
            return WritebackReport(enabled=False, pending_left=acks.count_waiting())
        report = WritebackReport(enabled=True)
        batch = acks.waiting(self._config.max_per_run)
        if batch:
            with self._open_client() as client:
                self._write_all(client, batch, report)
        report.pending_left = acks.count_waiting()
        return report

    def _write_all(
        self, client: ShopwareClient, batch: list[WaitingAcknowledgement], report: WritebackReport
    ) -> None:
        done: list[str] = []
        try:
            self._write_each(client, batch, report, done)
        finally:  # what the shop took is recorded even when the run dies half-way
            self._ledger.acknowledgements.acknowledged(done)

    def _write_each(
        self,
        client: ShopwareClient,
        batch: list[WaitingAcknowledgement],
        report: WritebackReport,
        done: list[str],
    ) -> None:
        for index, order in enumerate(batch):
            if index and self._config.pause_s:
                self._sleep(self._config.pause_s)
            try:
                client.update_order(order.shop_order_id, order_changes(self._config, order))
            except ValueError as exc:  # an id Shopware would refuse: not sent
                self._refused(order, str(exc), report)
                continue
            except ApiError as exc:
                if isinstance(exc, AuthError) or _transient(exc) or exc.status in (401, 403):
                    # Not this order's fault: the rest would fare the same. Nothing recorded.
                    report.stopped_early = _bounded(str(exc))
                    self._warn(f"write-back stopped, the rest waits for the next run: {exc}")
                    return
                self._refused(order, str(exc), report)
                continue
            done.append(order.shop_order_id)
            report.acknowledged += 1
            if len(done) >= ACK_BATCH:
                self._ledger.acknowledgements.acknowledged(done)
                done.clear()

    def _refused(self, order: WaitingAcknowledgement, text: str, report: WritebackReport) -> None:
        words = _bounded(text)
        self._ledger.acknowledgements.refused(order.shop_order_id, words)
        report.refused += 1
        report.refusals.append((order.order_number, words))

    def _warn(self, text: str) -> None:
        if self._log is not None:
            self._log.warning(text)


def build_writeback_asset(
    route: RouteConfig, erp_delivered_orders: dg.AssetsDefinition
) -> dg.AssetsDefinition:
    """``<route_id>/shop_order_writeback``: the route's delivered orders' ERP numbers written
    back to the shop (:class:`WritebackRun`), after ``erp_delivered_orders``."""
    config = route.writeback
    what = (
        f"custom field {config.custom_field}"
        if config.mode == "custom_field"
        else f"tag {config.tag_template!r}"
    )

    @dg.asset(
        key=[route.id, "shop_order_writeback"],
        deps=[erp_delivered_orders],
        group_name=route.id,
        kinds={"shopware", settings.ledger_kind()},
        required_resource_keys={route.shop_key, route.erp_key, "duckdb"},
        description=f"Each delivered order's ERP order number written back to its Shopware "
        f"order once ({what}; {'on' if config.enabled else 'switched off'}), at most "
        f"{config.max_per_run} a run. Route: {route.name}.",
    )
    def shop_order_writeback(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        shop: ShopResource = getattr(context.resources, route.shop_key)
        erp: ErpResource = getattr(context.resources, route.erp_key)
        ledger = open_ledger(context.resources.duckdb, route.id, erp.token_key)
        if config.enabled:
            ledger.endpoints.bind_shop(shop.api_url)  # the orders' ids belong to one shop
        report = WritebackRun(ledger, config, shop.get_client, log=context.log).run()
        return dg.MaterializeResult(metadata=report.as_metadata())

    return shop_order_writeback


__all__ = [
    "WritebackConfig",
    "WritebackReport",
    "WritebackRun",
    "build_writeback_asset",
    "order_changes",
    "tag_id",
]
