"""Personal data (README, "Personal data"): the per-route retention job, the location-wide
``erase_customer_job`` and masked previews, over the sandbox and a real ledger: every test that
uses one runs on both backends (a DuckDB file, a PostgreSQL database). Time is moved with the
retention op's ``now`` config, never by sleeping."""

from __future__ import annotations

import copy
import importlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from integration_project.assets import RouteAssets
from integration_project.ledger import Ledger
from integration_project.ledger.db import now_utc
from integration_project.privacy import (
    ERASE_JOB,
    ERASE_OP,
    RETENTION_CRON,
    build_route_retention,
    erase_customer_job,
)
from integration_project.redact import blank_order, mask_emails
from integration_project.resources import open_ledger
from integration_project.routes.config import RouteConfig
from integration_project_testkit.ledger_reads import every_table_rows
from integration_project_testkit.routes import route_assets, shipped_route
from integration_project_testkit.windows import WINDOW_START

pytestmark = pytest.mark.integration


@pytest.fixture
def duckdb_path(ledger_location: str) -> str:
    """Every test here that uses the ledger runs on both backends: a DuckDB file and a
    PostgreSQL database."""
    return ledger_location


#: The shipped reference route, with a description and an extra field that carry the
#: customer's name and e-mail into the ERP sales order (as route files may).
PERSONAL_MAPPING = {
    "description": "Order {order_number} for {customer_name}",
    "fields": {"Remarks": "Contact {email}"},
}
ROUTE = route_assets(mapping=PERSONAL_MAPPING)
#: A second route on the same shop and division (its own YourRefs), for "every route".
SECOND = route_assets(
    name="EU orders second route",
    mapping={**PERSONAL_MAPPING, "your_ref": "R2-{order_number}"},
)
TARGET = "jane.doe@example.com"
IP = "203.0.113.7"


def window(minutes: int) -> tuple[str, datetime]:
    start = WINDOW_START + timedelta(minutes=minutes)
    return start.strftime("%Y-%m-%d-%H:%M"), start


def fetch_and_map(resources: dict[str, Any], key: str, assets: RouteAssets = ROUTE) -> None:
    result = dg.materialize(
        [assets.source_orders, assets.erp_orders], partition_key=key, resources=resources
    )
    assert result.success


def fetch_only(resources: dict[str, Any], key: str, assets: RouteAssets = ROUTE) -> None:
    result = dg.materialize([assets.source_orders], partition_key=key, resources=resources)
    assert result.success


def deliver(resources: dict[str, Any], assets: RouteAssets = ROUTE, **kwargs: Any):
    result = dg.materialize([assets.erp_delivered_orders], resources=resources, **kwargs)
    assert result.success
    return result


def sent(result: dg.ExecuteInProcessResult) -> int:
    [event] = result.get_asset_materialization_events()
    return event.materialization.metadata["sent"].value


def op_metadata(result: dg.ExecuteInProcessResult, op: str) -> dict[str, Any]:
    [event] = [
        e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == op
    ]
    return {k: v.value for k, v in event.step_output_data.metadata.items()}


def run_retention(
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    now: datetime | None = None,
    assets: RouteAssets = ROUTE,
) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
    job = build_route_retention(assets.route).job
    op = f"{assets.route.id}__personal_data_retention"
    config = {"now": now.isoformat()} if now else {}
    result = job.execute_in_process(
        run_config={"ops": {op: {"config": config}}}, resources=resources, instance=instance
    )
    assert result.success
    return result, op_metadata(result, op)


def run_erase(
    resources: dict[str, Any], instance: dg.DagsterInstance, email: str
) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
    result = erase_customer_job.execute_in_process(
        run_config={"ops": {ERASE_OP: {"config": {"email": email}}}},
        resources={"duckdb": resources["duckdb"]},
        instance=instance,
    )
    assert result.success
    return result, op_metadata(result, ERASE_OP)


