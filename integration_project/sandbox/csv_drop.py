"""Marketplace order files for the sandbox's CSV route: a folder the sandbox fills with CSV exports.

The files are what the quick start's third route (``defs/csv_orders_to_exact``) declares:
semicolon-separated, decimal comma, gross prices, times in Europe/Berlin without an offset, one
row per order line with the order's columns repeated on each (the header once, at the top):

    Order;Ordered at;E-mail;First name;Last name;Company;Country;Street;Postcode;City;Currency;
    Shipping;Total;SKU;Product;Qty;Unit price;VAT %

The orders are drawn from the same :class:`~integration_project.sandbox.world.SandboxData` as the
shops', so the sandbox ERP knows every SKU and about half the customers: mostly EU destinations
(VAT at the destination's rate for the product's tax class, as the ERP's VAT codes expect), a
few exports (0 %), several lines each, a shipping charge, and a Total that is the lines plus the
shipping. A file can carry defects a real export has (``bad_rows``): a quantity of 0, a country
written as ``UK`` or as an alpha-3 code, an order without an e-mail address; the route
quarantines exactly those orders.

Each file is written under a ``.part`` name and renamed when complete, as a well-behaved export
does, so the route never reads half a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from integration_project.sandbox.common import Clock, system_clock
from integration_project.sandbox.world import (
    COUNTRIES,
    CURRENCIES,
    TAX_CLASSES,
    VAT_RATES,
    Customer,
    Product,
    SandboxData,
    draw_country,
)

#: The header, in the order the marketplace exports its columns (the route's ``columns``).
HEADER = (
    "Order", "Ordered at", "E-mail", "First name", "Last name", "Company", "Country", "Street",
    "Postcode", "City", "Currency", "Shipping", "Total", "SKU", "Product", "Qty", "Unit price",
    "VAT %",
)  # fmt: skip
#: The zone the marketplace writes its times in (without an offset).
FILE_ZONE = ZoneInfo("Europe/Berlin")
FILE_PREFIX = "marketplace-orders-"
#: Defects a row can carry; each quarantines its order.
DEFECTS = ("zero_quantity", "bad_country", "missing_email")
#: Shipping per zone in EUR cents, gross.
_SHIPPING_EUR_CENTS = {"DE": 490, "EU": 690, "WORLD": 1490}
#: Share of orders that may ship outside the EU (then drawn by weight, as the shops do).
_MAY_EXPORT = 0.4


@dataclass(frozen=True)
class DroppedFile:
    """A file written: its path, each order's Total as written, and the orders given a defect
    (order number -> one of :data:`DEFECTS`)."""

    path: Path
    totals: dict[str, Decimal]
    defects: dict[str, str] = field(default_factory=dict)


def _money(cents: int) -> str:
    """Cents as the file writes amounts: ``1234`` -> ``12,34``."""
    return f"{cents // 100},{cents % 100:02d}"


def _in_currency(eur_cents: int, currency: str) -> int:
    """The sandbox shops' conversion: the EUR price times the currency's factor, half up."""
    factor = CURRENCIES[currency][2]
    return eur_cents if factor == 1.0 else math.floor(eur_cents * factor + 0.5)


def _vat_rate(ship: str, product: Product) -> float:
    """The destination's rate for the product's class; 0 for an export outside the EU."""
    if ship not in VAT_RATES:
        return 0.0
    return VAT_RATES[ship][TAX_CLASSES[product.tax_class]]


def _bad_country(ship: str) -> str:
    """What exports get wrong: the United Kingdom as ``UK``, else the alpha-3 code."""
    return "UK" if ship == "GB" else COUNTRIES[ship][1]


class CsvDrop:
    """Writes marketplace order files into ``folder`` (created when the first file is written).

    Order numbers are ``M-<prefix>-<n>``, counted across the files of this drop; the prefix
    comes from ``seed`` and the clock's time at construction, so a sandbox started again into a
    folder it did not empty writes new numbers, and the same seed and clock write the same files.
    ``files`` lists what was written, defects included, for tests to check the route against.
    """

    def __init__(
        self, folder: Path, *, data: SandboxData, seed: int = 0, clock: Clock = system_clock
    ) -> None:
        self.folder = Path(folder)
        self.data = data
        self.seed = seed
        self.clock = clock
        started = clock().astimezone(UTC).strftime("%Y%m%d%H%M%S")
        digest = hashlib.sha256(f"{seed}:{started}".encode()).hexdigest()
        self.prefix = f"M-{digest[:6].upper()}"
        self.files: list[DroppedFile] = []
        self._orders = 0
        self._rng = random.Random(f"csv-drop:{seed}")

    def write_file(
        self,
        moment: datetime | None = None,
        orders: int = 3,
        *,
        bad_rows: int = 0,
        spread: timedelta = timedelta(minutes=3),
    ) -> Path:
        """A file of ``orders`` orders placed over ``(moment - spread, moment]`` (default:
        now), ``bad_rows`` of them with one defective row each; its final path."""
        if not 0 <= bad_rows <= orders:
            raise ValueError(f"bad_rows must be between 0 and orders ({orders}), not {bad_rows}")
        moment = (moment or self.clock()).astimezone(UTC)
        rng = self._rng
        kinds = [rng.choice(DEFECTS) for _ in range(bad_rows)]
        defective = dict(zip(sorted(rng.sample(range(orders), bad_rows)), kinds, strict=True))
        seconds = spread.total_seconds()
        offsets = sorted((rng.uniform(0, seconds) for _ in range(orders)), reverse=True)
        rows: list[list[str]] = []
        totals: dict[str, Decimal] = {}
        defects: dict[str, str] = {}
        for index, offset in enumerate(offsets):
            self._orders += 1
            number = f"{self.prefix}-{self._orders}"
            defect = defective.get(index)
            order_rows, total = self._order(rng, number, moment - timedelta(seconds=offset), defect)
            rows += order_rows
            totals[number] = Decimal(total) / 100
            if defect is not None:
                defects[number] = defect
        path = self._write(moment, rows)
        self.files.append(DroppedFile(path, totals, defects))
        return path

    def _order(
        self, rng: random.Random, number: str, created: datetime, defect: str | None
    ) -> tuple[list[list[str]], int]:
        """The rows of one order and its Total in cents."""
        customer = rng.choice(self.data.customers)
        ship = draw_country(rng, eu_only=rng.random() >= _MAY_EXPORT)
        currency = COUNTRIES[ship][2]
        # An order without an e-mail has one line: the defect is then on exactly one row.
        count = 1 if defect == "missing_email" else rng.randint(2, 4)
        lines = [
            (product, rng.choice((1, 1, 1, 2, 3)))
            for product in rng.sample(self.data.products, count)
        ]
        zone = "DE" if ship == "DE" else "EU" if ship in VAT_RATES else "WORLD"
        shipping = _in_currency(_SHIPPING_EUR_CENTS[zone], currency)
        units = [_in_currency(round(product.price * 100), currency) for product, _ in lines]
        total = shipping + sum(unit * qty for unit, (_, qty) in zip(units, lines, strict=True))
        head = self._head(number, created, customer, ship, currency, shipping, total)
        rows = []
        for unit, (product, quantity) in zip(units, lines, strict=True):
            rate = f"{_vat_rate(ship, product):g}".replace(".", ",")
            rows.append([*head, product.sku, product.name, str(quantity), _money(unit), rate])
        if defect is not None:
            self._spoil(rng, rows, defect)
        return rows, total

    @staticmethod
    def _head(
        number: str,
        created: datetime,
        customer: Customer,
        ship: str,
        currency: str,
        shipping: int,
        total: int,
    ) -> list[str]:
        """The order's columns, repeated on each of its rows."""
        street, postcode, city = COUNTRIES[ship][3]
        house = int(hashlib.sha256(number.encode()).hexdigest()[:4], 16) % 120 + 1
        return [
            number,
            created.astimezone(FILE_ZONE).strftime("%Y-%m-%d %H:%M:%S"),
            customer.email,
            customer.first_name,
            customer.last_name,
            customer.company or "",
            ship,
            f"{street} {house}",
            postcode,
            city,
            currency,
            _money(shipping),
            _money(total),
        ]

    @staticmethod
    def _spoil(rng: random.Random, rows: list[list[str]], defect: str) -> None:
        """One row of the order gets ``defect`` (the e-mail goes from the order's only row)."""
        row = rng.choice(rows)
        if defect == "zero_quantity":
            row[HEADER.index("Qty")] = "0"
        elif defect == "bad_country":
            column = HEADER.index("Country")
            row[column] = _bad_country(row[column])
        else:
            row[HEADER.index("E-mail")] = ""

    def _write(self, moment: datetime, rows: list[list[str]]) -> Path:
        """The file under a ``.part`` name first, renamed once complete and on disk."""
        text = io.StringIO()
        writer = csv.writer(text, delimiter=";", lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{FILE_PREFIX}{moment:%Y%m%d-%H%M%S}-{len(self.files) + 1}.csv"
        final = self.folder / name
        partial = self.folder / f"{name}.part"
        with partial.open("wb") as handle:
            handle.write(text.getvalue().encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
        return final
