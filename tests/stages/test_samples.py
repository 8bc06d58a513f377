import pyarrow as pa

from msr_ray.config import SamplesConfig
from msr_ray.data.sampling import build_samples
from msr_ray.data.schemas import SEQUENCES, USER_SUMMARIES


def _cfg(eval_negatives: int, seed: int, train_targets: str = "boundaries", **sample):
    return SamplesConfig(
        train_negatives=1,
        eval_negatives=eval_negatives,
        seed=seed,
        train_targets=train_targets,
        **sample,
    )


def _sequences(users: dict[str, list[str]]) -> pa.Table:
    rows = []
    for user, items in users.items():
        for pos, item in enumerate(items):
            split = (
                "test" if pos == len(items) - 1 else "valid" if pos == len(items) - 2 else "train"
            )
            rows.append(
                {
                    "user_id": user,
                    "item_id": item,
                    "timestamp": pos,
                    "position": pos,
                    "split": split,
                }
            )
    return pa.Table.from_pylist(rows, schema=SEQUENCES)


def _summaries(rows: list[tuple[str, int, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "user_id": u,
                "step": s,
                "summary": t,
                "model": "m",
                "prompt_version": "v",
                "mode": "recurrent",
                "block_size": 3,
                "prompt_tokens": 0,
                "generated_tokens": 0,
            }
            for u, s, t in rows
        ],
        schema=USER_SUMMARIES,
    )


def test_pairs_at_block_boundaries_and_candidate_lists():
    pool = [f"i{n}" for n in range(40)]
    history = ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8"]  # 7 train, valid i7, test i8
    sequences = _sequences({"u": history, "lost": ["i1", "i2", "i3", "i4"]})
    summaries = _summaries([("u", 3, "S3"), ("u", 6, "S6"), ("u", 7, "S7")])
    table, skipped = build_samples(sequences, summaries, pool, _cfg(20, seed=5))
    assert skipped == {"no_user_summary": 1}
    rows = table.to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    positives = [(r["step"], r["item_id"], r["summary"]) for r in train if r["label"] == 1]
    assert positives == [(3, "i3", "S3"), (6, "i6", "S6")]  # step 7 has no next train item
    assert len(train) == 4
    for split, target in (("valid", "i7"), ("test", "i8")):
        group = [r for r in rows if r["split"] == split]
        assert len(group) == 21 and {r["summary"] for r in group} == {"S7"}
        assert [r["item_id"] for r in group if r["label"] == 1] == [target]
    negatives = {r["item_id"] for r in rows if r["label"] == 0}
    assert not negatives & set(history)
    again, _ = build_samples(sequences, summaries, list(reversed(pool)), _cfg(20, seed=5))
    assert again.equals(table)
    other, _ = build_samples(sequences, summaries, pool, _cfg(20, seed=6))
    assert not other.equals(table)


def test_a_user_without_enough_unseen_items_is_counted_not_fatal():
    pool = [f"i{n}" for n in range(12)]
    sequences = _sequences({"ok": pool[:6], "greedy": pool[:10]})
    summaries = _summaries([("ok", 3, "S"), ("greedy", 3, "G"), ("greedy", 8, "G8")])
    table, skipped = build_samples(sequences, summaries, pool, _cfg(5, seed=0))
    assert skipped == {"too_few_unseen_items": 1}  # greedy saw 10 of 12 items: 5 can't be drawn
    assert set(table["user_id"].to_pylist()) == {"ok"}
    assert table.num_rows == 2 + 6 + 6  # one training pair, valid and test lists of 1 + 5


def test_every_item_targets_pair_each_train_item_with_the_latest_preceding_summary():
    pool = [f"i{n}" for n in range(40)]
    history = ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8"]  # 7 train, valid i7, test i8
    sequences = _sequences({"u": history})
    summaries = _summaries([("u", 3, "S3"), ("u", 6, "S6"), ("u", 7, "S7")])
    dense, _ = build_samples(sequences, summaries, pool, _cfg(20, 5, "every-item"))
    train = [r for r in dense.to_pylist() if r["split"] == "train"]
    positives = [(r["group"], r["step"], r["item_id"], r["summary"]) for r in train if r["label"]]
    assert positives == [
        ("train:u:3", 3, "i3", "S3"),
        ("train:u:4", 3, "i4", "S3"),
        ("train:u:5", 3, "i5", "S3"),
        ("train:u:6", 6, "i6", "S6"),
    ]
    assert len(train) == 8 and not {r["item_id"] for r in train if not r["label"]} & set(history)
    # The groups at the boundaries and the candidate lists are those of the reference mode.
    sparse, _ = build_samples(sequences, summaries, pool, _cfg(20, 5, "boundaries"))
    shared = [r for r in dense.to_pylist() if r["group"] in set(sparse["group"].to_pylist())]
    assert shared == sparse.to_pylist()
