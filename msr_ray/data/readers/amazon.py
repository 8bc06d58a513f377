"""Amazon Reviews 2023 (JSONL) with item images downloaded beforehand.

Layout of the input folder::

    <Category>.jsonl        reviews: user_id, parent_asin, timestamp (ms), ...
    meta_<Category>.jsonl   item metadata: parent_asin, title, features, description, ...
    images/<parent_asin>.jpg  or  images/<parent_asin>/*.jpg   (optional)

(``reviews.jsonl`` and ``meta.jsonl`` are accepted too.) Items are keyed by
``parent_asin``; the text joins features and description.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator

from msr_ray.data.readers.common import RawDataset, Row, build_dataset, read_text
from msr_ray.data.schemas import DataError

MAX_TEXT_CHARS = 1000


def _jsonl(path: str, quarantine_rows: list[Row]) -> Iterator[Row]:
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
            quarantine_rows.append((path, line_no, {"reason": "bad_json", "value": reason}))
            continue
        if not isinstance(record, dict):
            quarantine_rows.append((path, line_no, {"reason": "bad_json", "value": line[:100]}))
            continue
        yield path, line_no, record


def _find(path: str) -> tuple[str, str]:
    metas = sorted(glob.glob(os.path.join(path, "meta*.jsonl")))
    reviews = sorted(p for p in glob.glob(os.path.join(path, "*.jsonl")) if p not in metas)
    if len(metas) != 1 or len(reviews) != 1:
        raise DataError(
            path,
            f"expected one reviews *.jsonl and one meta*.jsonl, found "
            f"{[os.path.basename(p) for p in reviews + metas]}",
        )
    return reviews[0], metas[0]


def _images(folder: str, asin: str) -> list[str]:
    single = os.path.join(folder, f"{asin}.jpg")
    if os.path.exists(single):
        return [single]
    return sorted(glob.glob(os.path.join(folder, asin, "*.jpg")))


def _text(record: dict) -> str:
    parts = []
    for key in ("features", "description"):
        value = record.get(key) or []
        parts.extend(str(v) for v in (value if isinstance(value, list) else [value]))
    return " ".join(" ".join(parts).split())[:MAX_TEXT_CHARS]


def read_amazon(path: str, max_image_side: int = 336) -> RawDataset:
    """Read one Amazon Reviews 2023 category (reviews + meta JSONL, local images)."""
    reviews_path, meta_path = _find(path)
    image_dir = os.path.join(path, "images")
    bad_json: list[Row] = []

    def items() -> Iterator[Row]:
        for file, line, record in _jsonl(meta_path, bad_json):
            asin = str(record.get("parent_asin") or "")
            yield (
                file,
                line,
                {
                    "item_id": asin,
                    "title": record.get("title") or "",
                    "text": _text(record),
                    "images": _images(image_dir, asin) if asin else [],
                },
            )

    def interactions() -> Iterator[Row]:
        for file, line, record in _jsonl(reviews_path, bad_json):
            yield (
                file,
                line,
                {
                    "user_id": record.get("user_id"),
                    "item_id": record.get("parent_asin"),
                    "timestamp": record.get("timestamp"),
                },
            )

    dataset = build_dataset(items(), interactions(), path, max_image_side)
    for file, line, info in bad_json:
        kind = "items" if file == meta_path else "interactions"
        dataset.quarantine.add(kind, file, line, None, info["reason"], info["value"])
        dataset.input_rows[kind] += 1
    return dataset
