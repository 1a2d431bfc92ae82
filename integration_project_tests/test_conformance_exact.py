"""Conformance of the sandbox ERP with a client written by others against the real Exact Online.

``exactonline`` 0.4.0 (ossobv, PyPI) is pointed at the sandbox the way its README sets up a new
user: an :class:`ExactOnlineConfig` storage giving the REST and token URLs, the app's client id
and secret and a refresh token; :class:`ExactApi` does the rest (refresh, division, unwrapping
``d`` / ``results``, following ``__next``). Where the library reflects the real API, the sandbox
must answer as Exact does; where the library is wrong about Exact, the test is marked
``xfail(strict=True)`` with the evidence. Every test also checks what the sandbox holds after
the call, not only what the library returned. Sources: reference/exact-online.md section 11.

The one adaptation: the library refuses plain ``http`` URLs (``exactonline/http.py``
``opt_secure.protocols = ('https',)``) and the sandbox serves http on a local port, so the
fixture allows ``http`` for the test's duration. Nothing of the library or of ours is mocked.
"""

from __future__ import annotations

import json
import time
from typing import Any

import exactonline.http
import pytest
from exactonline.api import ExactApi
from exactonline.api.invoices import Invoices
from exactonline.api.manager import Manager
from exactonline.elements.relation import ExactCustomer
from exactonline.exceptions import ObjectDoesNotExist
from exactonline.http import HTTPError
from exactonline.resource import GET
from exactonline.storage.base import ExactOnlineConfig, MissingSetting

from integration_project.exact.client import ExactClient
from integration_project.exact.models import ACCOUNT_CODE_WIDTH, TOKEN_PATH
from integration_project.http import ApiError, AuthError
from integration_project.ledger import DuckDBTokenStore, Ledger
from integration_project.sandbox import Sandbox

pytestmark = pytest.mark.integration

#: Exact's standard endpoints page by 60 (reference/exact-online.md section 8).
PAGE = 60


class DictStorage(ExactOnlineConfig):
    """The storage backend ``exactonline/storage/base.py`` asks for: get() raising
    MissingSetting, set() storing. Transient values (tokens, division) are written by the lib."""

    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self.values = dict(values)

    def get(self, section: str, option: str) -> str:
        try:
            return self.values[(section, option)]
        except KeyError:
            raise MissingSetting(option, section) from None

    def set(self, section: str, option: str, value: str) -> None:
        self.values[(section, option)] = value


def storage_for(sb: Sandbox, *, division: bool = True) -> DictStorage:
    values = {
        ("server", "auth_url"): sb.erp_url + "/api/oauth2/auth",
        ("server", "rest_url"): sb.erp_url + "/api",
        ("server", "token_url"): sb.erp_url + TOKEN_PATH,
        ("application", "base_url"): "https://integration.example",
        ("application", "client_id"): sb.erp.client_id,
        ("application", "client_secret"): sb.erp.client_secret,
        ("transient", "refresh_token"): sb.erp.refresh_token,
    }
    if division:
        values[("transient", "division")] = sb.erp.division
    return DictStorage(values)


# Resources the library has no helper for, declared the way its Manager docstring shows.
class Items(Manager):
    resource = "logistics/Items"


class SalesOrders(Invoices):
    """The library's invoice helper (``api/invoices.py``) aimed at sales orders: its filter
    building (``YourRef eq '…'``, ``(… or …)``, ``(…) and …``) is what it sends to Exact."""

    resource = "salesorder/SalesOrders"


class SalesOrderLines(Manager):
    resource = "salesorder/SalesOrderLines"


class Customer(ExactCustomer):
    """The adapter ``exactonline/elements/relation.py`` documents (README "Using element
    adapters"): code, name and address from our own relation."""

    def __init__(self, relation: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._relation = relation

    def get_code(self) -> str:
        return self._relation["code"]

    def get_name(self) -> str:
        return self._relation["name"]

    def get_address(self) -> dict[str, str]:
        return {"AddressLine1": "Keizersgracht 1", "Postcode": "1015 CJ", "City": "Amsterdam"}


@pytest.fixture
def http_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exactonline.http.opt_secure, "protocols", ("http", "https"))


