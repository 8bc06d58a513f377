"""MicroLens: ``pairs.tsv`` (user<TAB>item item ..., chronological) + ``titles.csv`` (item,title).

An optional ``covers/`` folder (or the folder given as ``covers``) holds ``<item>.jpg``.
MicroLens has no timestamps: an interaction's timestamp is its position in the
user's line. Items without a cover keep an empty image list and are counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from msr_ray.data.readers.common import (
    MALFORMED,
    RawDataset,
    Row,
    build_dataset,
    csv_rows,
    read_text,
)
from msr_ray.data.schemas import DataError


def _pairs(path: str) -> Iterator[Row]:
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(path, "expected 'user<TAB>item item ...'", row=line_no)
        user, items = line.split("\t", 1)
        for position, item in enumerate(items.split()):
            yield path, line_no, {"user_id": user, "item_id": item, "timestamp": position}


def read_microlens(path: str, max_image_side: int = 336, covers: str | None = None) -> RawDataset:
    """Read MicroLens pairs and titles, with covers when a covers folder exists."""
    covers = covers or os.path.join(path, "covers")
    has_covers = os.path.isdir(covers)

    def items() -> Iterator[Row]:
        for file, line, row in csv_rows(os.path.join(path, "titles.csv"), ["item", "title"]):
            if MALFORMED in row:
                yield file, line, row
                continue
            cover = os.path.join(covers, f"{row['item']}.jpg")
            images = [cover] if has_covers and os.path.exists(cover) else []
            yield (
                file,
                line,
                {"item_id": row["item"], "title": row["title"], "text": "", "images": images},
            )

    return build_dataset(items(), _pairs(os.path.join(path, "pairs.tsv")), path, max_image_side)
