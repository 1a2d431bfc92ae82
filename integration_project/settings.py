"""Constants and defaults: the sandbox's addresses and credentials, the EU, ISO country codes.

Nothing here has side effects: the few functions read the environment when called, never at
import. The sandbox imports this module (never the other way round), so both agree on where the
sandbox listens and which credentials it accepts. ``dev.py`` imports it too (standard library
only), so keep it free of third-party imports.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

# --- Sandbox mode: the local sandbox only when asked for ---------------------------------------

#: ``INTEGRATION_SANDBOX=1`` turns sandbox mode on: a route side whose URL variable is unset then
#: talks to the local sandbox. Off (the default), every variable a route names must be set.
SANDBOX_MODE_ENV = "INTEGRATION_SANDBOX"
SANDBOX_MODE_ON = ("1", "true", "yes")
SANDBOX_MODE_OFF = ("", "0", "false", "no")


def sandbox_mode(environ: Mapping[str, str] | None = None) -> bool:
    """Whether sandbox mode is on (``INTEGRATION_SANDBOX``), read from ``environ`` (default: the
    process environment, now). Unset or 0/false/no is off; 1/true/yes is on; anything else is a
    mistake and raises ``ValueError`` naming the variable (a typo must not pick a side)."""
    value = (os.environ if environ is None else environ).get(SANDBOX_MODE_ENV)
    if value is None:
        return False
    flag = value.strip().lower()
    if flag in SANDBOX_MODE_ON:
        return True
    if flag in SANDBOX_MODE_OFF:
        return False
    shown = value if len(value) <= 20 else value[:20] + "..."
    raise ValueError(
        f"{SANDBOX_MODE_ENV}={shown!r} is not understood: set it to 1 (or true/yes) for the local "
        "sandbox, or 0 (or false/no, or leave it unset) to require every route variable"
    )


# --- The ledger file ------------------------------------------------------------------------------

#: The ledger file's variable; without it the ledger lives under the user's data folder.
DUCKDB_PATH_ENV = "INTEGRATION_DUCKDB_PATH"
#: A PostgreSQL ledger instead of the file (``postgresql://user:password@host:5432/db``), for
#: runs on several hosts. It wins over ``INTEGRATION_DUCKDB_PATH``.
LEDGER_URL_ENV = "INTEGRATION_LEDGER_URL"


def ledger_kind(environ: Mapping[str, str] | None = None) -> str:
    """``postgres`` when the ledger is a PostgreSQL database (``INTEGRATION_LEDGER_URL``), else
    ``duckdb``: the kind the UI shows on every asset that writes the ledger."""
    env = os.environ if environ is None else environ
    return "postgres" if env.get(LEDGER_URL_ENV, "").strip() else "duckdb"


LEDGER_FOLDER = "integration_project"
LEDGER_FILE = "ledger.duckdb"
#: The default ledger in sandbox mode: never the same file as a real route's ledger.
SANDBOX_LEDGER_FILE = "sandbox.duckdb"


def default_ledger_path(environ: Mapping[str, str] | None = None, *, sandbox: bool = False) -> Path:
    """``$XDG_DATA_HOME/integration_project/ledger.duckdb`` (``~/.local/share`` when unset),
    ``sandbox.duckdb`` beside it in sandbox mode: never inside the installed package."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME", "").strip()
    # The XDG spec: a relative XDG_DATA_HOME is invalid and is ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / LEDGER_FOLDER / (SANDBOX_LEDGER_FILE if sandbox else LEDGER_FILE)


# --- The sandbox (used in sandbox mode when a route's URL variable is unset) -------------------

SANDBOX_HOST = "127.0.0.1"
SANDBOX_SHOP_PORT = 8801
SANDBOX_ERP_PORT = 8802
SANDBOX_SHOP_URL = f"http://{SANDBOX_HOST}:{SANDBOX_SHOP_PORT}"
SANDBOX_ERP_URL = f"http://{SANDBOX_HOST}:{SANDBOX_ERP_PORT}"
SANDBOX_SHOP_CLIENT_ID = "SWIASANDBOXSHOPCLIENT"
SANDBOX_SHOP_CLIENT_SECRET = "sandbox-shop-secret"
#: A second sandbox shop (a B2B storefront) for the second example route.
SANDBOX_SHOP2_PORT = 8803
SANDBOX_SHOP2_URL = f"http://{SANDBOX_HOST}:{SANDBOX_SHOP2_PORT}"
SANDBOX_SHOP2_CLIENT_ID = "SWIASANDBOXB2BCLIENT"
SANDBOX_SHOP2_CLIENT_SECRET = "sandbox-b2b-secret"
SANDBOX_ERP_DIVISION = "1234567"
SANDBOX_ERP_CLIENT_ID = "sandbox-erp-client"
SANDBOX_ERP_CLIENT_SECRET = "sandbox-erp-secret"
SANDBOX_ERP_REFRESH_TOKEN = "sandbox-initial-refresh-token"
#: The sandbox Spryker backend (a route with ``source: {type: spryker}``).
SANDBOX_SPRYKER_PORT = 8804
SANDBOX_SPRYKER_URL = f"http://{SANDBOX_HOST}:{SANDBOX_SPRYKER_PORT}"
SANDBOX_SPRYKER_USERNAME = "integration@example.com"
SANDBOX_SPRYKER_PASSWORD = "sandbox-spryker-password"
#: The folder the sandbox drops order files in (a route with ``source: {type: csv}``), under
#: the user's data folder beside the sandbox ledger.
SANDBOX_CSV_FOLDER = "sandbox_csv_orders"


