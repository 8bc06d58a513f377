"""User histories and their block boundaries for the recurrent preference summaries (no Ray).

A history of n items in blocks of k has boundaries k, 2k, ... and n itself when n is
not a multiple of k. The summary at boundary s covers items [p, s) with
p = ((s - 1) // k) * k and carries forward the summary at p (none when p = 0). A
trailing partial block is summarized too, and summarized again from p when more
items arrive, so an update equals a recomputation over the extended history.
"""

from __future__ import annotations

import zlib

import pyarrow as pa
import pyarrow.compute as pc


def shard_of(user_id: str, num_shards: int) -> int:
    """The shard that owns a user: crc32 of the id, the same in every process."""
    return zlib.crc32(user_id.encode()) % num_shards


def boundaries(length: int, block_size: int) -> list[int]:
    """Steps (items consumed) at which a summary is written."""
    steps = list(range(block_size, length + 1, block_size))
    if length % block_size:
        steps.append(length)
    return steps


def block_start(step: int, block_size: int) -> int:
    """First item index of the block that ends at ``step`` (also the step it continues)."""
    return ((step - 1) // block_size) * block_size


def next_boundary(length: int, block_size: int, done: set[int] | dict[int, str]) -> int | None:
    """The first boundary not yet summarized whose predecessor is (None when all are)."""
    for step in boundaries(length, block_size):
        if step not in done:
            start = block_start(step, block_size)
            return step if start == 0 or start in done else None
    return None


def train_histories(sequences: pa.Table) -> dict[str, list[str]]:
    """Each user's chronological history before the held-out items (the train split)."""
    train = sequences.filter(pc.equal(sequences["split"], "train")).sort_by(
        [("user_id", "ascending"), ("position", "ascending")]
    )
    histories: dict[str, list[str]] = {}
    for user, item in zip(train["user_id"].to_pylist(), train["item_id"].to_pylist(), strict=True):
        histories.setdefault(user, []).append(item)
    for user in pc.unique(sequences["user_id"]).to_pylist():
        histories.setdefault(user, [])
    return histories
