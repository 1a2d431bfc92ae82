"""The sandbox's marketplace order files are what the CSV route reads: every good order parses
under the route file's own column contract and maps (totals add up, SKUs and VAT rates the
sandbox ERP knows), and each defective row quarantines exactly its order. The ``Sandbox`` drops
a few files over its history and more while arrivals run, each complete when it appears."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from integration_project.connectors.csv_orders import CsvSourceConfig, parse_order_file
from integration_project.routes.config import RouteConfig
from integration_project.sandbox import ManualClock, Sandbox, SandboxData
from integration_project.sandbox.csv_drop import DEFECTS, FILE_ZONE, HEADER, CsvDrop
from integration_project.sandbox.erp_vat import SALES_VAT_CODES
from integration_project.settings import EU_27
from integration_project.transforms import MappedOrder, Quarantined, Skipped, evaluate_order

ROUTE_FILE = Path(__file__).parents[1] / "integration_project/defs/csv_orders_to_exact/defs.yaml"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
NAME = re.compile(r"^marketplace-orders-\d{8}-\d{6}-\d+\.csv$")
#: What the defects are called once parsed (the quarantine's first problem).
PARSED_KIND = {"zero_quantity": "bad_quantity", "bad_country": "bad_country",
               "missing_email": "missing"}  # fmt: skip


@pytest.fixture(scope="module")
def route() -> RouteConfig:
    document = yaml.safe_load(ROUTE_FILE.read_text())
    return RouteConfig.model_validate(document["attributes"])


@pytest.fixture(scope="module")
def source(route: RouteConfig) -> CsvSourceConfig:
    assert isinstance(route.source, CsvSourceConfig)
    return route.source


def drop_files(folder: Path, seed: int, count: int, bad_rows: int) -> CsvDrop:
    drop = CsvDrop(folder, data=SandboxData.build(seed), seed=seed, clock=ManualClock(NOW))
    for n in range(count):
        drop.write_file(NOW + timedelta(minutes=3 * n), 6, bad_rows=bad_rows)
    return drop


def test_the_files_header_is_the_route_files_columns(source: CsvSourceConfig) -> None:
    assert sorted(source.columns.values()) == sorted(HEADER)
    assert (source.delimiter, source.decimal_separator) == (";", ",")
    assert (source.tax_status, source.timezone) == ("gross", FILE_ZONE.key)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_good_orders_parse_and_map_with_the_totals_written(
    tmp_path: Path, route: RouteConfig, source: CsvSourceConfig, seed: int
) -> None:
    drop = drop_files(tmp_path, seed, count=8, bad_rows=0)
    data = drop.data
    mapped, skipped, lines, currencies = [], [], [], set()
    for dropped in drop.files:
        parsed = parse_order_file(dropped.path.read_bytes(), dropped.path.name, source)
        assert parsed.quarantined == [], parsed.quarantined
        assert [o["orderNumber"] for o in parsed.orders] == list(dropped.totals)
        for order in parsed.orders:
            total = dropped.totals[order["orderNumber"]]
            assert Decimal(repr(order["amountTotal"])) == total
            goods = sum(Decimal(repr(i["totalPrice"])) for i in order["lineItems"])
            assert goods + Decimal(repr(order["shippingTotal"])) == total
            lines.append(len(order["lineItems"]))
            currencies.add(order["currency"]["isoCode"])
            outcome = evaluate_order(order, route.rules())
            assert not isinstance(outcome, Quarantined), outcome.reason
            (mapped if isinstance(outcome, MappedOrder) else skipped).append(outcome)
    assert len(mapped) > 30 and skipped, (len(mapped), len(skipped))  # EU and exports
    assert all(isinstance(s, Skipped) and s.country not in EU_27 for s in skipped)
    assert max(lines) >= 3 and min(lines) >= 2
    known = {product.sku for product in data.products} | {route.rules().shipping_item_code}
    totals = {number: total for d in drop.files for number, total in d.totals.items()}
    for order in mapped:
        assert order.amount_total == totals[order.order_number]
        assert set(order.item_codes) <= known  # the sandbox ERP has every item
        assert {float(r) for r in order.vat_rates_to_look_up} <= set(SALES_VAT_CODES)
        assert abs(order.invoice_total - order.amount_total) <= Decimal("0.01") * len(order.lines)
    assert "EUR" in currencies


def test_times_are_berlin_wall_clock_without_offset(
    tmp_path: Path, source: CsvSourceConfig
) -> None:
    drop = drop_files(tmp_path, 0, count=1, bad_rows=0)
    path = drop.files[0].path
    first = path.read_text(encoding="utf-8").splitlines()[1].split(";")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", first[HEADER.index("Ordered at")])
    for order in parse_order_file(path.read_bytes(), path.name, source).orders:
        created = datetime.fromisoformat(order["createdAt"])
        assert NOW - timedelta(minutes=3) < created <= NOW  # 13:00 in Berlin is 12:00 UTC


@pytest.mark.parametrize("seed", [0, 5])
def test_bad_rows_quarantine_exactly_their_orders(
    tmp_path: Path, source: CsvSourceConfig, seed: int
) -> None:
    drop = drop_files(tmp_path, seed, count=10, bad_rows=2)
    kinds = set()
    for dropped in drop.files:
        parsed = parse_order_file(dropped.path.read_bytes(), dropped.path.name, source)
        assert len(dropped.defects) == 2
        quarantined = {q.order_number: q for q in parsed.quarantined}
        assert set(quarantined) == set(dropped.defects)
        for number, defect in dropped.defects.items():
            assert quarantined[number].kind == PARSED_KIND[defect]
            assert len(quarantined[number].lines) == 1 or defect != "missing_email"
            kinds.add(defect)
        good = {o["orderNumber"] for o in parsed.orders}
        assert good == set(dropped.totals) - set(dropped.defects)
        # A defect is one row of the order: the file has one bad row per defective order.
        assert parsed.report["rows"] == len(dropped.path.read_text().splitlines()) - 1
    assert kinds == set(DEFECTS)


def test_files_appear_complete_with_unique_names_and_order_numbers(tmp_path: Path) -> None:
    drop = drop_files(tmp_path, 3, count=5, bad_rows=1)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(d.path.name for d in drop.files) and len(names) == 5
    assert all(NAME.match(name) for name in names), names
    numbers = [n for d in drop.files for n in d.totals]
    assert len(numbers) == len(set(numbers)) == 30
    assert all(re.fullmatch(r"M-[0-9A-F]{6}-\d+", n) for n in numbers)
    again = drop_files(tmp_path / "again", 3, count=5, bad_rows=1)
    assert [d.path.read_bytes() for d in again.files] == [d.path.read_bytes() for d in drop.files]
    with pytest.raises(ValueError, match="bad_rows"):
        drop.write_file(NOW, 2, bad_rows=3)


def test_sandbox_drops_history_files_then_new_ones(tmp_path: Path, source: CsvSourceConfig) -> None:
    folder = tmp_path / "orders"
    with Sandbox(
        seed=4,
        history=timedelta(minutes=30),
        orders_per_minute=0.5,
        csv_folder=folder,
        csv_every=timedelta(seconds=0.2),
    ) as sandbox:
        assert sandbox.env()["CSV_ORDERS_FOLDER"] == str(folder)
        drop = sandbox.csv_drop
        assert drop is not None
        history = list(drop.files)
        assert 1 <= len(history) <= 4 and sum(len(d.defects) for d in history) == 1
        deadline = time.monotonic() + 10
        while len(drop.files) < len(history) + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(drop.files) >= len(history) + 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(d.path.name for d in drop.files)
    for dropped in drop.files:
        parsed = parse_order_file(dropped.path.read_bytes(), dropped.path.name, source)
        assert {o["orderNumber"] for o in parsed.orders} == set(dropped.totals) - set(
            dropped.defects
        )


def test_no_folder_no_files_and_no_thread(tmp_path: Path) -> None:
    with Sandbox(orders_per_minute=1, history=timedelta(minutes=10)) as sandbox:
        assert sandbox.csv_drop is None and "CSV_ORDERS_FOLDER" not in sandbox.env()
        assert "sandbox-csv-drops" not in {t.name for t in threading.enumerate()}
