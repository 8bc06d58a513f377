"""Seeded negative sampling: never an item the user interacted with, same for the same seed."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np


def stable_seed(*parts: object) -> int:
    """A seed derived from the parts' text, identical in every process (unlike hash())."""
    return zlib.crc32(":".join(str(p) for p in parts).encode())


class NegativeSampler:
    """Draws negatives from a fixed pool of distinct item ids (sorted, so order-independent)."""

    def __init__(self, items: Iterable[str], seed: int):
        self.pool = sorted(set(items))
        self.pool_set = set(self.pool)
        self.seed = seed

    def sample(self, user_id: str, exclude: set[str], count: int, purpose: str) -> list[str]:
        """``count`` distinct items not in ``exclude``, seeded by (seed, user, purpose).

        Raises ValueError when fewer than ``count`` items are eligible.
        """
        eligible = len(self.pool) - len(exclude & self.pool_set)
        if count > eligible:
            raise ValueError(
                f"user {user_id}: {count} negatives needed for {purpose}, only {eligible} items "
                "the user has not interacted with"
            )
        rng = np.random.default_rng(stable_seed(self.seed, user_id, purpose))
        chosen: list[str] = []
        taken: set[str] = set()
        while len(chosen) < count:
            for index in rng.integers(0, len(self.pool), size=2 * (count - len(chosen)) + 8):
                item = self.pool[int(index)]
                if item in exclude or item in taken:
                    continue
                chosen.append(item)
                taken.add(item)
                if len(chosen) == count:
                    break
        return chosen
