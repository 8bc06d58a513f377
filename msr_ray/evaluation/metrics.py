"""Ranking metrics per user (one positive against its negatives), averaged, with bootstrap CIs.

Each group is one user's candidate list with exactly one positive. Per group:

- AUC: the share of negatives scored below the positive, ties counting one half.
- rank of the positive: 1 + negatives scored higher + negatives scored *equal*. Ties are
  broken pessimistically (against the positive), so a constant scorer gets the worst rank,
  never a lucky one.
- HR@K = [rank <= K]; NDCG@K = 1 / log2(rank + 1) if rank <= K; MRR@K = 1 / rank if
  rank <= K. A K larger than the list counts every positive as within K.

A positive that was never ranked (a retriever left it out of the list it proposes) has
rank infinity: a miss at every K.

Means are over groups; the 95% interval is a percentile bootstrap over groups (seeded).
Two models scored on the same groups are compared by a paired bootstrap: the same
resampled groups for both, so the interval of the difference excludes what the users
themselves vary by.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def rank_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """HR@K, NDCG@K and MRR@K of each positive's rank (1 = first; infinity = not ranked)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 1), 0.0)
        out[f"mrr@{k}"] = np.where(hit, 1.0 / ranks, 0.0)
    return out


def group_metrics(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Metrics of one candidate list (exactly one label 1)."""
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values: a broken model cannot be ranked")
    if int(labels.sum()) != 1:
        raise ValueError(f"a candidate list needs exactly one positive, got {int(labels.sum())}")
    positive = scores[labels == 1][0]
    negatives = scores[labels == 0]
    higher = int((negatives > positive).sum())
    equal = int((negatives == positive).sum())
    rank = 1 + higher + equal
    out = {
        "auc": (len(negatives) - higher - 0.5 * equal) / len(negatives) if len(negatives) else 1.0
    }
    out.update({name: float(v[0]) for name, v in rank_metrics(np.array([rank]), ks).items()})
    return out


def per_group(table: pa.Table, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Metric arrays over the groups of a table with columns group, label, score (in
    the order of the sorted group ids)."""
    groups = np.asarray(table["group"].to_pylist(), dtype=object)
    labels = np.asarray(table["label"].to_pylist(), dtype=np.int64)
    scores = np.asarray(table["score"].to_pylist(), dtype=np.float64)
    order = np.argsort(groups, kind="stable")
    groups, labels, scores = groups[order], labels[order], scores[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if len(groups) else []
    ends = np.r_[starts[1:], len(groups)] if len(groups) else []
    rows = [group_metrics(scores[a:b], labels[a:b], ks) for a, b in zip(starts, ends, strict=True)]
    names = list(rows[0]) if rows else ["auc"]
    return {name: np.array([r[name] for r in rows]) for name in names}


def summarize(
    values: dict[str, np.ndarray], bootstrap_samples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Mean and 95% percentile-bootstrap interval of each metric (resampling groups)."""
    n = len(next(iter(values.values())))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(bootstrap_samples, n)) if n and bootstrap_samples else None
    out = {}
    for name, array in values.items():
        mean = float(array.mean()) if n else float("nan")
        low = high = mean
        if draws is not None:
            means = array[draws].mean(axis=1)
            low, high = (float(v) for v in np.percentile(means, [2.5, 97.5]))
        out[name] = {"mean": mean, "ci_low": low, "ci_high": high}
    return out


def paired_summary(
    first: dict[str, np.ndarray],
    second: dict[str, np.ndarray],
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Each metric of ``first`` minus ``second`` (arrays over the same groups, in the same
    order): groups, mean and the 95% paired-bootstrap interval."""
    names = [name for name in first if name in second]
    difference = {name: first[name] - second[name] for name in names}
    result = summarize(difference, bootstrap_samples, seed)
    return {name: {"groups": len(difference[name]), **result[name]} for name in names}


def paired_difference(
    first: pa.Table,
    second: pa.Table,
    metric: str = "auc",
    ks: Sequence[int] = (5,),
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Mean of ``metric`` of ``first`` minus ``second`` over the same groups, with the 95%
    paired-bootstrap interval. Both tables must hold exactly the same groups."""
    groups = [sorted(set(t["group"].to_pylist())) for t in (first, second)]
    if groups[0] != groups[1]:
        raise ValueError(
            f"a paired comparison needs the same candidate lists: {len(groups[0])} and "
            f"{len(groups[1])} groups, {len(set(groups[0]) ^ set(groups[1]))} not in both"
        )
    pair = [{metric: per_group(t, ks)[metric]} for t in (first, second)]
    return paired_summary(*pair, bootstrap_samples, seed)[metric]


def evaluate_scores(
    table: pa.Table, ks: Sequence[int] = (1, 5, 10), bootstrap_samples: int = 1000, seed: int = 0
) -> dict:
    """Metrics of every split in a scores table (columns split, group, label, score)."""
    result = {}
    for split in sorted(set(table["split"].to_pylist())):
        part = table.filter(pa.compute.equal(table["split"], split))
        values = per_group(part, ks)
        result[split] = {"groups": len(values["auc"]), **summarize(values, bootstrap_samples, seed)}
    return result


# The columns of a printed metrics table.
TABLE_METRICS = ("auc", "hr@5", "ndcg@5", "mrr@5")


def format_table(
    results: dict[str, dict], split: str = "test", names: Sequence[str] = TABLE_METRICS
) -> str:
    """A plain-text table of one split: a row per model, mean [95% CI] per metric."""
    width = max(14, *(len(model) + 2 for model in results))
    header = f"{'model':<{width}}" + "".join(f"{n:>22}" for n in names)
    lines = [f"{split} split ({next(iter(results.values()))[split]['groups']} users)", header]
    for model, by_split in results.items():
        cells = []
        for name in names:
            m = by_split[split].get(name)
            cells.append(f"{m['mean']:.3f} [{m['ci_low']:.3f},{m['ci_high']:.3f}]" if m else "-")
        lines.append(f"{model:<{width}}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)
