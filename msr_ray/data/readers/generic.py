"""Generic items + interactions files (CSV or Parquet).

Layout of the input folder::

    items.csv | items.parquet                item_id, title[, text][, image]
    interactions.csv | interactions.parquet  user_id, item_id, timestamp

``image`` holds one or more image paths relative to the items file (CSV: joined
with ``|``; Parquet: a string, a list of strings, bytes or a list of bytes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow.parquet as pq

from msr_ray.data.readers.common import RawDataset, Row, build_dataset, csv_rows, find_file
from msr_ray.data.schemas import DataError

ITEM_COLUMNS = ["item_id", "title"]
INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp"]


def _parquet_rows(path: str, required: list[str]) -> Iterator[Row]:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise DataError(path, f"cannot read Parquet: {exc}") from None
    for column in required:
        if column not in table.column_names:
            raise DataError(path, f"missing column (have {table.column_names})", column=column)
    for index, row in enumerate(table.to_pylist(), start=1):
        yield path, index, row


def _split_images(value) -> list:
    if value is None:
        return []
    if isinstance(value, bytes | bytearray):
        return [bytes(value)]
    if isinstance(value, list):
        return [v for v in value if v]
    return [p for p in str(value).split("|") if p.strip()]


def _item_rows(path: str) -> Iterator[Row]:
    rows = (
        _parquet_rows(path, ITEM_COLUMNS)
        if path.endswith(".parquet")
        else csv_rows(path, ITEM_COLUMNS)
    )
    for file, line, row in rows:
        yield file, line, {**row, "images": _split_images(row.get("image"))}


def read_generic(path: str, max_image_side: int = 336) -> RawDataset:
    """Read ``items.*`` and ``interactions.*`` (CSV or Parquet) from a folder."""
    items = find_file(path, "items.parquet", "items.csv")
    interactions = find_file(path, "interactions.parquet", "interactions.csv")
    interaction_rows = (
        _parquet_rows(interactions, INTERACTION_COLUMNS)
        if interactions.endswith(".parquet")
        else csv_rows(interactions, INTERACTION_COLUMNS)
    )
    return build_dataset(
        _item_rows(items), interaction_rows, os.path.dirname(items), max_image_side
    )
