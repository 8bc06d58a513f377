"""User histories and their block boundaries for the recurrent preference summaries (no Ray).

A history of n items in blocks of k has boundaries k, 2k, ... and n itself when n is
not a multiple of k. The summary at boundary s covers items [p, s) with
p = ((s - 1) // k) * k and carries forward the summary at p (none when p = 0). A
trailing partial block is summarized too, and summarized again from p when more
items arrive, so an update equals a recomputation over the extended history.

With ``users.history_window: w`` the summaries start at item a = max(0, n - w) of the
batch history instead of 0 (``summary_start``): the boundaries are a + k, a + 2k, ...,
still counted in items of the whole history, so a step means the same everywhere.
"""

from __future__ import annotations

import zlib

import pyarrow as pa


def shard_of(user_id: str, num_shards: int) -> int:
    """The shard that owns a user: crc32 of the id, the same in every process."""
    return zlib.crc32(user_id.encode()) % num_shards


def summary_start(length: int, window: int | None) -> int:
    """The first item the summaries read of a batch history of ``length`` items: the
    ``window`` most recent ones (None = all)."""
    return 0 if window is None else max(0, length - window)


def boundaries(length: int, block_size: int, first: int = 0) -> list[int]:
    """Steps (items consumed) at which a summary is written, summaries starting at item
    ``first``."""
    steps = list(range(first + block_size, length + 1, block_size))
    if (length - first) % block_size:
        steps.append(length)
    return steps


def block_start(step: int, block_size: int, first: int = 0) -> int:
    """First item index of the block that ends at ``step`` (also the step it continues)."""
    return first + ((step - 1 - first) // block_size) * block_size


def next_boundary(
    length: int, block_size: int, done: set[int] | dict[int, str], first: int = 0
) -> int | None:
    """The first boundary not yet summarized whose predecessor is (None when all are)."""
    for step in boundaries(length, block_size, first):
        if step not in done:
            start = block_start(step, block_size, first)
            return step if start == first or start in done else None
    return None


def user_sequences(sequences: pa.Table) -> dict[str, list[tuple[str, str]]]:
    """Each user's ``(item_id, split)`` pairs in time (position) order, users sorted."""
    ordered = sequences.sort_by([("user_id", "ascending"), ("position", "ascending")])
    result: dict[str, list[tuple[str, str]]] = {}
    for user, item, split in zip(
        ordered["user_id"].to_pylist(),
        ordered["item_id"].to_pylist(),
        ordered["split"].to_pylist(),
        strict=True,
    ):
        result.setdefault(user, []).append((item, split))
    return result


def train_histories(sequences: pa.Table) -> dict[str, list[str]]:
    """Each user's chronological history before the held-out items (the train split);
    a user with no train item gets an empty one."""
    return {
        user: [item for item, split in events if split == "train"]
        for user, events in user_sequences(sequences).items()
    }


def summaries_by_user(summaries: pa.Table) -> dict[str, dict[int, str]]:
    """Each user's preference summaries by step (items covered)."""
    result: dict[str, dict[int, str]] = {}
    for user, step, summary in zip(
        summaries["user_id"].to_pylist(),
        summaries["step"].to_pylist(),
        summaries["summary"].to_pylist(),
        strict=True,
    ):
        result.setdefault(user, {})[step] = summary
    return result


def latest_summaries(summaries: pa.Table) -> dict[str, tuple[int, str]]:
    """Each user's latest preference summary as ``(step, summary)``: the largest step."""
    return {user: max(steps.items()) for user, steps in summaries_by_user(summaries).items()}