def rows(ledger: Ledger, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with ledger.db.connect() as con:
        return con.execute(sql, params or []).fetchall()


def staged(ledger: Ledger, route: RouteAssets = ROUTE) -> dict[str, dict[str, Any]]:
    return {
        number: json.loads(payload)
        for number, payload in rows(
            ledger,
            "SELECT order_number, payload FROM staged_orders WHERE route_id = ?",
            [route.route.id],
        )
    }


def mapped(ledger: Ledger, route: RouteAssets = ROUTE) -> dict[str, tuple[Any, ...]]:
    return {
        r[0]: (r[1], json.loads(r[2]) if r[2] else None, r[3])
        for r in rows(
            ledger,
            "SELECT order_number, status, payload, reason FROM erp_orders WHERE route_id = ?",
            [route.route.id],
        )
    }


def blanked_keys(ledger: Ledger) -> set[tuple[str, str]]:
    return {
        (r[0], r[1]) for r in rows(ledger, "SELECT route_id, reason FROM personal_data_blanked")
    }


def every_table_text(ledger: Ledger) -> dict[str, str]:
    return {table: repr(table_rows) for table, table_rows in every_table_rows(ledger).items()}


def address(email: str) -> re.Pattern[str]:
    """``email`` as a whole address (not inside mary.jane@… or …@example.com.au)."""
    return re.compile(r"(?<![\w.+-])" + re.escape(email) + r"(?![\w-])(?!\.[\w-])", re.IGNORECASE)


def has_personal_data(order: dict[str, Any], shop_order: dict[str, Any]) -> bool:
    customer, billing = order["orderCustomer"], order["billingAddress"]
    return (
        customer["email"] == shop_order["orderCustomer"]["email"]
        and customer["lastName"] == shop_order["orderCustomer"]["lastName"]
        and billing["street"] == shop_order["billingAddress"]["street"]
    )


def assert_blanked(order: dict[str, Any], shop_order: dict[str, Any]) -> None:
    customer, billing = order["orderCustomer"], order["billingAddress"]
    shipping = order["deliveries"][0]["shippingOrderAddress"]
    for person in (customer, billing, shipping):
        assert person["firstName"] is None and person["lastName"] is None
        assert person["company"] is None
    assert customer["email"] is None and customer["customerNumber"] is None
    assert customer.get("remoteAddress") is None and customer["vatIds"] is None
    for place in (billing, shipping):
        assert place["street"] is None and place["zipcode"] is None and place["city"] is None
        assert place["phoneNumber"] is None
    # What the ledger needs stays.
    for key in ("id", "orderNumber", "createdAt", "amountTotal", "amountNet", "taxStatus"):
        assert order[key] == shop_order[key]
    assert billing["country"]["iso"] == shop_order["billingAddress"]["country"]["iso"]
    ship_iso = shop_order["deliveries"][0]["shippingOrderAddress"]["country"]["iso"]
    assert shipping["country"]["iso"] == ship_iso
    assert order["currency"]["isoCode"] == shop_order["currency"]["isoCode"]
    assert [(li["payload"] or {}).get("productNumber") for li in order["lineItems"]] == [
        (li["payload"] or {}).get("productNumber") for li in shop_order["lineItems"]
    ]
    assert [li["quantity"] for li in order["lineItems"]] == [
        li["quantity"] for li in shop_order["lineItems"]
    ]
    assert shop_order["orderCustomer"]["email"] not in json.dumps(order)


# --- retention -------------------------------------------------------------------------------


def test_retention_blanks_exactly_the_old_delivered_and_skipped_orders(
    sandbox, resources, ledger, dagster_instance
):
    shop = sandbox.shop
    key_a, start_a = window(0)
    delivered_early = shop.add_orders(
        3, start=start_a, end=start_a + timedelta(minutes=2), shipping_country="DE"
    )
    for order in delivered_early:
        order["orderCustomer"]["remoteAddress"] = IP
        order["billingAddress"]["phoneNumber"] = "+49 30 1234567"
    skipped = shop.add_order(start_a + timedelta(minutes=3), shipping_country="US")
    quarantined = shop.add_order(start_a + timedelta(minutes=4), malformed="unknown_sku")
    fetch_and_map(resources, key_a)
    assert sent(deliver(resources)) == 3
    moment = now_utc()  # everything above was delivered or skipped before it, nothing below

    key_b, start_b = window(5)
    delivered_late = shop.add_order(start_b + timedelta(minutes=1), shipping_country="NL")
    failed = shop.add_order(start_b + timedelta(minutes=2), shipping_country="NL")
    failed["currency"]["isoCode"] = "XAU"  # the ERP refuses it: status failed
    fetch_and_map(resources, key_b)
    assert sent(deliver(resources)) == 1
    key_c, start_c = window(10)
    pending = shop.add_orders(2, start=start_c, end=start_c + timedelta(minutes=2))
    fetch_and_map(resources, key_c)  # mapped, not delivered
    key_d, start_d = window(15)
    unmapped = shop.add_order(start_d + timedelta(minutes=1))
    fetch_only(resources, key_d)  # staged, never mapped
    # Pages of a fetch that died before merging them.
    route_ledger = open_ledger(resources["duckdb"], ROUTE.route.id, resources["erp"].token_key)
    orphan = copy.deepcopy(unmapped) | {"id": "0" * 32, "orderNumber": "99999"}
    route_ledger.staging.stage_page("an-aborted-fetch", [orphan], start_d)
    shop_orders = {o["orderNumber"]: o for o in shop.orders.values()}
    before = staged(ledger)
    descriptions = {n: m[1]["Description"] for n, m in mapped(ledger).items() if m[1]}
    accounts = rows(
        ledger,
        "SELECT count(*), count(*) FILTER (WHERE cached_at < ?) FROM erp_accounts",
        [moment],
    )[0]
    assert 0 < accounts[1] < accounts[0]  # accounts cached on both sides of `moment`

    # 30 days after `moment`: only what was delivered or skipped before it is old enough.
    retention = ROUTE.route.personal_data_retention
    assert retention == timedelta(days=30)
    _, meta = run_retention(resources, dagster_instance, now=moment + retention)

    old = {o["orderNumber"] for o in [*delivered_early, skipped]}
    after = staged(ledger)
    for number, order in after.items():
        if number in old:
            assert_blanked(order, shop_orders[number])
        else:
            assert order == before[number], number
            assert has_personal_data(order, shop_orders[number]), number
    maps = mapped(ledger)
    for order in delivered_early:
        status, body, _ = maps[order["orderNumber"]]
        assert status == "mapped"
        assert body["Description"] is None and body["Remarks"] is None  # name and e-mail
        assert body["YourRef"] == order["orderNumber"] and body["OrderedBy"]
        assert body["SalesOrderLines"]  # items, quantities, prices, VAT codes
    for number in (delivered_late["orderNumber"], failed["orderNumber"]):
        assert maps[number][1]["Description"] == descriptions[number]
    assert maps[quarantined["orderNumber"]][0] == "quarantined"
    assert old == {
        r[0]
        for r in rows(
            ledger,
            "SELECT s.order_number FROM personal_data_blanked b "
            "JOIN staged_orders s USING (route_id, shop_order_id) WHERE b.reason = 'retention'",
        )
    }
    assert meta["orders_blanked"] == 4
    assert meta["staged_orders_blanked"] == 4
    assert meta["erp_orders_blanked"] == 3  # the skipped order has no sales order
    assert meta["erp_accounts_deleted"] == accounts[1]
    assert meta["staged_orders_incoming_deleted"] == 0  # the aborted fetch is recent
    assert meta["oldest_order_touched"] == start_a.timestamp()
    assert meta["newest_order_touched"] == (start_a + timedelta(minutes=3)).timestamp()
    assert meta["quarantined_kept"] == 1 and meta["unmapped_kept"] == 1
    assert meta["waiting_kept"] == 0  # the failed and pending ones were mapped later
    assert meta["retention_days"] == 30
    assert "| staged_orders | 4 |" in meta["tables"]

    # A year on: the late delivery is old too; orders that wait never are.
    _, meta = run_retention(resources, dagster_instance, now=now_utc() + timedelta(days=365))
    assert meta["orders_blanked"] == 1  # the late delivery; the early ones stay blanked
    assert meta["staged_orders_incoming_deleted"] == 1
    assert meta["erp_accounts_deleted"] == accounts[0] - accounts[1]
    assert meta["waiting_kept"] == 3  # the failed and the two pending orders
    assert meta["quarantined_kept"] == 1 and meta["unmapped_kept"] == 1
    after = staged(ledger)
    assert_blanked(after[delivered_late["orderNumber"]], delivered_late)
    for order in [failed, *pending, quarantined, unmapped]:
        assert after[order["orderNumber"]] == before[order["orderNumber"]]
    assert not rows(ledger, "SELECT * FROM staged_orders_incoming")
    assert rows(ledger, "SELECT count(*) FROM erp_accounts")[0][0] == 0

    # The pending orders are still delivered, with their customer.
    assert sent(deliver(resources)) == 2
    accounts_by_id = {a["ID"]: a for a in sandbox.erp.accounts.values()}
    for order in pending:
        [erp_order] = [o for o in sandbox.erp.sales_orders if o["YourRef"] == order["orderNumber"]]
        assert accounts_by_id[erp_order["OrderedBy"]]["Email"] == order["orderCustomer"]["email"]
        assert erp_order["Remarks"] == f"Contact {order['orderCustomer']['email']}"


def test_a_refetched_order_is_blanked_again_and_never_sent_twice(
    sandbox, resources, ledger, dagster_instance
):
    key, start = window(0)
    orders = sandbox.shop.add_orders(2, start=start, end=start + timedelta(minutes=3))
    fetch_and_map(resources, key)
    assert sent(deliver(resources)) == 2
    later = now_utc() + timedelta(days=31)
    assert run_retention(resources, dagster_instance, now=later)[1]["orders_blanked"] == 2

    fetch_and_map(resources, key)  # a backfill re-reads the window: the shop's data is back
    shop_orders = {o["orderNumber"]: o for o in orders}
    assert all(has_personal_data(o, shop_orders[n]) for n, o in staged(ledger).items())
    assert sent(deliver(resources)) == 0  # blanking never makes an order "new"

    meta = run_retention(resources, dagster_instance, now=later)[1]
    assert meta["orders_blanked"] == 2 and meta["erp_orders_blanked"] == 2
    for number, order in staged(ledger).items():
        assert_blanked(order, shop_orders[number])
    assert run_retention(resources, dagster_instance, now=later)[1]["orders_blanked"] == 0
    assert len(sandbox.erp.sales_orders) == 2


# --- erasure ---------------------------------------------------------------------------------


def test_erase_customer_removes_the_address_from_every_table_of_every_route(
    sandbox, resources, ledger, dagster_instance
):
    shop = sandbox.shop
    key, start = window(0)
    at = [start + timedelta(seconds=20 * i) for i in range(8)]
    own = [
        shop.add_order(at[0], shipping_country="NL", email="Jane.Doe@Example.com"),
        shop.add_order(at[1], shipping_country="DE", email=TARGET),
        shop.add_order(at[2], malformed="unknown_sku", email="JANE.DOE@EXAMPLE.COM"),
    ]
    own[0]["orderCustomer"]["remoteAddress"] = IP
    others = [
        shop.add_order(at[3], email="mary.jane.doe@example.com"),  # contains the address
        shop.add_order(at[4], email="jane.doe@example.com.au"),  # starts with it
    ]
    mention = shop.add_order(at[5])  # another customer, whose comment names the address
    mention["customerComment"] = f"Please also send the invoice to {TARGET}, thanks"
    for route in (ROUTE, SECOND):
        fetch_and_map(resources, key, route)
        deliver(resources, route)
    # Pages of a fetch that died two hours ago, holding one of the customer's orders.
    with ledger.db.connect() as con:
        con.execute(
            "INSERT INTO staged_orders_incoming (route_id, run_id, shop_order_id, order_number, "
            "created_at, payload, fetched_at) VALUES (?, 'dead-run', ?, ?, ?, ?::JSON, ?)",
            [
                ROUTE.route.id,
                own[0]["id"],
                own[0]["orderNumber"],
                start,
                json.dumps(own[0]),
                now_utc() - timedelta(hours=2),
            ],
        )
    pattern = address(TARGET)
    text = every_table_text(ledger)
    assert {t for t, dump in text.items() if pattern.search(dump)} >= {
        "staged_orders",
        "staged_orders_incoming",
        "erp_orders",
        "erp_accounts",
    }

    result, meta = run_erase(resources, dagster_instance, "  JANE.Doe@example.COM ")

    leaks = {t for t, dump in every_table_text(ledger).items() if pattern.search(dump)}
    assert not leaks, f"the address is still in {leaks}"
    assert meta["email"] == "j***@example.com"
    assert meta["complete"] is True and meta["waiting_left"] == 0
    assert meta["orders_erased"] == 6  # three orders, two routes
    assert meta["rows_staged_orders"] == 8  # the six, and the comment in both routes
    assert meta["rows_erp_orders"] == 4  # the delivered ones' description and remarks
    assert meta["rows_erp_accounts"] == 1  # one division, one cache row
    assert meta["rows_staged_orders_incoming"] == 1
    assert meta["rows_touched"] == 14
    assert "| staged_orders | 8 |" in meta["tables"]
    for order in own:
        assert order["orderNumber"] in meta["erased_orders"]
    # Nothing the run reports, logs or stores in its events names the address.
    logs = "".join(dg.serialize_value(entry) for entry in dagster_instance.all_logs(result.run_id))
    assert not pattern.search(logs) and not pattern.search(json.dumps(meta, default=str))
    assert "j***@example.com" in logs

    for route in (ROUTE, SECOND):
        after = staged(ledger, route)
        for order in own:
            assert_blanked(after[order["orderNumber"]], order)
        for order in others:  # other addresses are untouched, whole
            assert has_personal_data(after[order["orderNumber"]], order)
        comment = after[mention["orderNumber"]]["customerComment"]
        assert comment == "Please also send the invoice to [erased], thanks"
        assert has_personal_data(after[mention["orderNumber"]], mention)
        maps = mapped(ledger, route)
        assert maps[own[2]["orderNumber"]][0] == "quarantined"
        for order in own[:2]:
            body = maps[order["orderNumber"]][1]
            assert body["Description"] is None and body["Remarks"] is None
            assert body["OrderedBy"] and body["SalesOrderLines"]
    assert blanked_keys(ledger) == {
        (ROUTE.route.id, "erased"),
        (SECOND.route.id, "erased"),
    }

    # A backfill brings the shop's copy back; the next retention run blanks it again, however
    # recent the order (erase the customer in the shop too: README, "Personal data").
    fetch_and_map(resources, key)
    numbers = [o["orderNumber"] for o in own]
    assert all(pattern.search(json.dumps(staged(ledger)[n])) for n in numbers)
    meta = run_retention(resources, dagster_instance)[1]
    assert meta["orders_blanked"] == 3
    after, maps = staged(ledger), mapped(ledger)
    for order in own:
        assert_blanked(after[order["orderNumber"]], order)
        assert not pattern.search(json.dumps(maps[order["orderNumber"]][1]))


def test_erase_leaves_orders_that_wait_for_delivery_whole_and_lists_them(
    sandbox, resources, ledger, dagster_instance
):
    shop = sandbox.shop
    key_a, start_a = window(0)
    delivered = shop.add_order(start_a, email=TARGET)
    failed = shop.add_order(start_a + timedelta(minutes=1), email=TARGET)
    failed["currency"]["isoCode"] = "XAU"
    fetch_and_map(resources, key_a)
    deliver(resources)
    key_b, start_b = window(5)
    pending = shop.add_order(start_b, email=TARGET)
    fetch_and_map(resources, key_b)
    key_c, start_c = window(10)
    unmapped = shop.add_order(start_c, email=TARGET)
    fetch_only(resources, key_c)
    before = staged(ledger)
    bodies = mapped(ledger)

    result, meta = run_erase(resources, dagster_instance, TARGET)

    assert meta["orders_erased"] == 1 and meta["complete"] is False
    assert meta["waiting_left"] == 3
    for order in (failed, pending, unmapped):
        assert order["orderNumber"] in meta["waiting_orders"]
    assert "delivery status failed" in meta["waiting_orders"]
    assert "mapped, not delivered yet" in meta["waiting_orders"]
    assert "staged, not mapped yet" in meta["waiting_orders"]
    warnings = [
        entry.user_message
        for entry in dagster_instance.all_logs(result.run_id)
        if entry.level == 30  # logging.WARNING
    ]
    assert any(pending["orderNumber"] in w and unmapped["orderNumber"] in w for w in warnings)
    after = staged(ledger)
    assert_blanked(after[delivered["orderNumber"]], delivered)
    for order in (failed, pending, unmapped):
        assert after[order["orderNumber"]] == before[order["orderNumber"]]
    assert mapped(ledger)[pending["orderNumber"]] == bodies[pending["orderNumber"]]

    # The waiting order goes out with its customer; erasing again then takes it too.
    assert sent(deliver(resources)) == 1
    [erp_order] = [o for o in sandbox.erp.sales_orders if o["YourRef"] == pending["orderNumber"]]
    assert erp_order["OrderedBy"] and erp_order["Remarks"] == f"Contact {TARGET}"
    meta = run_erase(resources, dagster_instance, TARGET)[1]
    assert meta["orders_erased"] == 1 and meta["waiting_left"] == 2


# --- previews --------------------------------------------------------------------------------


def test_previews_in_materialisation_metadata_show_no_full_email_address(sandbox, resources):
    assets = route_assets(mapping={"description": "Order {order_number} for {email}"})
    key, start = window(0)
    orders = sandbox.shop.add_orders(4, start=start, end=start + timedelta(minutes=4))
    bad = sandbox.shop.add_order(start + timedelta(minutes=4))
    bad["orderCustomer"]["email"] = f"Jane Doe <{TARGET}>"  # quarantined, quoted in the reason
    results = [
        dg.materialize(
            [assets.source_orders, assets.erp_orders], partition_key=key, resources=resources
        ),
        dg.materialize(
            [assets.erp_delivered_orders],
            resources=resources,
            run_config={
                "ops": {f"{assets.route.id}__erp_delivered_orders": {"config": {"dry_run": True}}}
            },
        ),
        dg.materialize([assets.erp_delivered_orders], resources=resources),
    ]
    texts = [
        f"{k}={v.value}"
        for result in results
        for event in result.get_asset_materialization_events()
        for k, v in event.materialization.metadata.items()
    ]
    metadata = "\n".join(texts)
    for email in [TARGET, *(o["orderCustomer"]["email"] for o in orders)]:
        assert not address(email).search(metadata), email
    for local in re.findall(r"([\w.!#$%&'*+-]+)@[\w-]+(?:\.[\w-]+)+", metadata):
        assert re.fullmatch(r"\w\*\*\*", local), local  # every address masked
    first = orders[0]["orderCustomer"]["email"]
    assert mask_emails(first) in metadata  # in the payload previews, masked
    assert "j***@example.com" in metadata  # in the quarantine reason


def test_mask_emails_masks_every_address_and_nothing_else() -> None:
    assert mask_emails("jane.doe@example.com") == "j***@example.com"
    assert mask_emails("To: 'Jane.Doe@Example.co.uk', bo+x@b.de.") == (
        "To: 'J***@Example.co.uk', b***@b.de."
    )
    assert mask_emails("o'brien@example.ie | x") == "o***@example.ie | x"
    assert mask_emails(json.dumps({"Remarks": "Contact ann@ex.nl"})) == (
        '{"Remarks": "Contact a***@ex.nl"}'
    )
    assert mask_emails("j***@example.com") == "j***@example.com"  # idempotent
    for text in ("Order 10042", "no address @ all", "user@localhost", "50 @ 3.5 EUR"):
        assert mask_emails(text) == text


def test_blank_order_keeps_only_the_allow_list(sandbox) -> None:
    order = sandbox.shop.add_order(WINDOW_START, shipping_country="FR")
    order["orderCustomer"]["remoteAddress"] = IP
    order["customFields"] = {"newsletter_name": "Jane"}
    order["extensions"] = {"newField": {"phone": "+33 1 23 45 67 89"}}  # fail closed
    blanked = blank_order(copy.deepcopy(order))
    assert_blanked(blanked, order)
    assert blanked["customFields"] is None and blanked["extensions"] is None
    assert blanked["deepLinkCode"] is None and blanked["customerComment"] is None
    assert set(blanked) == set(order)  # the keys stay, the values are null
    assert blank_order(blanked) == blanked
    assert blank_order("not an order") is None


# --- definitions -----------------------------------------------------------------------------


def test_retention_jobs_schedules_and_the_erase_job_have_the_contract_names() -> None:
    defs = importlib.import_module("integration_project.definitions").defs()
    for route_id in ("eu_orders_shopware_to_exact", "b2b_orders_shopware_to_exact"):
        job = defs.get_job_def(f"{route_id}__personal_data_retention_job")
        schedule = defs.resolve_schedule_def(f"{route_id}__personal_data_retention_schedule")
        assert schedule.job_name == job.name
        assert schedule.cron_schedule == RETENTION_CRON == "17 3 * * *"  # daily, a quiet hour
        assert schedule.execution_timezone == "Europe/Berlin"  # the shop's
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        [request] = schedule.evaluate_tick(
            dg.build_schedule_context(
                scheduled_execution_time=datetime(2026, 12, 1, 2, 17, tzinfo=UTC)
            )
        ).run_requests
        assert request.run_config == {}  # `now` defaults to when the run starts
    assert defs.get_job_def(ERASE_JOB).name == "erase_customer_job"
    stopped = build_route_retention(shipped_route(schedule={"running": False}))
    assert stopped.schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_the_retention_setting_is_a_duration_of_at_least_a_day() -> None:
    assert shipped_route().personal_data_retention == timedelta(days=30)
    assert RouteConfig(name="r", personal_data_retention="7d").personal_data_retention == (
        timedelta(days=7)
    )
    for bad in ("12h", "0d", "soon"):
        with pytest.raises(ValueError, match="personal_data_retention"):
            RouteConfig(name="r", personal_data_retention=bad)
