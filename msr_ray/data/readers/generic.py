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

from msr_ray.data.readers.common import (
    MALFORMED,
    RawDataset,
    Row,
    build_dataset,
    csv_rows,
    find_file,
)
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


def _renamed(
    rows: Iterator[Row], columns: dict[str, str], text_columns: list[str]
) -> Iterator[Row]:
    """Rows with the source's column names mapped to ours (and text built from columns)."""
    for file, line, row in rows:
        if MALFORMED in row:
            yield file, line, row
            continue
        mapped = {ours: row.get(theirs) for ours, theirs in columns.items()}
        out = {**row, **mapped}
        if text_columns:
            parts = [str(row[c]).strip() for c in text_columns if row.get(c) not in (None, "")]
            out["text"] = ". ".join(p for p in parts if p)
        yield file, line, out


def _rows(path: str, required: list[str]) -> Iterator[Row]:
    if path.endswith(".parquet"):
        return _parquet_rows(path, required)
    return csv_rows(path, required)


def read_generic(
    path: str,
    max_image_side: int = 336,
    columns: dict[str, str] | None = None,
    text_columns: list[str] | None = None,
) -> RawDataset:
    """Read ``items.*`` and ``interactions.*`` (CSV or Parquet) from a folder.

    ``columns`` maps our column names to the source's; ``text_columns`` builds the item
    text from several source columns.
    """
    columns, text_columns = dict(columns or {}), list(text_columns or [])
    items = find_file(path, "items.parquet", "items.csv")
    interactions = find_file(path, "interactions.parquet", "interactions.csv")
    item_required = [columns.get(c, c) for c in ITEM_COLUMNS] + text_columns
    interaction_required = [columns.get(c, c) for c in INTERACTION_COLUMNS]
    item_rows = (
        (file, line, {**row, "images": _split_images(row.get("image"))})
        for file, line, row in _renamed(_rows(items, item_required), columns, text_columns)
    )
    interaction_rows = _renamed(_rows(interactions, interaction_required), columns, [])
    return build_dataset(item_rows, interaction_rows, os.path.dirname(items), max_image_side)
