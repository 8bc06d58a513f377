"""MovieLens-1M, in its original layout or as laid out in the shared datasets folder.

Original: ``ratings.dat`` (UserID::MovieID::Rating::Timestamp), ``movies.dat``
(MovieID::Title::Genres, latin-1) and an optional ``posters/<movie_id>.jpg`` folder.
Shared layout: ``interactions.csv`` (user_id,item_id,timestamp) and ``items.csv``
(item_id,title,genres,poster with poster a relative path or empty).
Every rating counts as an interaction; the item text lists the genres.
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


def _genres_text(genres: str) -> str:
    names = [g for g in (genres or "").split("|") if g]
    return f"Genres: {', '.join(names)}." if names else ""


def _dat_rows(path: str, fields: list[str], encoding: str) -> Iterator[Row]:
    for line_no, line in enumerate(read_text(path, encoding).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != len(fields):
            raise DataError(
                path, f"expected {len(fields)} '::'-separated fields, got {len(parts)}", row=line_no
            )
        yield path, line_no, dict(zip(fields, parts, strict=True))


def _original(path: str, max_image_side: int) -> RawDataset:
    posters = os.path.join(path, "posters")

    def items() -> Iterator[Row]:
        for file, line, row in _dat_rows(
            os.path.join(path, "movies.dat"), ["item_id", "title", "genres"], "latin-1"
        ):
            poster = os.path.join(posters, f"{row['item_id']}.jpg")
            images = [poster] if os.path.exists(poster) else []
            yield file, line, {**row, "text": _genres_text(row["genres"]), "images": images}

    ratings = _dat_rows(
        os.path.join(path, "ratings.dat"), ["user_id", "item_id", "rating", "timestamp"], "latin-1"
    )
    return build_dataset(items(), ratings, path, max_image_side)


def _shared(path: str, max_image_side: int) -> RawDataset:
    def items() -> Iterator[Row]:
        for file, line, row in csv_rows(
            os.path.join(path, "items.csv"), ["item_id", "title", "genres", "poster"]
        ):
            if MALFORMED in row:
                yield file, line, row
                continue
            images = [row["poster"]] if (row.get("poster") or "").strip() else []
            yield file, line, {**row, "text": _genres_text(row["genres"]), "images": images}

    interactions = csv_rows(
        os.path.join(path, "interactions.csv"), ["user_id", "item_id", "timestamp"]
    )
    return build_dataset(items(), interactions, path, max_image_side)


def read_movielens(path: str, max_image_side: int = 336) -> RawDataset:
    """Read MovieLens-1M from either layout (detected by the files present)."""
    if os.path.exists(os.path.join(path, "ratings.dat")):
        return _original(path, max_image_side)
    if os.path.exists(os.path.join(path, "interactions.csv")):
        return _shared(path, max_image_side)
    raise DataError(path, "neither ratings.dat + movies.dat nor interactions.csv + items.csv found")
