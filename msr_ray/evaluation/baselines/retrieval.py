"""The first stage of a two-stage recommender: a kept baseline proposes the top N of the
whole catalogue, and the MLLM reranks them. No Ray.

A history is a user's item ids, oldest first. Items the baseline was not trained with
(added to the catalogue since) are skipped and counted in ``unknown_items``. The history
is never proposed; ties rank in catalogue order, so a history always gets the same list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from msr_ray.evaluation.baselines.kept import KeptBaseline
from msr_ray.run.rundir import RunDir

# Users scored in one forward pass.
BATCH_USERS = 256


def ranked(scores: np.ndarray, dropped: np.ndarray, last: int | None = None) -> np.ndarray:
    """Columns of ``scores`` by descending score, ties in column order, ``dropped`` (a
    mask) left out. ``last``: a column put after every column it ties with (a held-out
    item in an evaluation: ties count against it)."""
    kept = np.flatnonzero(~dropped)
    return kept[np.lexsort((kept, kept == last, -scores[kept]))]


class Retriever:
    """Proposes the top N of the whole catalogue from a kept baseline's scores."""

    def __init__(self, baseline: KeptBaseline, name: str):
        self.baseline, self.name = baseline, name
        self.item_ids = baseline.items
        self.column = {item: n for n, item in enumerate(self.item_ids)}
        self.unknown_items = 0

    @classmethod
    def from_run(cls, run: RunDir, name: str) -> Retriever:
        """The baseline kept in ``baselines/<name>/`` of a run (``msr-ray baseline``)."""
        return cls(KeptBaseline.read(run, name), name)

    def columns(self, items: Iterable[str]) -> list[int]:
        """The catalogue column of each item that has one (others are left out)."""
        return [self.column[item] for item in items if item in self.column]

    def catalogue_scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """Scores (users, items) of every catalogue item after each history; column
        ``n`` is ``item_ids[n]``. Unknown items of a history are skipped and counted."""
        indices = []
        for history in histories:
            known = self.columns(history)
            self.unknown_items += len(history) - len(known)
            indices.append([n + 1 for n in known])  # the baseline's item indices
        parts = [
            self.baseline.catalogue_scores(indices[start : start + BATCH_USERS]).numpy()
            for start in range(0, len(indices), BATCH_USERS)
        ]
        return np.concatenate(parts) if parts else np.empty((0, len(self.item_ids)))

    def top_n(
        self, history: Sequence[str], n: int, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]:
        """The ``n`` best-scored items and their scores, the history and ``exclude`` left out."""
        return self.top_n_batch([history], n, [exclude])[0]

    def top_n_batch(
        self,
        histories: Sequence[Sequence[str]],
        n: int,
        excludes: Sequence[Iterable[str]] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """``top_n`` of many users, scored in batches."""
        excludes = excludes or [()] * len(histories)
        lists = []
        for row, history, exclude in zip(
            self.catalogue_scores(histories), histories, excludes, strict=True
        ):
            dropped = np.zeros(len(row), dtype=bool)
            dropped[self.columns([*history, *exclude])] = True
            lists.append([(self.item_ids[c], float(row[c])) for c in ranked(row, dropped)[:n]])
        return lists
