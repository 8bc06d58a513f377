"""What the served recommender reads from a finished run: items and users' latest summaries."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from msr_ray.data.histories import latest_summaries, train_histories
from msr_ray.data.images import ImageError, encode_png, item_image
from msr_ray.recommender import ITEM_COLUMNS, item_descriptions
from msr_ray.rundir import RunDir
from msr_ray.serving.requests import (
    RecommendRequest,
    RequestError,
    unknown_items,
    unknown_user,
)


@dataclass(frozen=True)
class Preference:
    """A user's latest preference summary and how many history items it covers."""

    summary: str
    covers_items: int


class ServingCatalog:
    """Items by id and each user's latest preference summary, held in memory."""

    def __init__(
        self,
        items: pa.Table,
        summaries: pa.Table,
        descriptions: dict[str, str] | None = None,
        histories: dict[str, list[str]] | None = None,
    ):
        self.histories = histories or {}
        self.items = {row["item_id"]: row for row in items.select(ITEM_COLUMNS).to_pylist()}
        if descriptions is not None:
            for item, row in self.items.items():
                row["description"] = descriptions.get(item)
        self.preferences = {
            user: Preference(summary, step)
            for user, (step, summary) in latest_summaries(summaries).items()
        }

    @classmethod
    def from_run(cls, run: RunDir, with_descriptions: bool = False) -> ServingCatalog:
        """Read the run's items and user summaries (and item summaries, when the
        recommender shows them); those stages must be complete."""
        run.require("dataset")
        run.require("user_summaries")
        descriptions = item_descriptions(run) if with_descriptions else None
        sequences = run.read_table("dataset", "sequences.parquet")
        return cls(
            run.read_table("dataset", "items.parquet"),
            run.read_table("user_summaries"),
            descriptions,
            train_histories(sequences),
        )

    def _preference(self, user_id: str) -> Preference:
        preference = self.preferences.get(user_id)
        if preference is None:
            raise unknown_user(user_id)
        return preference

    def profile(self, user_id: str, online_items: list[str]) -> dict[str, Any]:
        """The user's batch summary and history, then the items added online."""
        preference = self._preference(user_id)
        history = [
            {"item_id": item, "title": self.items[item]["title"] if item in self.items else ""}
            for item in [*self.histories.get(user_id, []), *online_items]
        ]
        return {
            "user_id": user_id,
            "summary": preference.summary,
            "step": preference.covers_items,
            "history": history,
            "online_items": len(online_items),
        }

    def check_candidates(self, request: RecommendRequest) -> None:
        """404 for an unknown user or any unknown candidate."""
        self._preference(request.user_id)
        unknown = [item for item in request.candidates if item not in self.items]
        if unknown:
            raise unknown_items(unknown)

    def candidate_rows(
        self, request: RecommendRequest, preference: Preference
    ) -> list[dict[str, Any]]:
        """One scoring row per (checked) candidate, with the user's summary."""
        return [{**self.items[item], "summary": preference.summary} for item in request.candidates]

    def sample_unseen(self, user_id: str, seen: set[str], n: int) -> list[str]:
        """``n`` items not in ``seen``: the same sample for a user every time."""
        unseen = sorted(item for item in self.items if item not in seen)
        return random.Random(zlib.crc32(user_id.encode())).sample(unseen, min(n, len(unseen)))

    def thumbnail(self, item_id: str, max_side: int = 160) -> bytes:
        """The item's image (a grid of several) as PNG bytes; 404 when it has none."""
        row = self.items.get(item_id)
        if row is None:
            raise RequestError(f"unknown item id {item_id!r}", 404, "unknown_item")
        try:
            image = item_image(row["image_paths"] or [], row["image_bytes"] or [], max_side)
        except ImageError as exc:
            raise RequestError(f"item {item_id!r}: {exc}", 404, "no_image") from None
        return encode_png(image)
