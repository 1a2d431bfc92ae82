"""VAT in the sandbox: Shopware's taxes on the orders, Exact's VAT codes in the ERP.

The orders must carry what Shopware's cart computes (``calculatedTaxes`` per rate, gross / net
/ tax-free), and the ERP must invoice what Exact would (VAT from each line's code, or the
item's ``SalesVatCode``), so that "the ERP invoices the shop's ``amountTotal``" can be proven.
Expected values are recomputed here with :class:`~decimal.Decimal`, not taken from the sandbox.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from integration_project import settings
from integration_project.exact.models import (
    VAT_CODE_FIELDS,
    VAT_CODES,
    VatCode,
    error_message,
    results,
)
from integration_project.sandbox import ManualClock, OrderFactory, Sandbox, SandboxData, SandboxErp
from integration_project.sandbox.data import SHOP_COUNTRY, VAT_RATES
from integration_project.sandbox.erp import (
    EXPORT_VAT_CODE,
    INTRA_EU_VAT_CODE,
    ITEM_SALES_VAT_CODE,
    SALES_VAT_CODES,
)
from integration_project.settings import EU_27
from integration_project_testkit.erp_calls import Erp

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
DIVISION = settings.SANDBOX_ERP_DIVISION
TIMEOUT = 10
CENT = Decimal("0.01")
STANDARD_SKU, REDUCED_SKU = "SW10002", "SW10001"  # Crème brûlée set, coffee beans


def d(value: Any) -> Decimal:
    return Decimal(str(value))


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def expected_tax(price: Any, rate: Any, status: str) -> Decimal:
    """Shopware's TaxCalculator: from a gross price, or from a net one."""
    price, rate = d(price), d(rate)
    if status == "gross":
        return cents(price * rate / (100 + rate))
    return cents(price * rate / 100)


def make_orders(n: int, *, b2b: bool, seed: int = 7) -> tuple[list[dict[str, Any]], OrderFactory]:
    factory = OrderFactory(
        SandboxData.build(seed),
        stream="b2b-orders" if b2b else "orders",
        sales_channel="b2b" if b2b else "storefront",
        company_share=0.85 if b2b else None,
    )
    start = datetime(2026, 11, 1, tzinfo=UTC)
    orders = [factory.make_order(start + timedelta(seconds=10 * i)) for i in range(n)]
    return orders, factory


def ship_iso(order: dict[str, Any]) -> str:
    return order["deliveries"][0]["shippingOrderAddress"]["country"]["iso"]


def assert_split(price: dict[str, Any], status: str) -> None:
    """One entry per rate, prices summing exactly to the total, each tax as Shopware's."""
    taxes = price["calculatedTaxes"]
    if status == "tax-free":
        assert taxes == [] and price["taxRules"] == [], price
        return
    assert len({t["taxRate"] for t in taxes}) == len(taxes), taxes
    assert sum(d(t["price"]) for t in taxes) == d(price["totalPrice"]), price
    for tax in taxes:
        assert d(tax["tax"]) == expected_tax(tax["price"], tax["taxRate"], status), tax
    assert [r["taxRate"] for r in price["taxRules"]] == [t["taxRate"] for t in taxes]
    assert sum(r["percentage"] for r in price["taxRules"]) == pytest.approx(100)


