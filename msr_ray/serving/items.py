"""New items posted online (``POST /items``): checked by the dataset's rules, summarized by
the `summarize-items` code, stored durably in the served run (no Ray).

An item is ``{"item_id", "title", "text"?, "image_base64"?}`` (the image base64-encoded
in the JSON body; multipart uploads are not taken). It is checked as ``prepare`` checks a
dataset's items: the id by ``msr_ray.data.ids``, a non-empty title, text and title of at
most ``MAX_TEXT_CHARS``, the image decoded by ``msr_ray.data.images.load_image`` (one of
its formats, at most ``MAX_PIXELS`` pixels and ``MAX_IMAGE_BYTES`` bytes). An id the
dataset or an earlier post holds is a 409. The summary comes from
``ItemSummarizer``, the class `summarize-items` maps over its actor pool, on a one-row
batch. Layout, under the served run directory (read back by ``msr_ray/run/online_items.py``,
for serving after a restart and for ``prepare``, which makes them items of a rebuilt run)::

    online_items/images/<seq>.<format>    # the image as posted, written first
    online_items/items/<seq>.json         # the item and its summary: written last, the commit

A crash between the two leaves an image no record names, which the next post overwrites.
A store is driven by one writer at a time (the ``ProfileUpdater`` deployment has one
replica and serializes calls), so sequence numbers are dense and ordered by posting time.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from msr_ray.config import PipelineConfig
from msr_ray.data.ids import id_problem, normalize_id
from msr_ray.data.images import IMAGE_FORMATS, ImageError, load_image
from msr_ray.data.readers.amazon import MAX_TEXT_CHARS
from msr_ray.data.schemas import ITEMS
from msr_ray.models.prompts import HistoryItem
from msr_ray.run.online_items import IMAGES, RECORDS, read_posted
from msr_ray.run.registry import DATASET_OUTPUT, ONLINE_ITEMS_OUTPUT
from msr_ray.run.rundir import RunDir
from msr_ray.serving.requests import RequestError

ITEM_FIELDS = ("item_id", "title", "text", "image_base64")


@dataclass(frozen=True)
class NewItem:
    """A checked item to post: ``image`` holds the posted bytes in ``image_format``."""

    item_id: str
    title: str
    text: str
    image: bytes | None = None
    image_format: str | None = None

    def row(self) -> dict[str, Any]:
        """The item as a row of the dataset's ``items`` table."""
        return {
            "item_id": self.item_id,
            "title": self.title,
            "text": self.text,
            "image_paths": [],
            "image_bytes": [] if self.image is None else [self.image],
        }


def _text(payload: dict[str, Any], field: str, required: bool) -> str:
    value = payload.get(field, "" if not required else None)
    if not isinstance(value, str):
        raise RequestError(f"'{field}' must be a string")
    value = value.strip()
    if required and not value:
        raise RequestError(f"'{field}' must be a non-empty string", reason=f"empty_{field}")
    if len(value) > MAX_TEXT_CHARS:
        raise RequestError(
            f"'{field}' has {len(value)} characters; at most {MAX_TEXT_CHARS}", reason="too_long"
        )
    return value


def _image(encoded: Any, max_side: int) -> tuple[bytes, str]:
    """The decoded image bytes and their format, checked as ``prepare`` checks images."""
    if not isinstance(encoded, str) or not encoded:
        raise RequestError("'image_base64' must be a non-empty base64 string")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("'image_base64' is not valid base64", reason="corrupt_image") from None
    try:
        load_image(data, max_side)
    except ImageError as exc:
        status = 413 if exc.reason == "image_too_large" else 400
        raise RequestError(f"image: {exc}", status, exc.reason) from None
    from PIL import Image

    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as probe:
        return data, str(probe.format).lower()


def parse_item(payload: Any, max_image_side: int = 336) -> NewItem:
    """Check a decoded JSON body: {"item_id", "title", "text"?, "image_base64"?}; 400 for
    a bad field or image, 413 for an image over the dataset's size limits."""
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object")
    unknown = sorted(set(payload) - set(ITEM_FIELDS))
    if unknown:
        raise RequestError(f"unknown fields {unknown[:5]}; expected {', '.join(ITEM_FIELDS)}")
    item_id = payload.get("item_id")
    if not isinstance(item_id, str):
        raise RequestError("'item_id' must be a string")
    item_id = normalize_id(item_id)
    problem = id_problem(item_id)
    if problem:
        raise RequestError(f"'item_id' is not a valid id: {problem}", reason="bad_id")
    title, text = _text(payload, "title", True), _text(payload, "text", False)
    if payload.get("image_base64") is None:
        return NewItem(item_id, title, text)
    return NewItem(item_id, title, text, *_image(payload["image_base64"], max_image_side))


