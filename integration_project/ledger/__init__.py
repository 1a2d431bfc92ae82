"""The ledger: every SQL statement of the project, over one DuckDB file (or one PostgreSQL
database, :mod:`.postgres`), one module per concern.

A :class:`Ledger` is one route's view of it: every route table is keyed by ``route_id`` too, so
routes sharing the file never see each other's orders, and each route is bound to one shop and
one ERP division (a ledger used against one ERP refuses to deliver to another). Its stores:

* ``endpoints``      which shop and ERP division the route's rows belong to (:mod:`.endpoints`)
* ``staging``        the shop's orders as fetched (:mod:`.staging`)
* ``source_files``   order files read, by content hash (:mod:`.source_files`)
* ``mapped``         what the transforms made of them (:mod:`.mapped`)
* ``deliveries``     the exactly-once claims and outcomes (:mod:`.deliveries`)
* ``acknowledgements`` the ERP order numbers written back to the shop (:mod:`.acknowledgements`)
* ``lease``          one delivery run sends at a time (:mod:`.lease`)
* ``lookups``        the ERP division's account, item and VAT code caches (:mod:`.lookups`)
* ``views``          read-only queries for checks and metadata (:mod:`.views`)
* ``samples``        sampled checks' last results (:mod:`.samples`)
* ``personal_data``  retention blanking and erasure (:mod:`.personal_data`)
* ``exports``        delivered orders read for the warehouse export (:mod:`.exports`)

The ERP's token store (:class:`DuckDBTokenStore`) lives in the same file, per ERP, not per
route: it is built over :attr:`Ledger.db`. The schema is versioned (:mod:`.migrations`) and
brought up to date on first use (:mod:`.db`).
"""

from __future__ import annotations

from integration_project.ledger.acknowledgements import Acknowledgements
from integration_project.ledger.db import Connect, Database
from integration_project.ledger.deliveries import Deliveries, InFlight, Outcome, PendingOrder
from integration_project.ledger.endpoints import Endpoints, LedgerMismatch, endpoint_host
from integration_project.ledger.exports import Exports
from integration_project.ledger.lease import Leases
from integration_project.ledger.lookups import Lookups
from integration_project.ledger.mapped import MappedOrders, MappingRow, payload_hash
from integration_project.ledger.personal_data import PersonalData
from integration_project.ledger.samples import CheckSamples
from integration_project.ledger.source_files import SourceFile, SourceFiles
from integration_project.ledger.staging import StagedOrder, Staging, parse_created_at, staging_key
from integration_project.ledger.tokens import DuckDBTokenStore
from integration_project.ledger.views import Views

__all__ = [
    "Connect",
    "Database",
    "DuckDBTokenStore",
    "InFlight",
    "Ledger",
    "LedgerMismatch",
    "MappingRow",
    "Outcome",
    "PendingOrder",
    "SourceFile",
    "StagedOrder",
    "endpoint_host",
    "parse_created_at",
    "payload_hash",
    "staging_key",
]


class Ledger:
    """One route's stores over one :class:`Database`. ``erp_key`` names the ERP division
    whose look-up caches (and cached accounts, for retention) the route uses."""

    def __init__(
        self, connect: Connect, route_id: str, erp_key: str = "", *, dialect: str = "duckdb"
    ) -> None:
        self.route_id = route_id
        self.erp_key = erp_key
        self.db = Database(connect, dialect)
        self.endpoints = Endpoints(self.db, route_id)
        self.staging = Staging(self.db, route_id, self.endpoints)
        self.source_files = SourceFiles(self.db, route_id)
        self.mapped = MappedOrders(self.db, route_id)
        self.deliveries = Deliveries(self.db, route_id, self.endpoints)
        self.acknowledgements = Acknowledgements(self.db, route_id)
        self.lease = Leases(self.db)
        self.lookups = Lookups(self.db, erp_key)
        self.views = Views(self.db, route_id)
        self.samples = CheckSamples(self.db, route_id)
        self.personal_data = PersonalData(self.db, route_id, erp_key)
        self.exports = Exports(self.db, route_id, erp_key)