@pytest.fixture
def api(sandbox: Sandbox, http_allowed: None) -> ExactApi:
    return ExactApi(storage=storage_for(sandbox))


def erp_error(exc: HTTPError) -> tuple[int, Any, Any]:
    """(status, decoded body, headers) of an answer the library raised as HTTPError."""
    raw = exc.response.decode("utf-8") if isinstance(exc.response, bytes) else exc.response
    return exc.code, json.loads(raw), exc.hdrs


def odata_message(exc: HTTPError) -> str:
    status, body, _ = erp_error(exc)
    assert status == 400, body
    return body["error"]["message"]["value"]


def account_id(sb: Sandbox, email: str) -> str:
    account = sb.erp.account_by_email(email)
    assert account is not None
    return account["ID"]


def item_id(sb: Sandbox, code: str) -> str:
    item = sb.erp.item_by_code(code)
    assert item is not None
    return item["ID"]


def order(sb: Sandbox, ref: str, *codes: str, email: str = "o'brien@example.ie") -> dict[str, Any]:
    """A sales order as our route sends it (every field), lines in ``codes``."""
    return {
        "OrderedBy": account_id(sb, email),
        "YourRef": ref,
        "OrderDate": "2026-11-20",
        "Description": f"Shop order {ref}",
        "Currency": "EUR",
        "SalesOrderLines": [
            {"Item": item_id(sb, code), "Quantity": 2, "NetPrice": 10.0, "Description": code}
            for code in codes or ("SW10001",)
        ],
    }


# --- tokens ----------------------------------------------------------------------------------


def test_refresh_rotates_tokens_and_a_second_one_straight_away_is_refused_400(
    sandbox: Sandbox, api: ExactApi
) -> None:
    seed = api.storage.get_refresh_token()
    api.refresh_token()
    storage = api.storage
    assert storage.get_refresh_token() != seed
    assert storage.get_refresh_token() == sandbox.erp.refresh_token  # rotated, and stored
    assert 590 <= storage.get_access_expiry() - time.time() <= 600  # "expires_in": "600"
    access, rotated = storage.get_access_token(), storage.get_refresh_token()

    with pytest.raises(HTTPError) as raised:
        api.refresh_token()
    status, body, headers = erp_error(raised.value)
    # Exact answers 400 today (websmurf/laravel-exact-online#31, 2026: "Error 400:
    # {"error":"access_denied", ...} (Reason: TooEarlyToRefreshTokens: ...)"), not the 401 the
    # library's autorefresh.py quotes from older docs.
    assert status == 400
    assert body["error"] == "access_denied"
    assert headers["Reason"].startswith("TooEarlyToRefreshTokens")
    # The refusal changes nothing: the library keeps its pair and it still works.
    assert (storage.get_access_token(), storage.get_refresh_token()) == (access, rotated)
    assert sandbox.erp.token_refreshes == 1
    assert api.restv1(GET("logistics/Items?$top=1"))
    assert sandbox.erp.calls["items_get"] == 1 and sandbox.erp.token_refreshes == 1


@pytest.mark.xfail(
    strict=True,
    reason="exactonline/api/autorefresh.py quotes Exact's docs (2021) as refusing an early "
    "refresh with 401; Exact answers 400 access_denied, Reason TooEarlyToRefreshTokens "
    "(websmurf/laravel-exact-online#31, 2026-01; PR #18, 2022), as the sandbox does",
)
def test_early_refresh_answers_401_as_the_library_docstring_says(api: ExactApi) -> None:
    api.refresh_token()
    with pytest.raises(HTTPError) as raised:
        api.refresh_token()
    assert raised.value.code == 401