def assert_order_taxes(order: dict[str, Any]) -> None:
    status = order["taxStatus"]
    price = order["price"]
    assert price["taxStatus"] == status
    lines = order["lineItems"]
    prices = [line["price"] for line in lines] + [order["shippingCosts"]]
    for line in lines:
        assert line["price"]["unitPrice"] == line["unitPrice"]
        assert line["price"]["totalPrice"] == line["totalPrice"]
        assert line["price"]["quantity"] == line["quantity"]
        assert {"referencePrice", "listPrice", "regulationPrice"} <= line["price"].keys()
    assert order["deliveries"][0]["shippingCosts"] == order["shippingCosts"]
    assert d(order["shippingTotal"]) == d(order["shippingCosts"]["totalPrice"])
    for calculated in prices:
        assert_split(calculated, status)

    # Horizontal: the order's taxes are the per-rate sums of the (rounded) line taxes.
    summed: dict[float, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for calculated in prices:
        for tax in calculated["calculatedTaxes"]:
            summed[tax["taxRate"]][0] += d(tax["price"])
            summed[tax["taxRate"]][1] += d(tax["tax"])
    got = {t["taxRate"]: [d(t["price"]), d(t["tax"])] for t in price["calculatedTaxes"]}
    assert got == dict(summed)
    taxes = sum((tax for _, tax in summed.values()), Decimal(0))
    positions = sum((d(line["totalPrice"]) for line in lines), Decimal(0))
    shipping = d(order["shippingTotal"])
    assert d(order["positionPrice"]) == d(price["positionPrice"]) == positions
    total, net = d(order["amountTotal"]), d(order["amountNet"])
    assert (total, net) == (d(price["totalPrice"]), d(price["netPrice"]))
    assert d(price["rawTotal"]) == total
    if status == "gross":
        assert total == positions + shipping and net == total - taxes
    elif status == "net":
        assert net == positions + shipping and total == net + taxes
    else:
        assert total == net == positions + shipping and taxes == 0


# --- orders --------------------------------------------------------------------------------


@pytest.mark.parametrize("b2b", [False, True])
def test_generated_orders_carry_shopwares_taxes(b2b: bool) -> None:
    orders, factory = make_orders(1500, b2b=b2b)
    statuses: Counter[str] = Counter()
    mixed_splits = 0
    for order in orders:
        truth = factory.truth[order["id"]]
        status = order["taxStatus"]
        statuses[status] += 1
        assert truth.tax_status == status
        assert truth.amount_total == order["amountTotal"]
        assert_order_taxes(order)

        # Which status: exports are tax-free; the storefront is gross; in the B2B shop
        # companies buy net at home and tax-free (with a VAT id) elsewhere in the EU.
        ship, company = ship_iso(order), bool(order["orderCustomer"]["company"])
        vat_ids = order["orderCustomer"]["vatIds"]
        if ship not in EU_27:
            assert status == "tax-free" and not vat_ids
        elif b2b and company and ship != SHOP_COUNTRY:
            assert status == "tax-free" and vat_ids and vat_ids[0].startswith(ship), order
        elif b2b and company:
            assert status == "net" and not vat_ids
        else:
            assert status == "gross" and not vat_ids

        # Destination rates by tax class; the positions keep their order.
        lines = order["lineItems"]
        products = [line for line in lines if line["type"] == "product"]
        assert [line["position"] for line in lines] == list(range(1, len(lines) + 1))
        if status != "tax-free":
            rates = {tax["taxRate"] for p in products for tax in p["price"]["calculatedTaxes"]}
            assert rates <= set(VAT_RATES[ship])
            assert tuple(sorted(t["taxRate"] for t in order["price"]["calculatedTaxes"])) == (
                truth.tax_rates
            )
            if len(rates) > 1:
                for line in [*lines, order["shippingCosts"]]:
                    split = line.get("price", line)
                    if line.get("type") != "product" and split["totalPrice"]:
                        assert len(split["calculatedTaxes"]) == len(rates)
                        mixed_splits += 1
    if b2b:
        assert set(statuses) == {"gross", "net", "tax-free"}, statuses
        assert statuses["net"] > 200 and statuses["tax-free"] > 500
    else:
        assert set(statuses) == {"gross", "tax-free"}, statuses
        assert 0.6 < statuses["gross"] / len(orders) < 0.8
    assert mixed_splits > 50  # promotions and shipping split over two rates, many times


def test_orders_are_deterministic_per_seed() -> None:
    first, _ = make_orders(200, b2b=True)
    again, _ = make_orders(200, b2b=True)
    other, _ = make_orders(200, b2b=True, seed=8)
    assert first == again and first != other


def test_finland_charges_25_5_and_14_percent() -> None:
    factory = OrderFactory(SandboxData.build(0))
    order = factory.make_order(NOW, shipping_country="FI", skus=[STANDARD_SKU, REDUCED_SKU])
    assert order["taxStatus"] == "gross"
    rates = [line["price"]["calculatedTaxes"][0]["taxRate"] for line in order["lineItems"][:2]]
    assert rates == [25.5, 14.0]
    assert factory.truth[order["id"]].tax_rates == (14.0, 25.5)
    standard = order["lineItems"][0]["price"]
    tax = standard["calculatedTaxes"][0]
    assert d(tax["tax"]) == cents(d(standard["totalPrice"]) * Decimal("25.5") / Decimal("125.5"))
    assert_order_taxes(order)


def test_tax_status_can_be_pinned() -> None:
    factory = OrderFactory(SandboxData.build(0))
    for status in ("gross", "net", "tax-free"):
        order = factory.make_order(NOW, shipping_country="NL", tax_status=status)
        assert order["taxStatus"] == factory.truth[order["id"]].tax_status == status
        assert_order_taxes(order)
    gross = factory.make_order(NOW, shipping_country="DE", skus=[STANDARD_SKU], tax_status="gross")
    net = factory.make_order(NOW, shipping_country="DE", skus=[STANDARD_SKU], tax_status="net")
    # The shop stores gross and net prices: 24.50 gross is 20.59 net at 19 %.
    assert gross["lineItems"][0]["unitPrice"] == 24.5
    assert net["lineItems"][0]["unitPrice"] == 20.59
    with pytest.raises(ValueError, match="tax status"):
        factory.make_order(NOW, tax_status="Gross")


def test_no_calculated_taxes_is_malformed() -> None:
    factory = OrderFactory(SandboxData.build(0))
    order = factory.make_order(NOW, shipping_country="DE", malformed="no_calculated_taxes")
    broken = [li for li in order["lineItems"] if li["price"]["calculatedTaxes"] is None]
    assert len(broken) == 1 and broken[0]["type"] == "product"
    truth = factory.truth[order["id"]]
    assert truth.eu and not truth.expected_in_erp
    # Tax-free orders have empty lists, not nulls: the mapping must tell them apart.
    free = factory.make_order(NOW, shipping_country="US")
    assert all(li["price"]["calculatedTaxes"] == [] for li in free["lineItems"])


# --- ERP -----------------------------------------------------------------------------------


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    clock = ManualClock(NOW)
    data = SandboxData.build(3)
    erp = SandboxErp(seed=3, data=data, clock=clock, minute_limit=1000)
    with Sandbox(seed=3, clock=clock, erp=erp) as sandbox:
        yield sandbox


@pytest.fixture
def erp(sb: Sandbox) -> Erp:
    return Erp(sb)


def test_vat_codes_are_listed_with_fractions(erp: Erp) -> None:
    answer = erp.get(VAT_CODES, **{"$select": VAT_CODE_FIELDS})
    assert answer.status_code == 200, answer.text
    rows = results(answer.json())
    assert all(len(row["Code"]) == 3 for row in rows)  # padded with spaces, as Exact does
    codes = {row["Code"].strip(): VatCode.model_validate(row) for row in rows}
    assert all(set(row) - {"__metadata"} == set(VAT_CODE_FIELDS.split(",")) for row in rows)
    assert all(len(code) <= 3 for code in codes)
    for rate, code in SALES_VAT_CODES.items():
        row = codes[code]
        assert row.Percentage == pytest.approx(rate / 100)
        assert row.VATTransactionType in ("S", "B") and row.Type == "E" and not row.IsBlocked
    assert codes["255"].Percentage == 0.255 and codes["55"].Percentage == 0.055
    assert codes["19"].Percentage == 0.19 and codes["21"].Percentage == 0.21
    at_21 = [row for row in rows if row["Percentage"] == 0.21]
    assert {row["Code"].strip() for row in at_21} == {"21", "21P", "21O", "21I"}
    assert at_21[0]["Code"].strip() != "21"  # "the first code at 21 %" is a trap
    assert codes[INTRA_EU_VAT_CODE].Type == "B"  # 0 %, only the base amount
    assert codes[EXPORT_VAT_CODE].Type == "N"  # no VAT
    assert codes[INTRA_EU_VAT_CODE].Percentage == codes[EXPORT_VAT_CODE].Percentage == 0

    found = results(erp.get(VAT_CODES, **{"$filter": "Code eq '255'"}).json())  # no padding
    assert [row["Percentage"] for row in found] == [0.255]
    assert erp.get(VAT_CODES, **{"$filter": "Rate eq '1'"}).status_code == 400
    items = results(erp.get("logistics/Items", **{"$select": "Code,SalesVatCode"}).json())
    assert {item["SalesVatCode"] for item in items} == {ITEM_SALES_VAT_CODE}
    assert erp.sb.erp.state()["vat_codes"] == len(rows)


def erp_lines(erp: Erp, order: dict[str, Any]) -> list[dict[str, Any]]:
    """What a correct mapping sends: per shop line and rate, the amount excluding VAT with the
    rate's code (built by hand from ``calculatedTaxes``)."""
    status = order["taxStatus"]
    shipping = {"type": "shipping", "label": "Versand", "price": order["shippingCosts"]}
    out = []
    for line in [*order["lineItems"], shipping]:
        price = line["price"]
        item = {"product": None, "promotion": "DISCOUNT", "shipping": "SHIPPING"}[line["type"]]
        item = item or line["payload"]["productNumber"]
        if status == "tax-free":
            code = INTRA_EU_VAT_CODE if ship_iso(order) in EU_27 else EXPORT_VAT_CODE
            parts = [(code, d(price["totalPrice"]))]
        else:
            parts = [
                (
                    SALES_VAT_CODES[tax["taxRate"]],
                    d(tax["price"]) - (d(tax["tax"]) if status == "gross" else 0),
                )
                for tax in price["calculatedTaxes"]
            ]
        for code, excl in parts:
            if excl == 0:
                continue
            out.append(
                {
                    "Item": erp.item(item),
                    "Quantity": 1,
                    "NetPrice": float(excl),
                    "Description": line["label"],
                    "VATCode": code,
                }
            )
    return out


def find_order(factory: OrderFactory, want, **options: Any) -> dict[str, Any]:
    for _ in range(2000):
        order = factory.make_order(NOW, **options)
        if want(order):
            return order
    raise AssertionError("no such order generated")


def mixed_with_everything(order: dict[str, Any]) -> bool:
    return (
        len(order["price"]["calculatedTaxes"]) > 1
        and any(li["type"] == "promotion" for li in order["lineItems"])
        and order["shippingTotal"] > 0
    )


@pytest.mark.parametrize(
    ("status", "country"),
    [("gross", "FR"), ("gross", "FI"), ("net", "DE"), ("tax-free", "NL"), ("tax-free", "US")],
)
def test_invoice_equals_the_shops_amount_total(erp: Erp, status: str, country: str) -> None:
    factory = OrderFactory(SandboxData.build(3), company_share=0.85)
    taxed = status != "tax-free"
    order = find_order(
        factory,
        mixed_with_everything if taxed else lambda o: o["shippingTotal"] > 0,
        shipping_country=country,
        tax_status=status,
    )
    lines = erp_lines(erp, order)
    currency = factory.truth[order["id"]].currency
    answer = erp.post_order(order["orderNumber"], lines, currency)
    assert answer.status_code == 201, answer.text
    invoice = erp.sb.erp.invoices()[order["orderNumber"]]
    assert invoice.lines == len(lines)
    assert invoice.total == invoice.excl_vat + invoice.vat
    assert erp.sb.erp.invoice_total(order["orderNumber"]) == invoice.total
    shop_total = d(order["amountTotal"])
    # Exact computes VAT per line from the net amount, Shopware from the gross: a cent a line.
    assert abs(invoice.total - shop_total) <= CENT * len(lines), (invoice, shop_total)
    if status == "net":
        assert invoice.excl_vat == d(order["amountNet"])
    if not taxed:
        assert invoice.total == shop_total and invoice.vat == 0

    [state] = erp.sb.erp.state()["sales_orders"]
    assert state["AmountFC"] == float(invoice.total)
    assert state["AmountFCExclVat"] == float(invoice.excl_vat)
    for sent, line in zip(lines, state["lines"], strict=True):
        assert line["VATCode"].strip() == sent["VATCode"]
        rate = erp.sb.erp.vat_code(sent["VATCode"])["Percentage"]  # type: ignore[index]
        assert line["VATPercentage"] == rate
        assert d(line["AmountFC"]) == cents(d(sent["NetPrice"]))
        assert d(line["VATAmount"]) == cents(d(line["AmountFC"]) * d(rate))


def test_a_line_without_vat_code_gets_the_items_21_percent(erp: Erp) -> None:
    factory = OrderFactory(SandboxData.build(3))
    order = factory.make_order(NOW, shipping_country="DE", skus=[STANDARD_SKU], tax_status="gross")
    correct = erp_lines(erp, order)
    naive = [{k: v for k, v in line.items() if k != "VATCode"} for line in correct]
    assert erp.post_order("correct", correct).status_code == 201
    assert erp.post_order("naive", naive).status_code == 201
    invoices = erp.sb.erp.invoices()
    shop_total = d(order["amountTotal"])
    assert abs(invoices["correct"].total - shop_total) <= CENT * len(correct)
    # 21 % instead of 19 %: wrong by far more than a cent a line.
    assert invoices["naive"].total - shop_total > CENT * 10 * len(naive)
    naive_lines = erp.sb.erp.state()["sales_orders"][1]["lines"]
    assert {line["VATCode"].strip() for line in naive_lines} == {ITEM_SALES_VAT_CODE}
    assert {line["VATPercentage"] for line in naive_lines} == {0.21}
    for line in naive_lines:
        assert d(line["VATAmount"]) == cents(d(line["AmountFC"]) * Decimal("0.21"))


def test_an_inclusive_code_takes_vat_out_of_the_price(erp: Erp) -> None:
    line = {"Item": erp.item(STANDARD_SKU), "Quantity": 2, "NetPrice": 12.1, "Description": "x"}
    assert erp.post_order("incl", [{**line, "VATCode": "21I"}]).status_code == 201
    invoice = erp.sb.erp.invoices()["incl"]
    assert (invoice.total, invoice.vat, invoice.excl_vat) == (
        Decimal("24.2"),
        Decimal("4.2"),
        Decimal("20.0"),
    )


@pytest.mark.parametrize(
    ("code", "words"),
    [("XX", "does not exist"), ("21O", "blocked"), ("21P", "purchase")],
)
def test_unusable_vat_codes_are_refused(erp: Erp, code: str, words: str) -> None:
    good = {"Item": erp.item(STANDARD_SKU), "Quantity": 1, "NetPrice": 10.0, "Description": "a"}
    answer = erp.post_order("bad", [{**good, "VATCode": "19"}, {**good, "VATCode": code}])
    assert answer.status_code == 400, answer.text
    message = error_message(answer.json())
    assert message is not None and f"'{code}'" in message and words in message, message
    assert "SalesOrderLines[2].VATCode" in message and "[1]" not in message
    assert erp.sb.erp.sales_orders == []
