"""What every reader shares: row checks, quarantine, and building the Arrow tables."""

from __future__ import annotations

import csv
import datetime
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from msr_ray.data.ids import id_problem, normalize_id
from msr_ray.data.images import ImageError, contained_path, load_image
from msr_ray.data.quarantine import Quarantine
from msr_ray.data.schemas import INTERACTIONS, ITEMS, DataError

# (file, 1-based row number, row fields)
Row = tuple[str, int, dict[str, Any]]


@dataclass
class RawDataset:
    """A reader's output: valid items and interactions, and every rejected row."""

    items: pa.Table
    interactions: pa.Table
    quarantine: Quarantine
    input_rows: dict[str, int] = field(default_factory=dict)
    items_without_image: int = 0


def _has_invalid_utf8(value: Any) -> bool:
    return isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value)


# Key of a row that could not be parsed; its value says why (the row is quarantined).
MALFORMED = "__malformed__"
# Largest timestamp accepted (int64).
MAX_TIMESTAMP = 2**63 - 1


def read_text(path: str, encoding: str = "utf-8") -> str:
    """A whole text file; undecodable bytes survive as surrogates so rows can be quarantined.

    A leading byte-order mark is dropped.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(path, "file does not exist") from None
    text = data.decode(encoding, errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


class _Lines:
    """Physical lines with a position that a new CSV reader can restart from."""

    def __init__(self, lines: list[str]):
        self.lines, self.position = lines, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.position >= len(self.lines):
            raise StopIteration
        self.position += 1
        return self.lines[self.position - 1]


def csv_rows(path: str, required: list[str], encoding: str = "utf-8") -> Iterator[Row]:
    """Rows of a CSV file with a header; a missing required column is a DataError.

    A row the CSV parser rejects (an unterminated quote, a field over the csv module's
    size limit, a stray quote) comes back as ``{MALFORMED: reason}`` and parsing goes on
    from the next physical line, so one bad row never swallows the rows after it.
    """
    source = _Lines(read_text(path, encoding).splitlines(keepends=True))
    reader = csv.reader(source, strict=True)
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise DataError(path, f"unreadable header: {exc}", row=1) from None
    for column in required:
        if column not in header:
            raise DataError(path, f"missing column (header is {header})", column=column)
    while True:
        start = source.position
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield path, start + 1, {MALFORMED: f"CSV: {exc}"}
            source.position = start + 1
            reader = csv.reader(source, strict=True)
            continue
        if values:
            padded = values + [None] * (len(header) - len(values))
            yield path, start + 1, dict(zip(header, padded[: len(header)], strict=True))


def parse_timestamp(value: Any) -> int | None:
    """An int64 timestamp (seconds, or whatever unit the integers are in) from a row value.

    Accepts an int, a whole float, a string of ASCII digits, an ISO 8601 date or datetime
    (``2020-09-01``, ``2020-09-01T10:30:00Z``; naive ones count as UTC) and datetime/date
    values (Parquet timestamp and date columns), the last two as epoch seconds. None when
    invalid: negative, fractional, not finite, beyond int64, or written with other digits
    (``²``, Arabic-Indic digits).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, datetime.datetime | datetime.date):
        return _epoch_seconds(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return None
        value = int(value)
    if isinstance(value, int):
        return value if 0 <= value <= MAX_TIMESTAMP else None
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        number = int(text) if len(text) <= 19 else MAX_TIMESTAMP + 1
        return number if number <= MAX_TIMESTAMP else None
    if not text.isascii() or not 10 <= len(text) <= 40 or not text[:4].isdigit():
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return _epoch_seconds(parsed)


def _epoch_seconds(value: datetime.date) -> int | None:
    if not isinstance(value, datetime.datetime):
        value = datetime.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    seconds = int(value.timestamp())
    return seconds if seconds >= 0 else None


def _field_text(value: Any) -> str:
    """A row field as text: None is empty; anything else (0 included) is its string."""
    return "" if value is None else str(value).strip()


def _shown_id(value: str) -> str:
    """An id as the quarantine shows it: escaped, with the reason it was refused."""
    return f"{ascii(value)[:200]}: {id_problem(value)}"


def _resolve_image(value: Any, base_dir: str) -> str | bytes:
    """Image bytes as they are; a path resolved and confined to the dataset folder."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return contained_path(str(value), base_dir)


def build_dataset(
    item_rows: Iterable[Row],
    interaction_rows: Iterable[Row],
    image_base_dir: str,
    max_image_side: int = 336,
    verify_images: bool = True,
) -> RawDataset:
    """Check every row and build the tables; bad rows go to the quarantine with a reason.

    Item rows hold item_id, title, text and ``images`` (paths relative to
    ``image_base_dir``, absolute paths or bytes). Interaction rows hold user_id,
    item_id and timestamp. A bad image is quarantined and left out of its item,
    which is kept (with no image if none is left).
    """
    quarantine = Quarantine()
    items: dict[str, dict[str, Any]] = {}
    items_read = 0
    for file, line, row in item_rows:
        items_read += 1
        if MALFORMED in row:
            quarantine.add("items", file, line, "row", "malformed_row", row[MALFORMED])
            continue
        item_id = _field_text(row.get("item_id"))
        title = _field_text(row.get("title"))
        text = _field_text(row.get("text"))
        if not item_id:
            quarantine.add("items", file, line, "item_id", "missing_id", row.get("item_id"))
            continue
        bad = next((k for k in ("item_id", "title", "text") if _has_invalid_utf8(row.get(k))), None)
        if bad:
            quarantine.add(
                "items",
                file,
                line,
                bad,
                "invalid_utf8",
                str(row.get(bad)).encode("utf-8", "surrogateescape"),
            )
            continue
        item_id = normalize_id(item_id)
        if id_problem(item_id):
            quarantine.add("items", file, line, "item_id", "bad_id", _shown_id(item_id))
            continue
        if not title:
            quarantine.add("items", file, line, "title", "empty_title", item_id)
            continue
        if item_id in items:
            quarantine.add("items", file, line, "item_id", "duplicate_item", item_id)
            continue
        paths, blobs = [], []
        for value in row.get("images") or []:
            try:
                source = _resolve_image(value, image_base_dir)
                if verify_images:
                    load_image(source, max_image_side)
            except ImageError as exc:
                shown = value if isinstance(value, str) else f"<{len(value)} bytes>"
                quarantine.add("images", file, line, "image", exc.reason, shown)
                continue
            (blobs if isinstance(source, bytes) else paths).append(source)
        items[item_id] = {
            "item_id": item_id,
            "title": title,
            "text": text,
            "image_paths": paths,
            "image_bytes": blobs,
        }

    users, item_ids, stamps = [], [], []
    interactions_read = 0
    for file, line, row in interaction_rows:
        interactions_read += 1
        if MALFORMED in row:
            quarantine.add("interactions", file, line, "row", "malformed_row", row[MALFORMED])
            continue
        user_id = _field_text(row.get("user_id"))
        item_id = _field_text(row.get("item_id"))
        if not user_id or not item_id:
            column = "user_id" if not user_id else "item_id"
            quarantine.add("interactions", file, line, column, "missing_id", row.get(column))
            continue
        if _has_invalid_utf8(user_id) or _has_invalid_utf8(item_id):
            quarantine.add("interactions", file, line, "user_id", "invalid_utf8", repr(user_id))
            continue
        user_id, item_id = normalize_id(user_id), normalize_id(item_id)
        bad = next(
            (c for c, v in (("user_id", user_id), ("item_id", item_id)) if id_problem(v)), None
        )
        if bad:
            shown = _shown_id(user_id if bad == "user_id" else item_id)
            quarantine.add("interactions", file, line, bad, "bad_id", shown)
            continue
        timestamp = parse_timestamp(row.get("timestamp"))
        if timestamp is None:
            quarantine.add(
                "interactions", file, line, "timestamp", "bad_timestamp", row.get("timestamp")
            )
            continue
        if item_id not in items:
            quarantine.add("interactions", file, line, "item_id", "unknown_item", item_id)
            continue
        users.append(user_id)
        item_ids.append(item_id)
        stamps.append(timestamp)

    item_table = pa.Table.from_pylist(list(items.values()), schema=ITEMS)
    interactions = pa.table(
        {"user_id": users, "item_id": item_ids, "timestamp": stamps}, schema=INTERACTIONS
    )
    without_image = sum(
        1 for it in items.values() if not it["image_paths"] and not it["image_bytes"]
    )
    return RawDataset(
        items=item_table,
        interactions=interactions,
        quarantine=quarantine,
        input_rows={"items": items_read, "interactions": interactions_read},
        items_without_image=without_image,
    )


def find_file(folder: str, *names: str) -> str:
    """The first of ``names`` that exists in ``folder``, else a DataError listing them."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise DataError(folder, f"expected one of {list(names)} in this folder")