def test_our_client_takes_a_too_early_refresh_as_transient(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    """The same 400 reaches our client when Exact expires an access token early (revoked) and
    the forced refresh comes within 570 s: the tokens stay valid, so it stops the run as
    transient and does not try ERP_REFRESH_TOKEN (which Exact would refuse: one more error)."""
    store = DuckDBTokenStore(ledger.db, "conformance")
    client = ExactClient(
        base_url=sandbox.erp_url,
        division=sandbox.erp.division,
        client_id=sandbox.erp.client_id,
        client_secret=sandbox.erp.client_secret,
        refresh_token=sandbox.erp.refresh_token,
        token_store=store,
        max_retries=1,
        backoff_factor=0.01,
    )
    with client:
        assert client.find_item_id("SHIPPING") == item_id(sandbox, "SHIPPING")
        rotated = sandbox.erp.refresh_token
        sandbox.erp.revoke_access_tokens()
        with pytest.raises(ApiError) as raised:
            client.find_item_id("DISCOUNT")
    assert not isinstance(raised.value, AuthError)
    assert "Reason TooEarlyToRefreshTokens" in str(raised.value)
    assert sandbox.erp.token_calls == 2 and sandbox.erp.token_refreshes == 1
    assert sandbox.erp.refresh_token == rotated == store.load().refresh_token  # type: ignore[union-attr]
    assert store.authorisation_needed() is None


# --- current/Me and the division -------------------------------------------------------------


def test_current_me_tells_the_division_a_new_user_then_selects(
    sandbox: Sandbox, http_allowed: None
) -> None:
    sandbox.erp.other_divisions.add("7654321")
    api = ExactApi(storage=storage_for(sandbox, division=False))
    # README "Setting up the link": find the current division, then select one.
    choices, current = api.get_divisions()
    assert current == int(sandbox.erp.division)
    assert set(choices) == {int(sandbox.erp.division), 7654321}
    [me] = api.rest(GET("v1/current/Me"))
    assert me["CurrentDivision"] == current and me["UserID"] == sandbox.erp.user_id
    assert me["__metadata"]["uri"].endswith(f"/api/v1/current/Me(guid'{sandbox.erp.user_id}')")
    api.set_division(current)
    assert api.storage.get_division() == current
    assert sandbox.erp.calls["me_get"] == 2 and sandbox.erp.calls["divisions_get"] == 1


# --- accounts and items ----------------------------------------------------------------------


def test_account_lookup_by_email_and_by_code_right_aligned_to_18(
    sandbox: Sandbox, api: ExactApi
) -> None:
    [row] = api.relations.filter(filter="Email eq 'o''brien@example.ie'")
    stored = sandbox.erp.account_by_email("o'brien@example.ie")
    assert stored is not None and row["ID"] == stored["ID"]
    assert set(row) == {"__metadata", "ID", "Code", "Name"}  # the helper's $select=ID,Code,Name
    code = row["Code"]
    assert len(code) == ACCOUNT_CODE_WIDTH and code == code.strip().rjust(ACCOUNT_CODE_WIDTH)
    # relations.get() pads the code as Exact stores it ('%18s'); unpadded matches nothing.
    assert api.relations.get(relation_code=code.strip())["ID"] == row["ID"]
    assert api.relations.filter(filter=f"Code eq '{code.strip()}'") == []
    # trim(Code) is Exact's documented way round the padding (basvanbeek.nl/exact-online-tips).
    [trimmed] = api.relations.filter(filter=f"trim(Code) eq '{code.strip()}'")
    assert trimmed["ID"] == row["ID"]
    with pytest.raises(ObjectDoesNotExist):
        api.relations.get(relation_code="999999")


def test_item_lookup_by_code(sandbox: Sandbox, api: ExactApi) -> None:
    items = Items(api)
    [row] = items.filter(filter="Code eq 'SW10001'", select="ID,Code,Description")
    assert row["ID"] == item_id(sandbox, "SW10001") and row["Code"] == "SW10001"
    assert items.filter(filter="Code eq 'SW99901'", select="ID") == []  # not an ERP item
    assert sandbox.erp.calls["items_get"] == 2


def test_customer_commit_twice_makes_one_account_then_updates_it(
    sandbox: Sandbox, api: ExactApi
) -> None:
    before = len(sandbox.erp.accounts)
    created = Customer({"code": "20077", "name": "Koffiebar De Boon"}, api=api).commit()
    assert created["Code"] == "20077".rjust(ACCOUNT_CODE_WIDTH)
    # Found again by its code: updated (PUT, no body), not created twice.
    updated = Customer({"code": "20077", "name": "Koffiebar De Boon B.V."}, api=api).commit()
    assert updated is None
    [account] = [a for a in sandbox.erp.accounts.values() if a["Code"].strip() == "20077"]
    assert len(sandbox.erp.accounts) == before + 1
    assert account["ID"] == created["ID"] and account["Code"] == "20077".rjust(18)
    assert account["Name"] == "Koffiebar De Boon B.V." and account["City"] == "Amsterdam"
    # ExactCustomer sends neither Email nor Country: Exact does not require them.
    assert account["Email"] is None and account["Country"] is None
    assert sandbox.erp.calls["accounts_post"] == 1 and sandbox.erp.calls["accounts_put"] == 1


def test_account_with_a_code_that_exists_is_refused(sandbox: Sandbox, api: ExactApi) -> None:
    taken = next(iter(sandbox.erp.accounts.values()))["Code"]
    before = len(sandbox.erp.accounts)
    with pytest.raises(HTTPError) as raised:
        api.relations.create({"Code": taken, "Name": "Duplicate"})
    assert taken.strip() in odata_message(raised.value)
    assert len(sandbox.erp.accounts) == before


# --- compound filters ------------------------------------------------------------------------


def test_compound_filters_as_the_library_builds_them(sandbox: Sandbox, api: ExactApi) -> None:
    accounts = list(sandbox.erp.accounts.values())
    first, second = accounts[0], accounts[1]
    # Manager._filter_append: "(<filter>) and Code eq '<18 wide>'".
    [hit] = api.relations.filter(relation_code=first["Code"].strip(), filter="Name ne 'x'")
    assert hit["ID"] == first["ID"]
    assert api.relations.filter(relation_code=first["Code"].strip(), filter="Name eq 'x'") == []
    # or, and guid'…' literals
    both = api.relations.filter(filter=f"ID eq guid'{first['ID']}' or ID eq guid'{second['ID']}'")
    assert sorted(r["ID"] for r in both) == sorted([first["ID"], second["ID"]])
    brackets = f"(Name eq '{second['Name']}' or Name eq 'nobody') and ID ne guid'{first['ID']}'"
    assert [r["ID"] for r in api.relations.filter(filter=brackets)] == [second["ID"]]
    assert len(api.relations.filter(filter=f"not (ID eq guid'{first['ID']}')")) == len(accounts) - 1

    orders = SalesOrders(api)
    for ref in ("10001", "10002", "10003"):
        orders.create(order(sandbox, ref))
    # Invoices.filter: "(YourRef eq 'a') and (YourRef eq 'b' or YourRef eq 'c')"
    got = orders.filter(invoice_number__in=["10001", "10003"], select="YourRef")
    assert sorted(r["YourRef"] for r in got) == ["10001", "10003"]
    both_ways = orders.filter(invoice_number="10002", invoice_number__in=["10002", "10003"])
    assert [r["YourRef"] for r in both_ways] == ["10002"]
    # numbers and datetimes
    numbered = orders.filter(filter="OrderNumber ge 2 and OrderNumber lt 3", select="YourRef")
    assert [r["YourRef"] for r in numbered] == ["10002"]
    dated = orders.filter(filter="OrderDate ge datetime'2026-11-20T00:00:00'", select="YourRef")
    assert len(dated) == 3
    assert orders.filter(filter="OrderDate gt datetime'2026-11-20'", select="YourRef") == []
    stored = {o["YourRef"]: o["OrderNumber"] for o in sandbox.erp.sales_orders}
    assert stored == {"10001": 1, "10002": 2, "10003": 3}


@pytest.mark.parametrize(
    ("resource", "expression", "words"),
    [
        # picqer/exact-php-client#173: "Operator 'eq' incompatible with operand types
        # 'System.String' and 'System.Int32' at position 5."
        ("crm/Accounts", "Code eq 200184", ["'eq'", "System.String", "System.Int32", "5"]),
        # picqer#52: a GUID field with a plain string literal (needs guid'…').
        (
            "salesorder/SalesOrders",
            "OrderedBy eq '0c8a4bd8-1f4c-4c1f-9d53-2f3f2b6c0a11'",
            ["'eq'", "System.Guid", "System.String", "10"],
        ),
        ("crm/Accounts", "Shoe eq 'x'", ["Shoe", "Exact.Web.Api.Models.Account"]),
        ("crm/Accounts", "Name eq 'O''Brien", ["Unterminated", "position 8"]),
        ("crm/Accounts", "Name eq 'x' and", ["ends"]),
        ("crm/Accounts", "Name like 'x'", ["like"]),
        ("crm/Accounts", "substringof('x', Name)", ["substringof"]),
    ],
)
def test_filters_exact_refuses_answer_400_naming_what_was_not_understood(
    sandbox: Sandbox, api: ExactApi, resource: str, expression: str, words: list[str]
) -> None:
    with pytest.raises(HTTPError) as raised:
        api.restv1(GET(f"{resource}?$filter={exactonline.http.binquote(expression)}"))
    message = odata_message(raised.value)
    assert all(word in message for word in words), message
    assert sum(sandbox.erp.statuses.values()) == sandbox.erp.statuses[400] + 1  # + the token


# --- sales orders ----------------------------------------------------------------------------


def test_sales_order_create_full_and_minimal(sandbox: Sandbox, api: ExactApi) -> None:
    orders = SalesOrders(api)
    full = order(sandbox, "10001", "SW10001", "SHIPPING")
    answer = orders.create(full)
    # Without Prefer: return=representation Exact answers the fields sent and the key.
    assert answer["YourRef"] == "10001" and answer["OrderID"]
    assert "OrderNumber" not in answer
    [stored] = sandbox.erp.orders_with_ref("10001")
    assert stored["OrderID"] == answer["OrderID"]
    assert [
        (ln["ItemCode"], ln["Quantity"], ln["NetPrice"]) for ln in stored["SalesOrderLines"]
    ] == [
        ("SW10001", 2, 10.0),
        ("SHIPPING", 2, 10.0),
    ]

    # The minimal order Exact accepts: OrderedBy, and lines with Item and Quantity; Exact
    # fills the date, the division's currency, the item's price and description.
    item = item_id(sandbox, "SW10002")
    minimal = {
        "OrderedBy": account_id(sandbox, "o'brien@example.ie"),
        "YourRef": "10002",
        "SalesOrderLines": [{"Item": item, "Quantity": 3}],
    }
    assert orders.create(minimal)["OrderID"]
    [stored] = sandbox.erp.orders_with_ref("10002")
    [line] = stored["SalesOrderLines"]
    price = float(sandbox.erp.item_prices[item])
    assert price > 0 and line["NetPrice"] == price
    assert line["AmountFC"] == round(3 * price, 2)
    assert line["Description"] == sandbox.erp.items[item]["Description"]
    assert stored["Currency"] == "EUR"
    assert stored["OrderDate"] == sandbox.erp.clock().date().isoformat()
    assert len(sandbox.erp.sales_orders) == 2


def test_sales_order_without_lines_or_customer_is_refused(sandbox: Sandbox, api: ExactApi) -> None:
    orders = SalesOrders(api)
    for body, field in (
        ({"OrderedBy": account_id(sandbox, "o'brien@example.ie")}, "SalesOrderLines"),
        ({"SalesOrderLines": [{"Item": item_id(sandbox, "SW10001"), "Quantity": 1}]}, "OrderedBy"),
    ):
        with pytest.raises(HTTPError) as raised:
            orders.create(body)
        assert field in odata_message(raised.value)
    assert sandbox.erp.sales_orders == []


def test_sales_order_found_by_your_ref_and_by_order_id_with_lines_deferred(
    sandbox: Sandbox, api: ExactApi
) -> None:
    orders, lines = SalesOrders(api), SalesOrderLines(api)
    orders.create(order(sandbox, "10001", "SW10003"))
    created = orders.create(order(sandbox, "10002", "SW10001", "SW10002", "SHIPPING"))
    order_id = created["OrderID"]

    # Invoices.get(invoice_number=…): YourRef eq '…', exactly one, else an exception.
    found = orders.get(invoice_number="10002")
    assert found["OrderID"] == order_id
    [by_id] = orders.filter(filter=f"OrderID eq guid'{order_id}'")
    assert by_id["YourRef"] == "10002"
    # The lines are a navigation property: a __deferred link, as Exact answers a GET.
    link = by_id["SalesOrderLines"]["__deferred"]["uri"]
    assert link.endswith(f"/salesorder/SalesOrders(guid'{order_id}')/SalesOrderLines")
    followed = api.restv1(GET(link))  # as Invoices.get follows SalesEntryLines
    filtered = lines.filter(filter=f"OrderID eq guid'{order_id}'")
    [stored] = sandbox.erp.orders_with_ref("10002")
    want = [(ln["ID"], ln["Item"], ln["Quantity"]) for ln in stored["SalesOrderLines"]]
    for rows in (followed, filtered):
        assert [(r["ID"], r["Item"], r["Quantity"]) for r in rows] == want
        assert {r["OrderID"] for r in rows} == {order_id}
    # $expand=SalesOrderLines brings them inline.
    [expanded] = orders.filter(filter=f"OrderID eq guid'{order_id}'", expand="SalesOrderLines")
    assert [r["ID"] for r in expanded["SalesOrderLines"]["results"]] == [w[0] for w in want]
    with pytest.raises(ObjectDoesNotExist):
        orders.get(invoice_number="99999")


# --- paging ----------------------------------------------------------------------------------


def test_the_library_pages_through_next_at_60_rows(sandbox: Sandbox, api: ExactApi) -> None:
    sandbox.erp.set_rate_limit(per_minute=1000)  # the library would sleep out the minute
    orders, lines = SalesOrders(api), SalesOrderLines(api)
    others = account_id(sandbox, "jose.nunez@example.es")
    for n in range(2 * PAGE + 5):
        body = order(sandbox, str(30000 + n))
        if n % 2:
            body["OrderedBy"] = others
        orders.create(body)
    assert len(sandbox.erp.sales_orders) == 125

    gets = sandbox.erp.calls["salesorders_get"]
    refs = [r["YourRef"] for r in orders.filter(select="YourRef")]
    assert refs == [o["YourRef"] for o in sandbox.erp.sales_orders]  # each once, in order
    assert sandbox.erp.calls["salesorders_get"] - gets == 3  # 60 + 60 + 5

    # A filter holds across pages: 62 orders of one customer are two pages.
    gets = sandbox.erp.calls["salesorders_get"]
    mine = orders.filter(filter=f"OrderedBy eq guid'{others}'", select="OrderID,YourRef")
    want = [o["YourRef"] for o in sandbox.erp.sales_orders if o["OrderedBy"] == others]
    assert [r["YourRef"] for r in mine] == want and len(want) == 62
    assert sandbox.erp.calls["salesorders_get"] - gets == 2

    all_lines = lines.filter(select="ID,OrderID")
    assert len(all_lines) == 125 and sandbox.erp.calls["salesorderlines_get"] == 3
    # $top asks for one page only: no __next.
    assert len(orders.filter(top=5, select="YourRef")) == 5
