"""Full-catalogue retrieval and rerank metrics on a hand-built case."""

import math

import pyarrow as pa
import pytest

from msr_ray.data.schemas import SAMPLES, SEQUENCES
from msr_ray.evaluation.baselines.kept import KeptBaseline
from msr_ray.evaluation.baselines.retrieval import Retriever
from msr_ray.evaluation.full_catalogue import (
    describe_difference,
    full_catalogue_metrics,
    reranked,
    retrieve,
)

# Popularity by hand: i2 and i3 tie.
COUNTS = {"i0": 9, "i1": 8, "i2": 7, "i3": 7, "i4": 1, "i5": 0}
# user: (train, valid, test); C had the test item i3 before.
SEQUENCES_BY_USER = {"A": ("i0", "i1", "i3"), "B": ("i2", "i0", "i5"), "C": ("i3", "i4", "i3")}


def _tables() -> tuple[pa.Table, pa.Table]:
    sequences, samples = [], []
    for user, items in SEQUENCES_BY_USER.items():
        for position, (item, split) in enumerate(
            zip(items, ("train", "valid", "test"), strict=True)
        ):
            sequences.append(
                {"user_id": user, "item_id": item, "timestamp": position}
                | {"position": position, "split": split}
            )
        for item, label in ((items[2], 1), ("i4" if user != "C" else "i5", 0)):
            samples.append(
                {"split": "test", "user_id": user, "item_id": item, "label": label}
                | {"group": f"test:{user}:1", "step": 1, "summary": f"likes {user}", "position": 2}
            )
    return (
        pa.Table.from_pylist(samples, schema=SAMPLES),
        pa.Table.from_pylist(sequences, schema=SEQUENCES),
    )


@pytest.fixture
def retrieval():
    kept = KeptBaseline("popularity", list(COUNTS), {}, counts=list(COUNTS.values()))
    samples, sequences = _tables()
    return retrieve(Retriever(kept, "popularity"), samples, sequences, n=2)


def test_the_retriever_ranks_the_held_out_item_against_the_items_not_interacted_with(retrieval):
    lists = {}
    for row in retrieval.lists.to_pylist():
        lists.setdefault(row["user_id"], []).append((row["item_id"], row["label"]))
    # A: i0, i1 consumed; i3 ties i2 and ranks after it. B: i5 is last of 4. C: i3 stays
    # a candidate though consumed before; it ties i2 and comes 4th; i4 is never proposed.
    assert lists == {
        "A": [("i2", 0), ("i3", 1)],
        "B": [("i1", 0), ("i3", 0)],
        "C": [("i0", 0), ("i1", 0)],
    }
    assert [(t["user_id"], t["retrieval_rank"]) for t in retrieval.targets] == [
        ("A", 2),
        ("B", 4),
        ("C", 4),
    ]
    row = retrieval.lists.to_pylist()[0]
    assert (row["split"], row["summary"], row["position"], row["step"]) == (
        "retrieved",
        "likes A",
        2,
        1,
    )
    assert retrieval.candidates().schema == SAMPLES


def test_rerank_hits_only_what_the_retriever_found_and_the_metrics_are_paired(retrieval):
    # The recommender puts A's held-out item first; B's and C's were never retrieved.
    mllm = {("A", "i2"): 0.3, ("A", "i3"): 0.9, ("B", "i1"): 0.8, ("B", "i3"): 0.1}
    mllm |= {("C", "i0"): 0.5, ("C", "i1"): 0.4}
    rows = retrieval.lists.to_pylist()
    scored = pa.table(
        {
            "group": [r["group"] for r in rows],
            "item_id": [r["item_id"] for r in rows],
            "score": [mllm[(r["user_id"], r["item_id"])] for r in rows],
        }
    )
    lists, ranks = reranked(retrieval, scored)
    assert lists.column("score").to_pylist() == [mllm[(r["user_id"], r["item_id"])] for r in rows]
    assert ranks.column("rerank_rank").to_pylist() == [1, None, None]
    results = full_catalogue_metrics(ranks, "popularity", 2, [1, 10], 100, 0)
    alone = results["metrics"]["popularity top-2 (full catalogue)"]["test"]
    rerank = results["metrics"]["popularity top-2 + MLLM-MSR rerank"]["test"]
    assert alone["groups"] == rerank["groups"] == 3
    # Retrieval ranks 2, 4, 4: no first place, all within 10.
    assert alone["hr@1"]["mean"] == 0 and alone["hr@10"]["mean"] == 1
    expected = (1 / math.log2(3) + 2 / math.log2(5)) / 3
    assert alone["ndcg@10"]["mean"] == pytest.approx(expected)
    assert alone["mrr@10"]["mean"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    # Rerank ranks 1, miss, miss.
    for name in ("hr@1", "hr@10", "ndcg@10", "mrr@10"):
        assert rerank[name]["mean"] == pytest.approx(1 / 3)
    difference = results["rerank_minus_retrieval"]["test"]
    assert difference["hr@1"]["mean"] == pytest.approx(1 / 3)
    assert difference["hr@10"]["mean"] == pytest.approx(-2 / 3)
    assert difference["ndcg@10"]["groups"] == 3
    assert difference["hr@10"]["ci_low"] <= -2 / 3 <= difference["hr@10"]["ci_high"] <= 0
    line = describe_difference(results)
    assert line.startswith("rerank minus retrieval (full catalogue, paired, 3 users): hr@10 -0.667")
