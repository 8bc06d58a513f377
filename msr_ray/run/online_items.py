"""Items posted online to a served run (``POST /items``), read from the run directory.

Serving writes them (``msr_ray/serving/items.py``, which holds the write side and the
checks); serving reads them back after a restart, and ``prepare`` reads them into a
rebuilt run's items. No Ray. Layout, under the run directory::

    online_items/images/<seq>.<format>    # the image as posted, written first
    online_items/items/<seq>.json         # the item and its summary: written last, the commit

A record (the JSON file) holds ``item_id``, ``title``, ``text``, ``image_file`` (the name
under ``images/``, or null), ``summary``, ``error``, ``model``, ``prompt_version``,
``seq`` and ``posted_at``. Records are never rewritten once committed.
"""

from __future__ import annotations

import hashlib
from typing import Any

from msr_ray.run.registry import ONLINE_ITEMS_OUTPUT
from msr_ray.run.rundir import RunDir

RECORDS = "items"
IMAGES = "images"


def read_posted(run: RunDir) -> list[dict[str, Any]]:
    """Every item posted to ``run``, oldest first, with ``image_bytes`` and ``stored_at``."""
    posted = []
    for name in run.list_files(ONLINE_ITEMS_OUTPUT, RECORDS):
        record = run.read_json(ONLINE_ITEMS_OUTPUT, RECORDS, name)
        image = record["image_file"]
        record["image_bytes"] = (
            [] if image is None else [run.read_bytes(ONLINE_ITEMS_OUTPUT, IMAGES, image)]
        )
        record["stored_at"] = run.uri_of(ONLINE_ITEMS_OUTPUT, RECORDS, name)
        posted.append(record)
    return posted


def posted_digest(run: RunDir) -> str | None:
    """A digest of the committed records' file names and contents; None when none exist."""
    names = run.list_files(ONLINE_ITEMS_OUTPUT, RECORDS)
    if not names:
        return None
    digest = hashlib.sha256()
    for name in names:
        content = run.read_bytes(ONLINE_ITEMS_OUTPUT, RECORDS, name)
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:20]
