"""Preprocessing: dedupe, k-core, chronological order, history cap, leave-last-out split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.data.schemas import SEQUENCES

# A user needs a train item, a valid item and a test item.
MIN_SPLIT_LENGTH = 3


@dataclass
class Funnel:
    """Row counts after each filter, in order, so every input row is accounted for."""

    steps: list[dict] = field(default_factory=list)

    def record(self, step: str, table: pa.Table) -> None:
        self.steps.append(
            {
                "step": step,
                "interactions": table.num_rows,
                "users": pc.count_distinct(table["user_id"]).as_py(),
                "items": pc.count_distinct(table["item_id"]).as_py(),
            }
        )


EVENT_KEY = ("user_id", "item_id", "timestamp")


def dedupe(table: pa.Table, keys: tuple[str, ...] = EVENT_KEY) -> pa.Table:
    """Keep the first row of each ``keys`` value (default: identical events), in input order."""
    indexed = table.append_column("_row", pa.array(np.arange(table.num_rows)))
    first = indexed.group_by(list(keys), use_threads=False).aggregate([("_row", "min")])
    keep = np.sort(first["_row_min"].to_numpy())
    return table.take(pa.array(keep))


def kcore(interactions: pa.Table, min_user: int, min_item: int) -> pa.Table:
    """Repeatedly drop users with < min_user and items with < min_item interactions."""
    table = interactions
    while True:
        before = table.num_rows
        for column, minimum in (("user_id", min_user), ("item_id", min_item)):
            counts = table.group_by(column).aggregate([([], "count_all")])
            keep = counts.filter(pc.greater_equal(counts["count_all"], minimum))[column]
            table = table.filter(pc.is_in(table[column], value_set=keep))
        if table.num_rows == before:
            return table


def sample_users(interactions: pa.Table, max_users: int | None, seed: int) -> pa.Table:
    """Keep a seeded random sample of ``max_users`` users (all of them when None or fewer)."""
    users = np.sort(pc.unique(interactions["user_id"]).to_numpy(zero_copy_only=False))
    if max_users is None or len(users) <= max_users:
        return interactions
    chosen = np.random.default_rng(seed).choice(users, size=max_users, replace=False)
    return interactions.filter(pc.is_in(interactions["user_id"], value_set=pa.array(chosen)))


def _positions(sorted_users: pa.ChunkedArray) -> np.ndarray:
    """0-based index of each row within its user's run (rows sorted by user)."""
    users = sorted_users.to_numpy(zero_copy_only=False)
    n = len(users)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    return (np.arange(n) - run_start).astype(np.int32)


def chronological(interactions: pa.Table) -> pa.Table:
    """Sort by user, then time; ties keep input order (stable)."""
    indexed = interactions.append_column("_row", pa.array(np.arange(interactions.num_rows)))
    ordered = indexed.sort_by(
        [("user_id", "ascending"), ("timestamp", "ascending"), ("_row", "ascending")]
    )
    return ordered.drop_columns(["_row"])


def cap_history(ordered: pa.Table, max_history: int | None) -> pa.Table:
    """Keep each user's ``max_history`` most recent interactions (input sorted by user, time)."""
    if max_history is None:
        return ordered
    positions = _positions(ordered["user_id"])
    users = ordered["user_id"].to_numpy(zero_copy_only=False)
    n = len(users)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if n else np.zeros(0, int)
    lengths = np.diff(np.r_[starts, n])
    length_of_row = np.repeat(lengths, lengths)
    return ordered.filter(pa.array(positions >= length_of_row - max_history))


def split_leave_last_out(ordered: pa.Table) -> pa.Table:
    """Add ``position`` and ``split``: each user's last item is test, the one before valid."""
    positions = _positions(ordered["user_id"])
    n = len(positions)
    is_last = np.r_[positions[1:] == 0, True] if n else np.zeros(0, bool)
    is_second_last = np.r_[is_last[1:], False] if n else np.zeros(0, bool)
    split = np.where(is_last, "test", np.where(is_second_last, "valid", "train"))
    table = ordered.append_column("position", pa.array(positions, pa.int32()))
    table = table.append_column("split", pa.array(split, pa.string()))
    return table.select(SEQUENCES.names).cast(SEQUENCES)


def preprocess(
    interactions: pa.Table,
    min_user: int,
    min_item: int,
    max_history: int | None,
    max_users: int | None = None,
    seed: int = 0,
) -> tuple[pa.Table, Funnel]:
    """Run every step in order; return the split sequences and the funnel of counts.

    The user sample (``max_users``) is drawn after the k-core, so every sampled user has
    a full-length history; items are then those the sampled users interacted with.

    Only interactions are read: the k-core counts an item's interactions, so an item with
    none is never seen here, neither counted nor removed. Which items the dataset keeps is
    the caller's choice: ``prepare`` keeps the source's items left in the sequences and
    every item posted online to the run (those have no interactions at all).
    """
    funnel = Funnel()
    funnel.record("valid_rows", interactions)
    table = dedupe(interactions)
    funnel.record("deduplicated", table)
    table = kcore(table, max(min_user, MIN_SPLIT_LENGTH), min_item)
    funnel.record("k_core", table)
    if max_users is not None:
        table = sample_users(table, max_users, seed)
        funnel.record("user_sample", table)
    table = cap_history(chronological(table), max_history)
    funnel.record("history_cap", table)
    return split_leave_last_out(table), funnel