def item_exists(item_id: str) -> RequestError:
    """The 409 for a posted id the run already holds."""
    return RequestError(
        f"item {item_id!r} already exists in this run; nothing was changed", 409, "item_exists"
    )


def history_item(record: dict[str, Any]) -> HistoryItem:
    """A posted item as a line of a user's history (its text stands in for an empty summary)."""
    return HistoryItem(record["title"], record["summary"] or record["text"], record["text"])


def describe(record: dict[str, Any]) -> dict[str, Any]:
    """A posted item as ``GET /items/{id}`` and ``POST /items`` answer it."""
    keys = ("item_id", "title", "text", "summary", "error", "model", "posted_at", "stored_at")
    return {
        **{k: record[k] for k in keys},
        "online": True,
        "has_image": bool(record["image_bytes"]),
    }


def newest_items(posted: Sequence[dict[str, Any]], k: int, exclude: Collection[str]) -> list[str]:
    """The ids of the ``k`` items posted online most recently, newest first, leaving out
    ``exclude`` (a user's history, batch and online: pass a set).

    For the candidate-less recommend: retrievers trained on interactions never propose an
    item nobody has interacted with, so a slot of fresh items comes from here. In the
    ingress, ``posted`` is ``self.served.catalog.posted`` (oldest first, as ``read_posted``
    gives them); call ``await self._sync_items(self.served, ())`` first to see items posted
    through other replicas."""
    newest: list[str] = []
    for record in reversed(posted):
        if len(newest) == k:
            break
        if record["item_id"] not in exclude:
            newest.append(record["item_id"])
    return newest


class ItemStore:
    """Items posted to one served run: the durable log, and the summarizer (loaded on the
    first post)."""

    def __init__(self, run: RunDir, config: PipelineConfig):
        run.require(DATASET_OUTPUT)
        self.run, self.config = run, config
        items = run.read_table(DATASET_OUTPUT, "items.parquet", columns=["item_id"])
        self.dataset_ids = set(items["item_id"].to_pylist())
        self.posted = read_posted(run)
        self.posted_ids = {record["item_id"] for record in self.posted}
        self._summarizer: Any = None

    @property
    def summarizer(self) -> Any:
        """`summarize-items`' ``ItemSummarizer`` on the run's MLLM (the base model, as the
        stage ran it: no adapter)."""
        if self._summarizer is None:
            from msr_ray.method.item_summaries import ItemSummarizer

            cfg = self.config.items
            self._summarizer = ItemSummarizer(
                self.config.mllm, cfg, self.config.domain, cfg.max_image_side
            )
        return self._summarizer

    def post(self, item: NewItem) -> dict[str, Any]:
        """Summarize ``item``, write it durably and return its record; 409 for an id the
        run already holds."""
        if item.item_id in self.dataset_ids or item.item_id in self.posted_ids:
            raise item_exists(item.item_id)
        batch = pa.Table.from_pylist([item.row()], schema=ITEMS)
        summary = self.summarizer(batch).to_pylist()[0]
        seq = len(self.posted)
        image_file = None
        if item.image is not None:
            image_file = f"{seq:08d}.{item.image_format}"
            self.run.write_bytes(item.image, ONLINE_ITEMS_OUTPUT, IMAGES, image_file)
        record = {
            "item_id": item.item_id,
            "title": item.title,
            "text": item.text,
            "image_file": image_file,
            **{k: summary[k] for k in ("summary", "error", "model", "prompt_version")},
            "seq": seq,
            "posted_at": time.time(),
        }
        name = f"{seq:08d}.json"
        self.run.write_json(record, ONLINE_ITEMS_OUTPUT, RECORDS, name)
        record["image_bytes"] = [] if item.image is None else [item.image]
        record["stored_at"] = self.run.uri_of(ONLINE_ITEMS_OUTPUT, RECORDS, name)
        self.posted.append(record)
        self.posted_ids.add(item.item_id)
        return record

    def since(self, count: int) -> list[dict[str, Any]]:
        """The records posted after the first ``count``."""
        return self.posted[count:]
