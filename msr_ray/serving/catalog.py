"""What the served recommender reads from a finished run: items and users' latest summaries."""

from __future__ import annotations

import random
import zlib
from typing import Any

import pyarrow as pa

from msr_ray.config import RecommenderConfig
from msr_ray.data.histories import train_histories
from msr_ray.data.images import ImageError, encode_png, item_image
from msr_ray.models.prompts import recent_item_lines
from msr_ray.run.method_inputs import ITEM_COLUMNS, item_descriptions
from msr_ray.run.online_items import read_posted
from msr_ray.run.registry import DATASET_OUTPUT, USER_SUMMARIES_OUTPUT
from msr_ray.run.rundir import RunDir
from msr_ray.serving.items import describe
from msr_ray.serving.requests import (
    RecommendRequest,
    RequestError,
    unknown_items,
    unknown_user,
)


class ServingCatalog:
    """Items by id (the dataset's, then those posted online: ``posted``, oldest first), the
    users the run summarized, and their batch histories, held in memory. A user's served
    summary is not here: the profile store (``profiles.py``, behind the ProfileUpdater) is
    its one owner, batch rows and online steps alike."""

    def __init__(
        self,
        items: pa.Table,
        summaries: pa.Table,
        descriptions: dict[str, str] | None = None,
        histories: dict[str, list[str]] | None = None,
        settings: RecommenderConfig | None = None,
    ):
        self.histories = histories or {}
        self.settings = settings or RecommenderConfig()
        self.items = {row["item_id"]: row for row in items.select(ITEM_COLUMNS).to_pylist()}
        # The dataset items' texts, for ``describe`` only (scoring rows do not carry them).
        ids = items["item_id"].to_pylist()
        texts = items["text"].to_pylist() if "text" in items.column_names else [""] * len(ids)
        self.texts = dict(zip(ids, texts, strict=True))
        self.descriptions = descriptions or {}
        if descriptions is not None:
            for item, row in self.items.items():
                row["description"] = descriptions.get(item)
        self.titles = {item: row["title"] for item, row in self.items.items()}
        self.users = frozenset(summaries["user_id"].to_pylist())
        self.posted: list[dict[str, Any]] = []
        self.posted_by_id: dict[str, dict[str, Any]] = {}

    def add_posted(self, records: list[dict[str, Any]]) -> None:
        """Take in items posted online (records of ``serving/items.py``, in posting order;
        those already here are skipped). The maps are replaced, not changed in place, so a
        request reading them in a thread never sees one mid-update."""
        new = [r for r in records if r["seq"] >= len(self.posted)]
        if not new:
            return
        items, titles, descriptions = dict(self.items), dict(self.titles), dict(self.descriptions)
        for record in new:
            item = record["item_id"]
            items[item] = {
                "item_id": item,
                "title": record["title"],
                "image_paths": [],
                "image_bytes": record["image_bytes"],
                "description": record["summary"],
            }
            titles[item], descriptions[item] = record["title"], record["summary"]
        self.items, self.titles, self.descriptions = items, titles, descriptions
        self.posted_by_id = {**self.posted_by_id, **{r["item_id"]: r for r in new}}
        self.posted = [*self.posted, *new]

    def describe(self, item_id: str) -> dict[str, Any]:
        """What ``GET /items/{id}`` answers: a posted item in full; a dataset item's id,
        title, text and (when the served recommender reads item summaries) its summary."""
        if item_id in self.posted_by_id:
            return describe(self.posted_by_id[item_id])
        row = self.items.get(item_id)
        if row is None:
            raise unknown_items([item_id])
        return {
            "item_id": item_id,
            "title": row["title"],
            "text": self.texts.get(item_id, ""),
            "summary": self.descriptions.get(item_id),
            "online": False,
            "has_image": bool(row["image_paths"] or row["image_bytes"]),
        }

    @classmethod
    def from_run(cls, run: RunDir, settings: RecommenderConfig | None = None) -> ServingCatalog:
        """Read the run's items, those posted online, and user summaries (and item
        summaries, when the recommender's ``settings`` show them); those stages must be
        complete."""
        settings = settings or RecommenderConfig()
        run.require(DATASET_OUTPUT)
        run.require(USER_SUMMARIES_OUTPUT)
        descriptions = item_descriptions(run) if settings.reads_item_summaries else None
        sequences = run.read_table(DATASET_OUTPUT, "sequences.parquet")
        catalog = cls(
            run.read_table(DATASET_OUTPUT, "items.parquet"),
            run.read_table(USER_SUMMARIES_OUTPUT),
            descriptions,
            train_histories(sequences),
            settings,
        )
        catalog.add_posted(read_posted(run))
        return catalog

    def check_user(self, user_id: str) -> None:
        """404 for a user the run has no preference summary of."""
        if user_id not in self.users:
            raise unknown_user(user_id)

    def item_history(self, user_id: str, online_items: list[str]) -> list[str]:
        """The user's batch history, then the items added online, oldest first."""
        return [*self.histories.get(user_id, []), *online_items]

    def history(self, user_id: str, online_items: list[str]) -> list[dict[str, str]]:
        """The user's batch history, then the items added online: id and title each."""
        self.check_user(user_id)
        return [
            {"item_id": item, "title": self.items[item]["title"] if item in self.items else ""}
            for item in self.item_history(user_id, online_items)
        ]

    def check_candidates(self, request: RecommendRequest) -> None:
        """404 for an unknown user or any unknown candidate (a request without candidates:
        for an unknown user)."""
        self.check_user(request.user_id)
        unknown = [item for item in request.candidates if item not in self.items]
        if unknown:
            raise unknown_items(unknown)

    def candidate_rows(
        self, request: RecommendRequest, summary: str, online_items: list[str]
    ) -> list[dict[str, Any]]:
        """One scoring row per (checked) candidate, with the user's summary and, when the
        recommender shows them, the user's most recent items (batch history, then the
        items added online)."""
        history = self.item_history(request.user_id, online_items)
        recent = recent_item_lines(
            history, self.titles, self.descriptions, self.settings.recent_items,
            self.settings.recent_words,
        )  # fmt: skip
        return [
            {**self.items[item], "summary": summary, "recent": recent}
            for item in request.candidates
        ]

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
