import math

import numpy as np
import pyarrow as pa
import pytest

from msr_ray.evaluation.metrics import (
    evaluate_scores,
    format_table,
    group_metrics,
    paired_difference,
    summarize,
)


def test_hand_computed_group():
    # positive 0.7; negatives 0.9 (higher), 0.7 (tie), 0.1, 0.2 (lower)
    m = group_metrics(np.array([0.9, 0.7, 0.7, 0.1, 0.2]), np.array([0, 1, 0, 0, 0]), [1, 3, 10])
    assert m["auc"] == pytest.approx((4 - 1 - 0.5) / 4)
    # rank = 1 + 1 higher + 1 tie (pessimistic) = 3
    assert (m["hr@1"], m["hr@3"], m["hr@10"]) == (0.0, 1.0, 1.0)
    assert m["ndcg@3"] == pytest.approx(1 / math.log2(4)) and m["mrr@3"] == pytest.approx(1 / 3)
    assert m["mrr@1"] == 0.0 and m["ndcg@1"] == 0.0


def test_constant_scorer_gets_worst_rank_and_half_auc():
    m = group_metrics(np.zeros(21), np.array([1] + [0] * 20), [5, 50])
    assert m["auc"] == 0.5 and m["hr@5"] == 0.0
    assert m["hr@50"] == 1.0 and m["mrr@50"] == pytest.approx(1 / 21)  # K beyond the list


def test_perfect_and_errors():
    m = group_metrics(np.array([0.1, 0.9]), np.array([0, 1]), [1])
    assert m == {"auc": 1.0, "hr@1": 1.0, "ndcg@1": 1.0, "mrr@1": 1.0}
    with pytest.raises(ValueError, match="NaN"):  # NaN compares false: it would rank first
        group_metrics(np.array([np.nan, 0.9]), np.array([1, 0]), [1])
    with pytest.raises(ValueError, match="exactly one positive"):
        group_metrics(np.array([0.1, 0.9]), np.array([1, 1]), [1])


def test_table_means_and_bootstrap():
    table = pa.table(
        {
            "split": ["test"] * 6,
            "group": ["a", "a", "a", "b", "b", "b"],
            "label": [1, 0, 0, 0, 1, 0],
            "score": [0.9, 0.1, 0.2, 0.9, 0.1, 0.2],
        }
    )
    result = evaluate_scores(table, ks=[1], bootstrap_samples=200, seed=1)["test"]
    assert result["groups"] == 2
    assert result["auc"]["mean"] == 0.5 and result["hr@1"]["mean"] == 0.5
    assert result["auc"]["ci_low"] == 0.0 and result["auc"]["ci_high"] == 1.0
    again = summarize({"x": np.array([0.0, 1.0, 1.0])}, 100, seed=1)["x"]
    assert again == summarize({"x": np.array([0.0, 1.0, 1.0])}, 100, seed=1)["x"]
    assert again["ci_low"] <= again["mean"] <= again["ci_high"]


def test_format_table_aligns_long_model_names():
    table = pa.table(
        {"split": ["test"] * 2, "group": ["a", "a"], "label": [1, 0], "score": [0.9, 0.1]}
    )
    metrics = evaluate_scores(table, ks=[5], bootstrap_samples=10)
    text = format_table({"pop": metrics, "a-very-long-model-name": metrics}, "test")
    lines = text.splitlines()
    assert lines[0] == "test split (1 users)"
    assert len({len(line) for line in lines[1:]}) == 1  # every row as wide as the header
    assert lines[3].startswith("a-very-long-model-name ") and "1.000 [1.000,1.000]" in lines[3]


def _scores(positive_scores: list[float], groups: list[str]) -> pa.Table:
    """One positive (score given) and 4 negatives scored 1, 2, 3, 4 per group."""
    rows = []
    for group, positive in zip(groups, positive_scores, strict=True):
        rows.append({"split": "test", "group": group, "label": 1, "score": positive})
        rows += [{"split": "test", "group": group, "label": 0, "score": s} for s in (1, 2, 3, 4)]
    return pa.Table.from_pylist(rows)


def test_paired_difference_of_auc_on_the_same_lists():
    groups = [f"g{n}" for n in range(40)]
    better = _scores([4.5] * 20 + [2.5] * 20, groups)  # AUC 1 on half, 0.5 on half
    worse = _scores([2.5] * 40, groups[::-1])  # AUC 0.5 everywhere, rows in another order
    result = paired_difference(better, worse, "auc", bootstrap_samples=500, seed=1)
    assert result["groups"] == 40 and result["mean"] == pytest.approx(0.25)
    assert 0.1 < result["ci_low"] < 0.25 < result["ci_high"] < 0.4
    same = paired_difference(worse, worse, "auc")
    assert (same["mean"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same candidate lists"):
        paired_difference(better, _scores([1.0] * 39, groups[:39]))
