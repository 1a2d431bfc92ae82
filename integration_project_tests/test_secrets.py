"""Secrets stay secret: the whole route runs with distinctive credentials, then everything an
operator or an attacker with UI access could read is searched for them — Dagster's event log
(run logs, metadata, step failures with their exceptions), the Python log output, stdout and
stderr, and every ledger table but the token store. TLS verification stays on."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from integration_project.exact.client import ExactClient
from integration_project.http import ApiError
from integration_project.ledger import DuckDBTokenStore
from integration_project.resources import ErpResource, ShopResource, open_ledger
from integration_project.sandbox import Sandbox, SandboxErp, SandboxShop
from integration_project.shopware.client import ShopwareClient
from integration_project_testkit.ledger_reads import delivered_rows
from integration_project_testkit.routes import default_assets
from integration_project_testkit.windows import WINDOW_END, WINDOW_KEY, WINDOW_START

DEFAULT = default_assets()

pytestmark = pytest.mark.integration

SHOP_ID = "SWIA-shop-id-7f3a"
SHOP_SECRET = "shop-secret-Zq8uW2pLx9"
ERP_ID = "erp-client-id-4c1e"
ERP_SECRET = "erp-secret-Vb7nR3kTy5"
ERP_REFRESH = "erp-refresh-Hs6dJ1mQw4"
SEED = 11


@pytest.fixture
def secret_sandbox() -> Iterator[Sandbox]:
    shop = SandboxShop(seed=SEED, client_id=SHOP_ID, client_secret=SHOP_SECRET)
    erp = SandboxErp(
        seed=SEED, client_id=ERP_ID, client_secret=ERP_SECRET, refresh_token=ERP_REFRESH
    )
    erp.min_refresh_interval_s = 0
    with Sandbox(seed=SEED, shop=shop, erp=erp) as sb:
        yield sb


def secret_resources(
    sb: Sandbox, duckdb_path: str, shop_secret: str = SHOP_SECRET, erp_secret: str = ERP_SECRET
) -> dict[str, Any]:
    return {
        "shop": ShopResource(
            api_url=sb.shop_url, client_id=SHOP_ID, client_secret=shop_secret, max_retries=1
        ),
        "erp": ErpResource(
            api_url=sb.erp_url,
            division=sb.erp.division,
            client_id=ERP_ID,
            client_secret=erp_secret,
            refresh_token=ERP_REFRESH,
            max_retries=1,
        ),
        "duckdb": DuckDBResource(database=duckdb_path),
    }


def test_no_secret_reaches_logs_metadata_errors_or_the_ledger(
    secret_sandbox: Sandbox,
    duckdb_path: str,
    dagster_instance: dg.DagsterInstance,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sb = secret_sandbox
    caplog.set_level("DEBUG")
    sb.shop.add_orders(6, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    refused = sb.shop.add_order(WINDOW_START + timedelta(minutes=2), shipping_country="DE")
    refused["currency"]["isoCode"] = "XAU"  # the ERP refuses it: an error recorded and logged
    resources = secret_resources(sb, duckdb_path)
    run_ids = []
    result = dg.materialize(
        [DEFAULT.source_orders, DEFAULT.erp_orders],
        partition_key=WINDOW_KEY,
        resources=resources,
        instance=dagster_instance,
    )
    run_ids.append(result.run_id)
    # A lost answer and a refused order: the failure paths log and record errors too.
    sb.erp.faults.add("lost_after_commit", path_contains="SalesOrders", method="POST")
    for _ in range(2):
        result = dg.materialize(
            [DEFAULT.erp_delivered_orders], resources=resources, instance=dagster_instance
        )
        run_ids.append(result.run_id)
    assert len(sb.erp.sales_orders) == 6
    ledger = open_ledger(resources["duckdb"], DEFAULT.route.id, resources["erp"].token_key)
    [failed] = [r for r in delivered_rows(ledger) if r["status"] == "failed"]
    assert failed["order_number"] == refused["orderNumber"] and "XAU" in failed["last_error"]
    # The access tokens the route used so far: revoking forgets them, the search must not.
    used_access = set(sb.erp._access_tokens)
    assert used_access  # the ERP runs above did use one
    used_refresh = {sb.erp.refresh_token}  # the rotated refresh token the ledger now holds
    sb.erp.revoke_access_tokens()  # the next run refreshes: the rotated token is new again
    # Runs that fail on credentials: wrong shop secret, wrong ERP secret.
    wrong_shop = secret_resources(sb, duckdb_path, shop_secret=SHOP_SECRET[::-1])
    # A ledger of its own, without the stored access token: the ERP secret is needed at once.
    fresh = str(Path(duckdb_path).with_name("fresh.duckdb"))
    wrong_erp = secret_resources(sb, fresh, erp_secret=ERP_SECRET[::-1])
    for bad, assets in (
        (wrong_shop, [DEFAULT.source_orders]),
        (wrong_erp, [DEFAULT.source_orders, DEFAULT.erp_orders]),
    ):
        result = dg.materialize(
            assets,
            partition_key=WINDOW_KEY,
            resources=bad,
            instance=dagster_instance,
            raise_on_error=False,
        )
        assert not result.success
        run_ids.append(result.run_id)

    rotated = {sb.erp.refresh_token, *(t for t in [sb.erp.previous_refresh_token] if t)}
    access = used_access | set(sb.erp._access_tokens)  # every ERP access token handed out
    secrets = {SHOP_SECRET, ERP_SECRET, ERP_REFRESH, *rotated, *used_refresh, *access}
    secrets |= {SHOP_SECRET[::-1], ERP_SECRET[::-1]}  # the wrong ones must not leak either
    assert ERP_REFRESH not in used_refresh  # it did rotate: the new token is searched for too

    event_log = "\n".join(
        dg.serialize_value(entry)
        for run_id in run_ids
        for entry in dagster_instance.all_logs(run_id)
    )
    assert "Exact Online" in event_log and "SHOP_CLIENT_SECRET" in event_log  # it was read
    out, err = capfd.readouterr()
    places = {"event log": event_log, "python logs": caplog.text, "stdout": out, "stderr": err}
    for place, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:4]}…) leaked into the {place}"

    # The ERP's refresh token lives in the token store and nowhere else in the ledger.
    with duckdb.connect(duckdb_path, read_only=True) as con:
        tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
        dumps = {t: repr(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}
    assert sb.erp.refresh_token in dumps.pop("erp_tokens")
    for table, dump in dumps.items():
        for secret in secrets:
            assert secret not in dump, f"a secret ({secret[:4]}…) is stored in {table}"


def test_client_errors_name_the_variable_never_the_value(
    secret_sandbox: Sandbox, duckdb_path: str
) -> None:
    sb = secret_sandbox
    ledger = open_ledger(DuckDBResource(database=duckdb_path), DEFAULT.route.id, "k")
    erp = ExactClient(
        base_url=sb.erp_url,
        division=sb.erp.division,
        client_id=ERP_ID,
        client_secret=ERP_SECRET + "-wrong",
        refresh_token=ERP_REFRESH,
        token_store=DuckDBTokenStore(ledger.db, "k"),
        max_retries=0,
    )
    shop = ShopwareClient(
        base_url=sb.shop_url, client_id=SHOP_ID, client_secret=SHOP_SECRET + "-wrong"
    )
    for call, variable in (
        (lambda: erp.find_item_id("SHIPPING"), "ERP_CLIENT_SECRET"),
        (
            lambda: shop.search_orders_page(start=WINDOW_START, end=WINDOW_END, page=1, limit=5),
            "SHOP_CLIENT_SECRET",
        ),
    ):
        with pytest.raises(ApiError) as raised:
            call()
        text = f"{raised.value}\n{raised.value!r}\n{raised.getrepr()}"
        for secret in (SHOP_SECRET, ERP_SECRET, ERP_REFRESH):
            assert secret not in text
        # What to fix is named: the variable holding the secret.
        assert variable in str(raised.value)


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed_https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTPS server whose certificate no CA signed: a client that verifies must refuse."""
    folder: Path = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_tls_certificates_are_verified(self_signed_https: str, duckdb_path: str) -> None:
    ledger = open_ledger(DuckDBResource(database=duckdb_path), DEFAULT.route.id, "tls")
    erp = ExactClient(
        base_url=self_signed_https,
        division="1",
        client_id=ERP_ID,
        client_secret=ERP_SECRET,
        refresh_token=ERP_REFRESH,
        token_store=DuckDBTokenStore(ledger.db, "tls"),
        max_retries=0,
    )
    shop = ShopwareClient(
        base_url=self_signed_https, client_id=SHOP_ID, client_secret=SHOP_SECRET, max_retries=0
    )
    for call in (
        lambda: erp.find_item_id("SHIPPING"),
        lambda: shop.search_orders_page(start=WINDOW_START, end=WINDOW_END, page=1, limit=5),
    ):
        with pytest.raises(ApiError) as raised:
            call()
        assert "SSLError" in str(raised.value)
        assert self_signed_https in str(raised.value)
