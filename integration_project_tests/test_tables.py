"""integration_project.tables: a DuckDB query result as the table a user sees in the Dagster UI,
column types and values, and values that survive the browser's JSON parser."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import pytest

from integration_project.tables import table_metadata


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()  # in memory
    # TIMESTAMPTZ values come out in the session's time zone: not UTC, to see that it is kept.
    con.execute("SET TimeZone = 'Europe/Amsterdam'")
    return con


ORDERS = """
    SELECT * FROM (VALUES
        (1001, 'SW-1001', 19.99::DECIMAL(12, 2), TRUE,
         TIMESTAMPTZ '2026-11-01 09:00:00+00', TIMESTAMP '2026-11-01 10:30:00', DATE '2026-11-02'),
        (9007199254740993, NULL, NULL, NULL, NULL, NULL, NULL)
    ) AS orders(order_id, order_number, amount, sent, sent_at, fetched_at, day)
"""


def test_a_relation_becomes_a_typed_table(con: duckdb.DuckDBPyConnection) -> None:
    table = table_metadata(con.sql(ORDERS))

    assert isinstance(table, dg.TableMetadataValue)
    assert table.schema is not None
    assert [(column.name, column.type) for column in table.schema.columns] == [
        ("order_id", "int"),
        ("order_number", "string"),
        ("amount", "float"),  # DECIMAL reaches pandas as float
        ("sent", "bool"),
        ("sent_at", "timestamp (Europe/Amsterdam)"),
        ("fetched_at", "timestamp"),
        ("day", "timestamp"),
    ]
    assert [record.data for record in table.records] == [
        {
            "order_id": 1001,
            "order_number": "SW-1001",
            "amount": 19.99,
            "sent": True,
            "sent_at": "2026-11-01T10:00:00+01:00",
            "fetched_at": "2026-11-01T10:30:00",
            "day": "2026-11-02T00:00:00",
        },
        {
            # Past 2**53 a browser would round it: shown as text instead.
            "order_id": "9007199254740993",
            "order_number": None,
            "amount": None,
            "sent": None,
            "sent_at": None,
            "fetched_at": None,
            "day": None,
        },
    ]


def test_a_cursor_and_values_json_cannot_hold(con: duckdb.DuckDBPyConnection) -> None:
    cursor = con.execute(
        """SELECT * FROM (VALUES
            ('nan'::DOUBLE, 'inf'::DOUBLE, INTERVAL 5 MINUTE, [1, 2], {'sku': 'A-1', 'qty': 2},
             '5b6e0c7a-3f57-4a57-9f3e-0d5f8c6e2a11'::UUID, 7::UBIGINT),
            (2.5, NULL, NULL, NULL, NULL, NULL, NULL)
        ) AS t(ratio, ceiling, lookback, lines, line, id, small)"""
    )
    table = table_metadata(cursor)

    assert table.schema is not None
    assert [(column.name, column.type) for column in table.schema.columns] == [
        ("ratio", "float"),
        ("ceiling", "float"),
        ("lookback", "interval"),
        ("lines", "string"),
        ("line", "string"),
        ("id", "string"),
        ("small", "int"),
    ]
    assert [record.data for record in table.records] == [
        {
            "ratio": None,
            "ceiling": "inf",
            "lookback": "0 days 00:05:00",
            "lines": "[1, 2]",
            "line": '{"sku": "A-1", "qty": 2}',
            "id": "5b6e0c7a-3f57-4a57-9f3e-0d5f8c6e2a11",
            "small": 7,
        },
        {
            "ratio": 2.5,
            "ceiling": None,
            "lookback": None,
            "lines": None,
            "line": None,
            "id": None,
            "small": None,
        },
    ]
    # What the UI receives: one strict JSON document per record, read back unchanged.
    for record in table.records:
        assert json.loads(json.dumps(record.data, allow_nan=False)) == record.data


def test_the_table_is_stored_and_read_back_by_dagster(con: duckdb.DuckDBPyConnection) -> None:
    table = table_metadata(con.sql(ORDERS))

    assert dg.deserialize_value(dg.serialize_value(table)) == table
