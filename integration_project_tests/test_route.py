"""The route end to end, in process: all three assets against the sandbox over real HTTP and a
real DuckDB file. Assertions are on what a user sees: what reached the ERP, what the ledger
says, and the metadata the UI shows."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

import dagster as dg
import pytest

from integration_project.sandbox import Sandbox
from integration_project.settings import PARTITION_FORMAT
from integration_project_testkit.invoices import assert_invoiced_as_paid, by_ref
from integration_project_testkit.ledger_reads import delivered_rows
from integration_project_testkit.resources import make_resources
from integration_project_testkit.routes import default_assets, route_assets
from integration_project_testkit.windows import (
    WINDOW_END,
    WINDOW_KEY,
    WINDOW_START,
    deliver,
    erp_refs,
    failure_message,
    fetch_and_map,
    metadata,
)

DEFAULT = default_assets()
source_orders = DEFAULT.source_orders

pytestmark = pytest.mark.integration


@pytest.fixture
def duckdb_path(ledger_location: str) -> str:
    """Every test here runs on both ledger backends: a DuckDB file and a PostgreSQL database."""
    return ledger_location


def seed_window(sb: Sandbox) -> None:
    """A realistic window: valid EU orders, non-EU ones, mixed countries and bad ones."""
    sb.shop.add_orders(8, start=WINDOW_START, end=WINDOW_END)
    sb.shop.add_order(WINDOW_START + timedelta(seconds=30), shipping_country="US")
    sb.shop.add_order(
        WINDOW_START + timedelta(seconds=40), shipping_country="GB", billing_country="DE"
    )
    sb.shop.add_order(
        WINDOW_START + timedelta(seconds=50), shipping_country="DE", billing_country="CH"
    )
    for kind in ("missing_email", "unknown_sku", "zero_quantity", "no_line_items"):
        sb.shop.add_order(WINDOW_START + timedelta(minutes=1), malformed=kind)
    # Just outside the half-open window, on both sides.
    sb.shop.add_order(WINDOW_START - timedelta(milliseconds=1))
    sb.shop.add_order(WINDOW_END)


def expected_refs(sb: Sandbox) -> set[str]:
    """Valid EU orders of the window and of the look-back before it (late orders)."""
    start = WINDOW_START - DEFAULT.route.lookback
    return {t.order_number for t in sb.shop.truth_between(start, WINDOW_END) if t.expected_in_erp}


def test_window_reaches_the_erp_exactly_once_with_everything_mapped(sandbox, resources, ledger):
    seed_window(sandbox)
    expected = expected_refs(sandbox)
    assert len(expected) >= 8

    mapped = fetch_and_map(resources)
    assert mapped.success
    fetched = metadata(mapped, "source_orders")
    assert fetched["dagster/row_count"] == 15  # 8 + 3 + 4 in the window
    assert fetched["fetched"] == 15  # only the window: a route's first fetch has no cursor
    mapping = metadata(mapped, "erp_orders")
    assert mapping["mapped"] == len(expected)
    assert mapping["quarantined"] == 4
    assert mapping["dropped_non_eu"] == 2
    assert "orderCustomer.email" in mapping["quarantined_preview"]
    assert not sandbox.erp.sales_orders  # mapping never writes to the ERP

    delivered = deliver(resources)
    assert delivered.success
    meta = metadata(delivered, "erp_delivered_orders")
    assert meta["sent"] == len(expected)
    assert meta["failed"] == 0
    assert meta["pending_left"] == 0
    assert meta["dagster/row_count"] == len(expected)
    # The latest deliveries as a typed table: which shop order became which ERP order, when.
    latest = meta["latest_delivered"]
    assert [(column.name, column.type) for column in latest.schema.columns] == [
        ("order_number", "string"),
        ("your_ref", "string"),
        ("erp_order_number", "int"),
        ("delivered_at", "timestamp (UTC)"),
    ]
    assert len(latest.records) == min(10, len(expected))
    shown = latest.records[0].data
    [erp_order] = [o for o in sandbox.erp.sales_orders if o["YourRef"] == shown["your_ref"]]
    assert shown["order_number"] == shown["your_ref"]
    assert shown["erp_order_number"] == erp_order["OrderNumber"]
    assert shown["delivered_at"].endswith("+00:00")

    refs = erp_refs(sandbox)
    assert set(refs) == expected
    assert all(n == 1 for n in refs.values())

    # Customer, items, quantities, prices and currency as the shop had them.
    truth = {t.order_number: t for t in sandbox.shop.truth.values()}
    shop_orders = {o["orderNumber"]: o for o in sandbox.shop.orders.values()}
    accounts = {a["ID"]: a for a in sandbox.erp.accounts.values()}
    items = {i["ID"]: i for i in sandbox.erp.items.values()}
    for erp_order in sandbox.erp.sales_orders:
        ref = erp_order["YourRef"]
        shop_order = shop_orders[ref]
        assert accounts[erp_order["OrderedBy"]]["Email"] == truth[ref].customer_email
        assert erp_order["Currency"] == shop_order["currency"]["isoCode"]
        products = [li for li in shop_order["lineItems"] if li["type"] == "product"]
        lines = erp_order["SalesOrderLines"]
        product_lines = [
            line for line in lines if items[line["Item"]]["Code"] not in ("SHIPPING", "DISCOUNT")
        ]
        assert [items[line["Item"]]["Code"] for line in product_lines] == [
            li["payload"]["productNumber"] for li in products
        ]
        assert [line["Quantity"] for line in product_lines] == [li["quantity"] for li in products]
        # Prices go without VAT: each product line's net price is its gross price less the VAT
        # of its rate, and it names that rate's code in the division.
        for line, item in zip(product_lines, products, strict=True):
            [tax] = item["price"]["calculatedTaxes"]
            net = (Decimal(str(tax["price"])) - Decimal(str(tax["tax"]))) / item["quantity"]
            assert abs(Decimal(str(line["NetPrice"])) - net) < Decimal("0.0001")
            code = sandbox.erp.vat_code(line["VATCode"])
            assert Decimal(str(code["Percentage"])) * 100 == Decimal(str(tax["taxRate"]))
        shipping = [line for line in lines if items[line["Item"]]["Code"] == "SHIPPING"]
        shipping_taxes = (shop_order["shippingCosts"] or {}).get("calculatedTaxes") or []
        assert len(shipping) == (len(shipping_taxes) if shop_order["shippingTotal"] else 0)
        promotions = [li for li in shop_order["lineItems"] if li["type"] == "promotion"]
        discounts = [line for line in lines if items[line["Item"]]["Code"] == "DISCOUNT"]
        assert len(discounts) == sum(len(p["price"]["calculatedTaxes"]) for p in promotions)

    # What the ERP will invoice is what each customer paid.
    assert assert_invoiced_as_paid(sandbox.erp, by_ref(shop_orders.values())) == len(expected)

    # The ledger matches the ERP one to one.
    rows = delivered_rows(ledger)
    erp_ids = {o["YourRef"]: o["OrderID"] for o in sandbox.erp.sales_orders}
    assert {r["order_number"]: r["erp_order_id"] for r in rows} == erp_ids
    assert {r["status"] for r in rows} == {"delivered"}
    assert all(r["attempts"] == 1 and r["delivered_at"] is not None for r in rows)


def test_second_delivery_sends_nothing_and_refetch_stages_nothing_twice(sandbox, resources, ledger):
    seed_window(sandbox)
    assert fetch_and_map(resources).success
    assert deliver(resources).success
    before = erp_refs(sandbox)
    post_calls = sandbox.erp.calls.copy()

    again = deliver(resources)
    assert metadata(again, "erp_delivered_orders")["sent"] == 0
    assert erp_refs(sandbox) == before
    assert sandbox.erp.calls.get("salesorders_post", 0) == post_calls.get("salesorders_post", 0)

    refetched = fetch_and_map(resources)
    meta = metadata(refetched, "source_orders")
    assert meta["refetched"] == 15 and ledger.staging.count(WINDOW_START, WINDOW_END) == 15
    # The order 1 ms before the window was stored after the window's orders: for the route,
    # a late order of the window before, read once by the cursor and delivered like any.
    [just_before] = sandbox.shop.truth_between(WINDOW_START - timedelta(seconds=1), WINDOW_START)
    assert (meta["new"], meta["late"]) == (1, 1)
    sent = metadata(deliver(resources), "erp_delivered_orders")["sent"]
    assert sent == int(just_before.expected_in_erp)
    after = erp_refs(sandbox)
    assert after - before == Counter({just_before.order_number: 1} if sent else {})
    assert all(after[ref] == 1 for ref in before)


def test_all_pages_are_fetched(sandbox, resources, ledger):
    sandbox.shop.add_orders(23, start=WINDOW_START, end=WINDOW_END)
    result = fetch_and_map(resources, assets=route_assets(page_size=5))
    meta = metadata(result, "source_orders")
    assert meta["fetched"] == 23
    assert meta["pages"] == 5
    assert ledger.staging.count(WINDOW_START, WINDOW_END) == 23


def test_unmappable_erp_order_fails_once_and_is_not_resent(sandbox, resources, ledger):
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END)
    bad = sandbox.shop.add_order(WINDOW_START + timedelta(minutes=2))
    bad["currency"]["isoCode"] = "XAU"  # looks like ISO 4217, but the ERP refuses it
    assert fetch_and_map(resources).success

    first = metadata(deliver(resources), "erp_delivered_orders")
    assert (first["sent"], first["failed"]) == (2, 1)
    [failed] = [r for r in delivered_rows(ledger) if r["status"] == "failed"]
    assert failed["order_number"] == bad["orderNumber"]
    assert "XAU" in failed["last_error"]

    posts = sandbox.erp.calls["salesorders_post"]
    second = metadata(deliver(resources), "erp_delivered_orders")
    assert (second["sent"], second["failed"]) == (0, 0)
    # Nor after the next tick's look-back maps the window again (the order is unchanged).
    assert fetch_and_map(resources).success
    third = metadata(deliver(resources), "erp_delivered_orders")
    assert (third["sent"], third["failed"]) == (0, 0)
    assert sandbox.erp.calls["salesorders_post"] == posts  # no POST after the first run's
    [row] = [r for r in delivered_rows(ledger) if r["order_number"] == bad["orderNumber"]]
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert bad["orderNumber"] not in erp_refs(sandbox)


def test_a_vat_code_the_erp_refuses_fails_that_order_with_exacts_words(sandbox, resources, ledger):
    sandbox.shop.add_order(WINDOW_START, shipping_country="DE", skus=["SW10002"])  # 19 %
    fi = sandbox.shop.add_order(WINDOW_START + timedelta(minutes=1), shipping_country="FI")
    assert fetch_and_map(resources).success
    # An accountant blocks the 25.5 % code after the mapping chose it.
    sandbox.erp.vat_code("255")["IsBlocked"] = True

    meta = metadata(deliver(resources), "erp_delivered_orders")

    assert (meta["sent"], meta["failed"]) == (1, 1)
    [failed] = [r for r in delivered_rows(ledger) if r["status"] == "failed"]
    assert failed["order_number"] == fi["orderNumber"]
    assert "VAT code '255' is blocked" in failed["last_error"]


def test_an_order_whose_rate_has_no_vat_code_is_quarantined_naming_the_rate(
    sandbox, resources, ledger
):
    # The division has no code at 5.5 % (France's reduced rate) any more.
    del sandbox.erp.vat_codes[sandbox.erp.vat_code("55")["ID"]]
    sandbox.shop.add_order(WINDOW_START, shipping_country="FR", skus=["SW10001"])  # coffee

    mapping = metadata(fetch_and_map(resources), "erp_orders")

    assert (mapping["mapped"], mapping["quarantined"]) == (0, 1)
    assert "no ERP VAT code for 5.5 %" in mapping["quarantined_preview"]
    assert "Kaffeebohnen" in mapping["quarantined_preview"]  # the line it concerns


def test_response_lost_after_commit_is_recovered_by_your_ref(sandbox, resources, ledger):
    sandbox.shop.add_orders(3, start=WINDOW_START, end=WINDOW_END)
    assert fetch_and_map(resources).success
    sandbox.erp.faults.add(
        "lost_after_commit", path_contains="salesorder/SalesOrders", method="POST", times=1
    )

    first = metadata(deliver(resources), "erp_delivered_orders")
    assert first["unknown_outcome"] == 1
    assert first["sent"] == 2
    assert len(sandbox.erp.sales_orders) == 3  # the ERP did store the lost one
    assert [r["status"] for r in delivered_rows(ledger)].count("sending") == 1

    second = metadata(deliver(resources), "erp_delivered_orders")
    assert second["found_in_erp"] == 1
    assert second["sent"] == 0
    refs = erp_refs(sandbox)
    assert len(refs) == 3 and set(refs.values()) == {1}
    rows = delivered_rows(ledger)
    assert {r["status"] for r in rows} == {"delivered"}
    # The recovered row records the sales order the ERP holds, found by its YourRef.
    erp_ids = {o["YourRef"]: o["OrderID"] for o in sandbox.erp.sales_orders}
    assert {r["order_number"]: r["erp_order_id"] for r in rows} == erp_ids
    assert all(r["attempts"] == 1 for r in rows)  # found, not sent a second time


def test_shop_http_error_fails_the_run_naming_url_and_status_and_keeps_staging(
    sandbox, resources, ledger
):
    sandbox.shop.add_orders(3, start=WINDOW_START, end=WINDOW_END)
    assert fetch_and_map(resources).success
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END)
    sandbox.shop.faults.add("503", path_contains="/api/search/order", times=5)

    result = dg.materialize(
        [source_orders], partition_key=WINDOW_KEY, resources=resources, raise_on_error=False
    )
    assert not result.success
    message = failure_message(result)
    assert "/api/search/order" in message and "503" in message
    assert ledger.staging.count(WINDOW_START, WINDOW_END) == 3  # unchanged


def test_shop_answer_that_is_not_json_fails_the_run(sandbox, resources, ledger):
    sandbox.shop.add_orders(3, start=WINDOW_START, end=WINDOW_END)
    sandbox.shop.faults.add("malformed_json", path_contains="/api/search/order", times=1)
    result = dg.materialize(
        [source_orders], partition_key=WINDOW_KEY, resources=resources, raise_on_error=False
    )
    assert not result.success
    assert "not JSON" in failure_message(result)
    assert ledger.staging.count(WINDOW_START, WINDOW_END) == 0


def test_wrong_shop_secret_names_the_variable_not_the_value(sandbox, duckdb_path):
    secret = "wrong-secret-7f3a9c"
    resources = make_resources(sandbox, duckdb_path, shop={"client_secret": secret})
    result = dg.materialize(
        [source_orders], partition_key=WINDOW_KEY, resources=resources, raise_on_error=False
    )
    assert not result.success
    message = failure_message(result)
    assert "SHOP_CLIENT_SECRET" in message
    logs = "".join(str(e) for e in result.all_events)
    assert secret not in message and secret not in logs


def test_a_second_delivery_run_waits_while_one_holds_the_lease(sandbox, resources, ledger):
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END)
    assert fetch_and_map(resources).success
    assert metadata(deliver(resources), "erp_delivered_orders")["sent"] == 2
    sandbox.shop.add_orders(1, start=WINDOW_START, end=WINDOW_END)
    assert fetch_and_map(resources).success
    assert (
        ledger.lease.acquire(
            f"erp_delivery:{DEFAULT.route.id}", "another-run", timedelta(minutes=3)
        )
        is None
    )
    blocked = metadata(deliver(resources), "erp_delivered_orders")
    assert blocked["sent"] == 0
    assert "another-run" in blocked["skipped"]
    # The ledger's totals, not an empty row count hiding what the sending run does.
    assert blocked["sending_run"] == "another-run"
    assert blocked["dagster/row_count"] == blocked["ledger_delivered"] == 2
    assert blocked["pending_left"] == 1
    assert len(sandbox.erp.sales_orders) == 2
    ledger.lease.release(f"erp_delivery:{DEFAULT.route.id}", "another-run")
    assert metadata(deliver(resources), "erp_delivered_orders")["sent"] == 1


def test_a_long_delivery_reports_its_progress_while_it_sends(sandbox, resources):
    """Every 50 orders a delivery run records an observation of the asset (the UI's asset
    events) and logs a line, so a run sending hundreds is visible before it ends."""
    sandbox.erp.minute_limit = 10_000  # 60 orders' accounts and items: no minute waits
    sandbox.shop.add_orders(60, start=WINDOW_START, end=WINDOW_END)
    assert fetch_and_map(resources).success
    mapped = len(expected_refs(sandbox))
    assert mapped > 50
    result = deliver(resources)
    [observation] = [
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    progress = {k: v.value for k, v in observation.metadata.items()}
    assert progress["handled"] == 50 and progress["of"] == mapped
    assert progress["sent_so_far"] == 50 and progress["in_progress_run"] == result.run_id
    assert metadata(result, "erp_delivered_orders")["sent"] == mapped


def test_delivery_paces_itself_under_a_tight_rate_limit(sandbox, resources):
    sandbox.shop.add_orders(6, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    assert fetch_and_map(resources).success
    sandbox.erp.set_rate_limit(per_minute=4, minute_window_s=1.0)
    meta = metadata(deliver(resources), "erp_delivered_orders")
    assert meta["sent"] == 6
    assert len(sandbox.erp.sales_orders) == 6
    # Paced, not pushed: it waited for each minute's reset instead of earning 429s and
    # waiting those out (which would also end with six orders sent).
    assert sandbox.erp.statuses[429] == 0


def test_missing_secret_for_a_real_shop_names_the_variable(
    sandbox, duckdb_path, monkeypatch
) -> None:
    """Pointing at a real shop without its secret must not fall back to sandbox credentials."""
    from integration_project.resources import duckdb_resource, route_resources

    monkeypatch.setenv("SHOP_API_URL", sandbox.shop_url)
    monkeypatch.setenv("SHOP_CLIENT_ID", "some-id")
    monkeypatch.delenv("SHOP_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("INTEGRATION_DUCKDB_PATH", duckdb_path)
    resources = {**route_resources(DEFAULT.route), "duckdb": duckdb_resource()}
    assert DEFAULT.route.missing_env() == [("source.client_secret_env", "SHOP_CLIENT_SECRET")]
    with pytest.raises(Exception, match="SHOP_CLIENT_SECRET"):
        dg.materialize([source_orders], partition_key=WINDOW_KEY, resources=resources)


def test_an_order_that_shows_up_two_hours_late_is_delivered_by_the_next_tick(
    sandbox, resources, ledger
):
    """The shop stores an order two hours after its createdAt, long after its window was
    fetched and delivered. The next tick asks the shop for what it stored since the route's
    last fetch (autoIncrement), so the order is staged under its own window, caught up by the
    mapping and delivered, and no old window is read again."""
    assert DEFAULT.route.late_orders >= timedelta(hours=2) and not DEFAULT.route.lookback
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    assert fetch_and_map(resources).success
    assert metadata(deliver(resources), "erp_delivered_orders")["sent"] == 2

    two_hours_on = WINDOW_START + timedelta(hours=2)
    sandbox.shop.add_orders(
        3, start=two_hours_on, end=two_hours_on + timedelta(minutes=5), shipping_country="AT"
    )
    late = sandbox.shop.add_order(WINDOW_START + timedelta(minutes=2), shipping_country="NL")
    result = fetch_and_map(resources, partition_key=two_hours_on.strftime(PARTITION_FORMAT))
    fetched = metadata(result, "source_orders")
    # The window's three and the late one, each read once: two searches, no re-reading.
    assert (fetched["fetched"], fetched["late"], fetched["new"]) == (4, 1, 4)
    assert fetched["pages"] == 2
    assert metadata(result, "erp_orders")["caught_up"] == 1
    assert metadata(deliver(resources), "erp_delivered_orders")["sent"] == 4
    refs = erp_refs(sandbox)
    assert refs[late["orderNumber"]] == 1 and len(refs) == 6


def test_without_late_orders_a_tick_reads_only_its_window(sandbox, resources, ledger):
    """``late_orders: 0m`` (a shop whose orders carry no autoIncrement): one search per tick,
    by createdAt alone; a late order waits for a look-back or a re-run of its window."""
    assets = route_assets(late_orders="0m")
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    assert fetch_and_map(resources, assets=assets).success
    sandbox.shop.add_order(WINDOW_START + timedelta(minutes=2), shipping_country="NL")
    later = (WINDOW_START + timedelta(hours=2)).strftime(PARTITION_FORMAT)
    result = fetch_and_map(resources, partition_key=later, assets=assets)
    fetched = metadata(result, "source_orders")
    assert (fetched["fetched"], fetched["late"], fetched["pages"]) == (0, 0, 1)
    again = metadata(fetch_and_map(resources, assets=assets), "source_orders")
    assert (again["fetched"], again["new"]) == (3, 1)  # the re-run of its window finds it


def test_orders_whose_mapping_failed_beyond_the_look_back_are_mapped_by_a_later_tick(
    sandbox, resources, ledger
):
    """The ERP was down while a window was mapped, for longer than the look-back: its staged
    orders are still mapped (and delivered) by the next successful erp_orders run."""
    sandbox.shop.add_orders(8, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    sandbox.erp.faults.add("503", times=500)  # every ERP look-up fails for this run
    failed = fetch_and_map(resources, raise_on_error=False)
    assert not failed.success  # five orders in a row could not be mapped: the ERP is down
    assert "answered 503" in failure_message(failed)
    assert not ledger.deliveries.pending()
    sandbox.erp.faults.clear()

    later = "2026-11-20-12:00"  # two hours on: far beyond the route's one-hour look-back
    assert DEFAULT.route.lookback < timedelta(hours=2)
    meta = metadata(fetch_and_map(resources, partition_key=later), "erp_orders")
    assert meta["caught_up"] == 8 and meta["mapped"] == 8
    assert metadata(deliver(resources), "erp_delivered_orders")["sent"] == 8
    assert len(erp_refs(sandbox)) == 8


def test_a_transient_erp_error_defers_one_order_without_failing_the_window(
    sandbox, resources, ledger
):
    orders = sandbox.shop.add_orders(4, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    # One order's account look-up: its GET and the one retry the test resources allow.
    sandbox.erp.faults.add("503", path_contains="crm/Accounts", times=2)
    meta = metadata(fetch_and_map(resources), "erp_orders")
    assert (meta["deferred"], meta["mapped"]) == (1, 3)
    meta = metadata(fetch_and_map(resources), "erp_orders")  # the next tick's look-back
    assert (meta["deferred"], meta["mapped"]) == (0, 4)
    assert metadata(deliver(resources), "erp_delivered_orders")["sent"] == 4
    assert set(erp_refs(sandbox)) == {o["orderNumber"] for o in orders}


def test_unknown_items_are_not_asked_for_every_tick(sandbox, resources):
    order = sandbox.shop.add_order(WINDOW_START, malformed="unknown_sku")
    first = metadata(fetch_and_map(resources), "erp_orders")
    assert (first["mapped"], first["quarantined"]) == (0, 1)
    asked = sandbox.erp.calls["items_get"]
    # The next tick's look-back maps it again (quarantined again, for the same unknown item),
    # without asking the ERP about that item a second time.
    again = metadata(fetch_and_map(resources), "erp_orders")
    assert (again["mapped"], again["quarantined"]) == (0, 1)
    [unknown] = [
        number
        for li in order["lineItems"]
        if (number := (li.get("payload") or {}).get("productNumber", "")).startswith("SW999")
    ]  # the product number no ERP item has
    assert unknown in again["quarantined_preview"]
    assert sandbox.erp.calls["items_get"] == asked
    assert not sandbox.erp.sales_orders
