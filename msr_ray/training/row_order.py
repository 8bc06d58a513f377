"""The order in which the recommender's training rows are fed to the workers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def prefix_unit_order(train: pa.Table, seed: int) -> np.ndarray:
    """A seeded row order that keeps rows sharing a prompt prefix next to each other.

    Rows of one user at one summary step share the recommender prompt's prefix; they
    form a unit, units come in random order, the unit's training groups (a target and
    its negatives) in random order within it, and rows in random order within each
    group. A micro-batch thus computes each shared prefix once (``training.losses``) instead of
    per row, and holds whole groups when its size is a multiple of theirs (the listwise
    objective needs them whole).
    """
    rng = np.random.default_rng(seed)
    units: dict[tuple[str, int], dict[str, list[int]]] = {}
    for n, (user, step, group) in enumerate(
        zip(
            train["user_id"].to_pylist(),
            train["step"].to_pylist(),
            train["group"].to_pylist(),
            strict=True,
        )
    ):
        units.setdefault((user, step), {}).setdefault(group, []).append(n)
    members = [list(groups.values()) for groups in units.values()]
    order = []
    for u in rng.permutation(len(members)):
        for g in rng.permutation(len(members[u])):
            order += [int(n) for n in rng.permutation(members[u][g])]
    return np.array(order, dtype=np.int64)
