"""Local stand-ins for the shop (Shopware 6) and the ERP (Exact Online), for tests and demos.

Production code never imports this package; it imports only the wire models and settings.
Start both with :class:`Sandbox` (in-process) or ``integration-sandbox`` (console).
"""

from integration_project.sandbox.common import ManualClock, system_clock
from integration_project.sandbox.data import (
    MALFORMED_KINDS,
    ORDER_STATES,
    STATE_SHARES,
    OrderFactory,
    OrderTruth,
    SandboxData,
)
from integration_project.sandbox.erp import SandboxErp
from integration_project.sandbox.faults import FaultPlan
from integration_project.sandbox.server import Sandbox
from integration_project.sandbox.shop import SandboxShop

__all__ = [
    "MALFORMED_KINDS",
    "ORDER_STATES",
    "STATE_SHARES",
    "FaultPlan",
    "ManualClock",
    "OrderFactory",
    "OrderTruth",
    "Sandbox",
    "SandboxData",
    "SandboxErp",
    "SandboxShop",
    "system_clock",
]