def sandbox_csv_folder(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/integration_project/sandbox_csv_orders``: where the sandbox drops order
    files and a CSV route reads them in sandbox mode when its folder variable is unset."""
    return default_ledger_path(environ, sandbox=True).parent / SANDBOX_CSV_FOLDER


#: Where a route with ``export: {parquet: true}`` writes its daily Parquet files (an absolute
#: path). Outside sandbox mode it must be set: a warehouse reads that folder, so a guessed
#: local default would export where nobody looks.
EXPORT_DIR_ENV = "INTEGRATION_EXPORT_DIR"
#: The export folder in sandbox mode when the variable is unset, beside the sandbox ledger.
SANDBOX_EXPORT_FOLDER = "sandbox_export"


def sandbox_export_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/integration_project/sandbox_export``: the export folder in sandbox mode
    when ``INTEGRATION_EXPORT_DIR`` is unset."""
    return default_ledger_path(environ, sandbox=True).parent / SANDBOX_EXPORT_FOLDER


# --- The route ---------------------------------------------------------------------------------

#: One partition per window of the shop's createdAt, UTC, half-open [start, end).
WINDOW = timedelta(minutes=5)
#: The first window the partitions definition knows about (backfills can reach back to it),
#: for a route whose file sets no ``partitions_start``.
PARTITIONS_START = "2026-11-01-00:00"
#: Set by ``dev.py up``: when the sandbox world it started begins (the first window of the shop's
#: history, ``YYYY-MM-DD-HH:MM`` UTC). In sandbox mode it is the first window of every route
#: whose file sets no ``partitions_start``, so the catalog shows that world's windows only.
SANDBOX_START_ENV = "INTEGRATION_SANDBOX_START"
PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


def default_partitions_start(environ: Mapping[str, str] | None = None) -> str:
    """The first window of a route whose file names none: the sandbox world's start
    (``INTEGRATION_SANDBOX_START``) in sandbox mode, else :data:`PARTITIONS_START`. Read when
    called (definitions load), never at import; a malformed value raises ``ValueError``
    naming the variable."""
    env = os.environ if environ is None else environ
    value = env.get(SANDBOX_START_ENV, "").strip()
    if not value or not sandbox_mode(env):
        return PARTITIONS_START
    try:
        parse_window_start(value)
    except ValueError:
        raise ValueError(
            f"{SANDBOX_START_ENV}={value[:40]!r} is not a window start like '2026-12-02-06:15'"
        ) from None
    return value


def window_start(moment: datetime) -> datetime:
    """The start of the window ``moment`` falls in (windows of :data:`WINDOW` from the hour)."""
    step = int(WINDOW.total_seconds())
    floored = int(moment.timestamp()) // step * step
    return datetime.fromtimestamp(floored, tz=moment.tzinfo or UTC)


def parse_window_start(value: str) -> datetime:
    """``YYYY-MM-DD-HH:MM`` (a partition key) as an aware UTC datetime; ``ValueError`` if not."""
    return datetime.strptime(value, PARTITION_FORMAT).replace(tzinfo=UTC)


DEFAULT_PAGE_SIZE = 100

#: The shop's time zone when a route names none: ``OrderDate`` is the calendar date there.
DEFAULT_SHOP_TIMEZONE = "Europe/Berlin"

#: ERP item codes used for order lines that are not products.
SHIPPING_ITEM_CODE = "SHIPPING"
DISCOUNT_ITEM_CODE = "DISCOUNT"

EU_27: frozenset[str] = frozenset(  # 27 member states since 2020
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
)

#: ISO 3166-1 alpha-2 codes: a country outside this set is "unknown", not "non-EU".
ISO_COUNTRIES: frozenset[str] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
    BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ
    EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW
    GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY
    KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV
    MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY
    QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG
    TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM
    ZW XK
    """.split()
)

#: ISO 4217 codes the sandbox ERP (and the mapping) accept.
CURRENCIES: frozenset[str] = frozenset(
    "EUR USD GBP CHF SEK DKK NOK PLN CZK HUF RON BGN JPY CAD AUD".split()
)
