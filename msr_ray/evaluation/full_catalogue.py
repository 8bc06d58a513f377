"""Full-catalogue evaluation of a two-stage recommender on the samples' test users. No Ray.

Each test user's held-out item is ranked against every item the user has not interacted
with (the items before it are excluded; the held-out item stays a candidate even when the
user had consumed it before), first by the retriever alone, then by the recommender
reranking the retriever's top N. In the rerank the held-out item is a hit at K only when
the retriever put it in the top N and the recommender puts it in the top K: an item the
retriever missed is a miss at every K (rank infinity). Ties count against the held-out
item in both rankings, as in ``msr_ray.evaluation.metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.data.histories import user_sequences
from msr_ray.data.schemas import SAMPLES
from msr_ray.evaluation.baselines.retrieval import Retriever, ranked
from msr_ray.evaluation.metrics import paired_summary, rank_metrics, summarize

# The results beside eval/metrics.json.
FULL_CATALOGUE_FILE = "full_catalogue.json"
# The split of the retrieved candidates' rows (kept apart from the sampled lists').
RETRIEVED_SPLIT = "retrieved"
# The retrieved lists as written: one row per (test user, retrieved item).
LISTS = pa.schema(
    [
        ("group", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("label", pa.int8()),
        ("retrieval_position", pa.int64()),
        ("retrieval_score", pa.float64()),
        ("score", pa.float64()),  # the recommender's
    ]
)
# One row per test user: the held-out item's ranks.
RANKS = pa.schema(
    [
        ("group", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("retrieval_rank", pa.int64()),
        ("rerank_rank", pa.int64()),  # null: the retriever missed the held-out item
    ]
)


@dataclass
class Retrieval:
    """The retriever's top N of each test user as sample rows of split ``retrieved``
    (the test group's user, group, step, summary and position; label 1 for the held-out
    item) with their ``retrieval_position`` and ``retrieval_score``, and per test group
    the held-out item and its rank in the retriever's ranking of the whole catalogue."""

    lists: pa.Table
    targets: list[dict[str, Any]]

    def candidates(self) -> pa.Table:
        """The retrieved rows as samples, for the recommender's candidate rows."""
        return self.lists.select(SAMPLES.names)


def row_names(retriever: str, n: int) -> tuple[str, str]:
    """The metrics rows of retrieval alone and of retrieval + rerank."""
    return f"{retriever} top-{n} (full catalogue)", f"{retriever} top-{n} + MLLM-MSR rerank"


def retrieve(retriever: Retriever, samples: pa.Table, sequences: pa.Table, n: int) -> Retrieval:
    """The retriever's top ``n`` for every test group of ``samples``."""
    is_target = pc.and_(pc.equal(samples["split"], "test"), pc.equal(samples["label"], 1))
    tests = samples.filter(is_target).sort_by("group").to_pylist()
    events = user_sequences(sequences)
    # The test item is a user's last: the history before it is every train and valid item.
    histories = [[item for item, s in events[t["user_id"]] if s != "test"] for t in tests]
    rows, targets = [], []
    for test, history, scores in zip(
        tests, histories, retriever.catalogue_scores(histories), strict=True
    ):
        target = retriever.column.get(test["item_id"])
        dropped = np.zeros(len(scores), dtype=bool)
        dropped[retriever.columns(history)] = True
        if target is not None:
            dropped[target] = False
        order = ranked(scores, dropped, last=target)
        hits = np.flatnonzero(order == target) if target is not None else []
        rank = int(hits[0]) + 1 if len(hits) else len(order) + 1
        held_out = {k: test[k] for k in ("group", "user_id", "item_id")}
        targets.append(held_out | {"retrieval_rank": rank})
        rows += [
            {
                **test,
                "split": RETRIEVED_SPLIT,
                "item_id": retriever.item_ids[c],
                "label": int(c == target),
                "retrieval_position": position + 1,
                "retrieval_score": float(scores[c]),
            }
            for position, c in enumerate(order[:n])
        ]
    schema = SAMPLES.append(pa.field("retrieval_position", pa.int64()))
    schema = schema.append(pa.field("retrieval_score", pa.float64()))
    return Retrieval(pa.Table.from_pylist(rows, schema=schema), targets)


def reranked(retrieval: Retrieval, scored: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The retrieved lists with the recommender's ``score`` of each item (``scored``: its
    scores of ``retrieval.candidates()``), and the held-out items' ranks (``RANKS``)."""
    score = {
        (g, i): s
        for g, i, s in zip(
            scored["group"].to_pylist(),
            scored["item_id"].to_pylist(),
            scored["score"].to_pylist(),
            strict=True,
        )
    }
    lists = [
        {name: row[name] for name in LISTS.names if name != "score"}
        | {"score": score[(row["group"], row["item_id"])]}
        for row in retrieval.lists.to_pylist()
    ]
    by_group: dict[str, list[dict[str, Any]]] = {}
    for row in lists:
        by_group.setdefault(row["group"], []).append(row)
    ranks = []
    for target in retrieval.targets:
        members = by_group.get(target["group"], [])
        positives = [r["score"] for r in members if r["label"] == 1]
        rerank = (
            1 + sum(r["score"] >= positives[0] for r in members if r["label"] == 0)
            if positives
            else None
        )
        ranks.append(target | {"rerank_rank": rerank})
    return pa.Table.from_pylist(lists, schema=LISTS), pa.Table.from_pylist(ranks, schema=RANKS)


def full_catalogue_metrics(
    ranks: pa.Table,
    retriever: str,
    n: int,
    ks: Sequence[int],
    bootstrap_samples: int,
    seed: int,
) -> dict[str, Any]:
    """Per-user HR@K, NDCG@K, MRR@K of retrieval and rerank over the same users, their
    means with 95% bootstrap intervals, and the paired difference rerank minus retrieval."""
    retrieval = rank_metrics(np.asarray(ranks["retrieval_rank"].to_pylist(), float), ks)
    rerank_values = [np.inf if r is None else r for r in ranks["rerank_rank"].to_pylist()]
    rerank = rank_metrics(np.asarray(rerank_values, float), ks)
    users = ranks.num_rows
    alone_row, rerank_row = row_names(retriever, n)
    return {
        "metrics": {
            alone_row: {"test": {"groups": users, **summarize(retrieval, bootstrap_samples, seed)}},
            rerank_row: {"test": {"groups": users, **summarize(rerank, bootstrap_samples, seed)}},
        },
        "rerank_minus_retrieval": {
            "test": paired_summary(rerank, retrieval, bootstrap_samples, seed)
        },
    }


def headline_metrics(results: dict[str, Any]) -> tuple[str, str]:
    """HR and NDCG at the largest K of the results (HR@10 and NDCG@10 by default)."""
    difference = results["rerank_minus_retrieval"]["test"]
    k = max(int(name.split("@")[1]) for name in difference if name.startswith("hr@"))
    return f"hr@{k}", f"ndcg@{k}"


def describe_difference(results: dict[str, Any]) -> str:
    """One line: rerank minus retrieval on the same users, mean [95% CI] of the headline
    metrics."""
    difference = results["rerank_minus_retrieval"]["test"]
    names = headline_metrics(results)
    cells = ", ".join(
        f"{name} {difference[name]['mean']:+.3f} "
        f"[{difference[name]['ci_low']:+.3f},{difference[name]['ci_high']:+.3f}]"
        for name in names
    )
    users = difference[names[0]]["groups"]
    return f"rerank minus retrieval (full catalogue, paired, {users} users): {cells}"
