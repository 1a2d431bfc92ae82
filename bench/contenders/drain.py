"""The bare drain: the order search's pages with ``requests`` + ``json.loads``, then dropped.

    python -m bench.contenders.drain --shop-url URL --start ISO --end ISO

The fetch limit every other contender is held against, and the sandbox's own drain rate: the
route's criteria (``created_at_window_criteria``, page size 500, oldest first), page after
page until one comes back short, each answer parsed and discarded. No Dagster, no DuckDB.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime

import requests

from bench.contenders import emit, moment
from integration_project.settings import SANDBOX_SHOP_CLIENT_ID, SANDBOX_SHOP_CLIENT_SECRET
from integration_project.shopware.models import (
    ORDER_SEARCH_PATH,
    TOKEN_PATH,
    created_at_window_criteria,
)

PAGE_SIZE = 500


def shop_token(session: requests.Session, shop_url: str) -> str:
    """An access token for the sandbox shop (client credentials)."""
    grant = {
        "grant_type": "client_credentials",
        "client_id": SANDBOX_SHOP_CLIENT_ID,
        "client_secret": SANDBOX_SHOP_CLIENT_SECRET,
    }
    answer = session.post(shop_url + TOKEN_PATH, json=grant, timeout=30)
    if not answer.ok:
        raise SystemExit(f"POST {shop_url}{TOKEN_PATH} answered HTTP {answer.status_code}")
    return answer.json()["access_token"]


def drain(shop_url: str, start: datetime, end: datetime) -> dict[str, int]:
    """Every page of ``[start, end)``; counts of orders and pages."""
    url = shop_url.rstrip("/") + ORDER_SEARCH_PATH
    orders = pages = 0
    with requests.Session() as session:
        headers = {"Authorization": f"Bearer {shop_token(session, shop_url.rstrip('/'))}"}
        while True:
            criteria = created_at_window_criteria(
                start=start, end=end, page=pages + 1, limit=PAGE_SIZE
            )
            answer = session.post(url, json=criteria.to_json(), headers=headers, timeout=300)
            if not answer.ok:
                raise SystemExit(f"POST {url} (page {pages + 1}) answered {answer.status_code}")
            data = json.loads(answer.content)["data"]
            pages += 1
            orders += len(data)
            if len(data) < PAGE_SIZE:
                return {"orders": orders, "pages": pages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contenders.drain", description=__doc__)
    parser.add_argument("--shop-url", required=True)
    parser.add_argument("--start", required=True, help="first moment, ISO 8601")
    parser.add_argument("--end", required=True, help="end of the range (excluded), ISO 8601")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    counts = drain(args.shop_url, moment(args.start), moment(args.end))
    emit({"contender": "drain", **counts, "wall_s": round(time.perf_counter() - began, 3)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
