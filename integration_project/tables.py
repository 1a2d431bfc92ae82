"""DuckDB query results as Dagster table metadata: the small tables (previews, samples) that the
UI shows on a materialization, with each column's type, so a reader can check rows by eye.

pandas does the conversion: a DuckDB result's ``.df()`` types every column (nullable integers,
time-zone-aware timestamps, booleans with nulls), and those types become the table's schema.
The UI parses each record as JSON in the browser, so every value is made JSON-safe on the way.
pandas is imported when a table is made, not when the code location loads: a third of a second
of CPU in every run process (and every run of an idle route) that shows no table.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Protocol

import dagster as dg

if TYPE_CHECKING:
    import pandas as pd

#: The largest integer a browser's JSON parser keeps exact (2**53 - 1): a larger one, an order
#: id say, is shown as text rather than rounded.
MAX_EXACT_INT = 2**53 - 1

Cell = str | int | float | bool | None


class QueryResult(Protocol):
    """A DuckDB relation (``con.sql(...)``) or a connection after ``execute``."""

    def df(self) -> pd.DataFrame: ...


def table_metadata(result: QueryResult) -> dg.TableMetadataValue:
    """Every row of ``result`` as a Dagster table, its schema typed from the pandas dtypes.

    Column types: ``int``, ``float`` (DuckDB hands DECIMAL to pandas as float), ``bool``,
    ``timestamp`` (DATE too), ``timestamp (<time zone>)`` for TIMESTAMPTZ, ``interval``, and
    ``string`` for text and whatever else, shown as text (lists and structs as JSON, UUIDs).
    Values: NULL, NaN and NaT are None; timestamps ISO 8601 text (with their offset); integers
    beyond 2**53 - 1 text. Limit the rows in the query: the metadata is stored with every
    materialization.
    """
    frame = result.df()  # imports pandas
    columns = [
        dg.TableColumn(name=str(name), type=column_type(frame[name].dtype))
        for name in frame.columns
    ]
    records = [
        dg.TableRecord({str(name): json_cell(value) for name, value in row.items()})
        for row in frame.to_dict("records")
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def column_type(dtype: object) -> str:
    """The type a reader sees for a column of this pandas dtype."""
    import pandas as pd

    types = pd.api.types
    if isinstance(dtype, pd.DatetimeTZDtype):
        return f"timestamp ({dtype.tz})"
    if types.is_datetime64_dtype(dtype):
        return "timestamp"
    if types.is_timedelta64_dtype(dtype):
        return "interval"
    if types.is_bool_dtype(dtype):
        return "bool"
    if types.is_integer_dtype(dtype):
        return "int"
    if types.is_float_dtype(dtype):
        return "float"
    return "string"


def json_cell(value: object) -> Cell:
    """One value as the browser can parse and show it exactly (see :func:`table_metadata`)."""
    import pandas as pd

    scalars = pd.api.types
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if scalars.is_bool(value):  # Python's or numpy's
        return bool(value)
    if scalars.is_integer(value):
        number = int(value)
        return number if abs(number) <= MAX_EXACT_INT else str(number)
    if scalars.is_float(value):
        number = float(value)
        if math.isnan(number):
            return None
        return number if math.isfinite(number) else str(number)
    if isinstance(value, datetime | date | time):  # pd.Timestamp is a datetime
        return value.isoformat()
    if isinstance(value, timedelta):  # pd.Timedelta too
        return str(pd.Timedelta(value))
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist"):  # a LIST column's numpy array
        value = value.tolist()
    if isinstance(value, list | dict):  # LIST, STRUCT, MAP
        return json.dumps(value, default=str)
    return str(value)
