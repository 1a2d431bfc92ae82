"""dlt loading the same order pages into DuckDB, with parquet loader files.

    .bench-venv/bin/python bench/contenders/dlt_load.py --shop-url URL --client-id ID \
        --client-secret SECRET --criteria criteria.json --db out.duckdb --work DIR

Runs with the python of the bench's dlt environment (``bench/dlt_env.py``), never the
project's: it imports nothing of the project and speaks HTTP itself. A token from
``POST /api/oauth/token`` (client credentials), then the order search with the route's
criteria (``--criteria``: page 1's body, as the route builds it) page after page until one
comes back short; a dlt resource yields each page's orders, and one pipeline extracts them to
parquet files, normalises them (nested lists become child tables) and loads them into a DuckDB
file. Prints one JSON line: orders loaded, wall seconds, seconds per dlt step, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

TOKEN_PATH = "/api/oauth/token"
ORDER_SEARCH_PATH = "/api/search/order"


def shop_token(session: requests.Session, shop_url: str, client_id: str, secret: str) -> str:
    """An access token for the shop (client credentials); the secret never in an error."""
    grant = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    answer = session.post(shop_url + TOKEN_PATH, json=grant, timeout=30)
    if not answer.ok:
        raise SystemExit(f"POST {shop_url}{TOKEN_PATH} answered HTTP {answer.status_code}")
    return answer.json()["access_token"]


def order_pages(args: argparse.Namespace, criteria: dict[str, Any]) -> Iterator[list[Any]]:
    """Each page of the search's orders, until a short page."""
    shop_url = args.shop_url.rstrip("/")
    url = shop_url + ORDER_SEARCH_PATH
    limit = int(criteria["limit"])
    with requests.Session() as session:
        token = shop_token(session, shop_url, args.client_id, args.client_secret)
        headers = {"Authorization": f"Bearer {token}"}
        page = 1
        while True:
            body = {**criteria, "page": page}
            answer = session.post(url, json=body, headers=headers, timeout=300)
            if not answer.ok:
                raise SystemExit(f"POST {url} (page {page}) answered {answer.status_code}")
            data = json.loads(answer.content)["data"]
            yield data
            if len(data) < limit:
                return
            page += 1


def load(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline, step by step (extract, normalize, load), timed."""
    import dlt

    criteria = json.loads(Path(args.criteria).read_text())
    orders = dlt.resource(order_pages(args, criteria), name="orders", write_disposition="append")
    pipeline = dlt.pipeline(
        pipeline_name="bench_orders",
        pipelines_dir=str(Path(args.work) / "pipelines"),
        destination=dlt.destinations.duckdb(args.db),
        dataset_name="shop",
    )
    steps: dict[str, float] = {}
    began = time.perf_counter()
    pipeline.extract(orders, loader_file_format="parquet")
    steps["extract"] = time.perf_counter() - began
    pipeline.normalize()
    steps["normalize"] = time.perf_counter() - began - steps["extract"]
    pipeline.load()
    wall = time.perf_counter() - began
    steps["load"] = wall - steps["extract"] - steps["normalize"]
    with pipeline.sql_client() as client:
        loaded = client.execute_sql("SELECT count(*) FROM orders")[0][0]
    rounded = {step: round(seconds, 3) for step, seconds in steps.items()}
    return {"orders": int(loaded), "wall_s": round(wall, 3), "steps": rounded}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shop-url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--criteria", required=True, help="JSON file: the search's first page")
    parser.add_argument("--db", required=True, help="the DuckDB file dlt loads into")
    parser.add_argument("--work", required=True, help="a folder for dlt's pipeline state")
    args = parser.parse_args(argv)
    # No telemetry, no configuration from the user's home: the run depends on its arguments.
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
    os.environ.setdefault("DLT_DATA_DIR", str(Path(args.work) / "dlt-data"))
    os.environ.setdefault("DLT_PROJECT_DIR", args.work)
    import dlt

    result = load(args)
    peak = _peak_rss_mib()
    line = {"contender": "dlt", **result, "dlt_version": dlt.__version__, "peak_rss_mib": peak}
    sys.stdout.write(json.dumps(line) + "\n")
    return 0


def _peak_rss_mib() -> float:
    """As ``bench.contenders.peak_rss_mib`` (this file runs in dlt's own venv, without the
    bench package): ``VmHWM``, which, unlike ``ru_maxrss``, is not the parent's carried over."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


if __name__ == "__main__":
    raise SystemExit(main())
