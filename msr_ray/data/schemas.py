"""Arrow schemas of the tables between stages, and a validator that names file, row, column."""

from __future__ import annotations

import pyarrow as pa

ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        # Images as files (absolute paths or URIs) ...
        pa.field("image_paths", pa.list_(pa.string()), nullable=False),
        # ... or inline encoded bytes (PNG/JPEG); an item may have either or none.
        pa.field("image_bytes", pa.list_(pa.binary()), nullable=False),
    ]
)

INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
    ]
)

# Interactions after preprocessing: chronological per user, with their split.
SEQUENCES = pa.schema(
    [
        *INTERACTIONS,
        pa.field("position", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)

# Item summaries: one row per item; error names why an item has no summary.
ITEM_SUMMARIES = pa.schema(
    [
        ("item_id", pa.string()),
        ("summary", pa.string()),
        ("error", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("generated_tokens", pa.int64()),
    ]
)

# Training and evaluation pairs; group = one user's candidate list at one step; position =
# the target's index in the user's chronological sequence (the items before it are history).
SAMPLES = pa.schema(
    [
        ("split", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("label", pa.int8()),
        ("group", pa.string()),
        ("step", pa.int32()),
        ("summary", pa.string()),
        ("position", pa.int32()),
    ]
)

# Preference summaries: one row per (user, step), step = history items covered.
USER_SUMMARIES = pa.schema(
    [
        ("user_id", pa.string()),
        ("step", pa.int32()),
        ("summary", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
        ("mode", pa.string()),
        ("block_size", pa.int32()),
        ("prompt_tokens", pa.int64()),
        ("generated_tokens", pa.int64()),
    ]
)

# Scores of one model: a candidate row, its score and the model's name.
SCORES = pa.schema(
    [
        ("split", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("label", pa.int8()),
        ("group", pa.string()),
        ("score", pa.float64()),
        ("model", pa.string()),
    ]
)

QUARANTINE = pa.schema(
    [
        pa.field("table", pa.string()),
        pa.field("file", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("column", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("value", pa.string()),
    ]
)


class DataError(ValueError):
    """Input that cannot be used at all: says which file, row and column."""

    def __init__(self, file: str, message: str, row: int | None = None, column: str | None = None):
        where = file
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {message}")
        self.file, self.row, self.column = file, row, column


def validate_table(table: pa.Table, schema: pa.Schema, source: str) -> None:
    """Raise DataError unless ``table`` has every column of ``schema``, typed, without nulls."""
    for field in schema:
        if field.name not in table.column_names:
            raise DataError(
                source, f"missing column (have {table.column_names})", column=field.name
            )
        column = table.column(field.name)
        if column.type != field.type:
            raise DataError(source, f"type {column.type}, expected {field.type}", column=field.name)
        if not field.nullable and column.null_count:
            row = column.is_null().to_pylist().index(True)
            raise DataError(source, "null value", row=row, column=field.name)
