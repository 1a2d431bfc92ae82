"""Constants and defaults: the sandbox's addresses and credentials, the EU, ISO country codes.

Nothing here has side effects. The sandbox imports this module (never the other way round), so
both agree on where the sandbox listens and which credentials it accepts.
"""

from __future__ import annotations

from datetime import timedelta

# --- The sandbox (the default target when no environment variable is set) --------------------

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

DEFAULT_DUCKDB_PATH = "data/integration.duckdb"

# --- The route ---------------------------------------------------------------------------------

#: One partition per window of the shop's createdAt, UTC, half-open [start, end).
WINDOW = timedelta(minutes=5)
#: The first window the partitions definition knows about (backfills can reach back to it).
PARTITIONS_START = "2026-11-01-00:00"
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
