import pyarrow as pa

from msr_ray.data.negatives import NegativeSampler
from msr_ray.data.preprocess import preprocess
from msr_ray.data.schemas import INTERACTIONS


def _interactions(rows):
    users, items, stamps = zip(*rows, strict=True)
    return pa.table({"user_id": users, "item_id": items, "timestamp": stamps}, schema=INTERACTIONS)


def test_dedupe_kcore_order_cap_and_split():
    rows = [
        ("u1", "a", 5),
        ("u1", "b", 3),
        ("u1", "c", 3),
        ("u1", "a", 5),  # duplicate event
        ("u1", "d", 9),
        ("u2", "a", 1),
        ("u2", "b", 2),
        ("u2", "c", 3),
        ("u2", "d", 4),
        ("u3", "a", 1),
        ("u3", "z", 2),  # u3 too short, z too rare
    ]
    table, funnel = preprocess(_interactions(rows), min_user=3, min_item=2, max_history=None)
    counts = [step["interactions"] for step in funnel.steps]
    assert counts == [11, 10, 8, 8]
    seq = table.to_pylist()
    u1 = [(r["item_id"], r["position"], r["split"]) for r in seq if r["user_id"] == "u1"]
    # b and c share a timestamp: input order breaks the tie.
    assert u1 == [("b", 0, "train"), ("c", 1, "train"), ("a", 2, "valid"), ("d", 3, "test")]
    assert {r["user_id"] for r in seq} == {"u1", "u2"}


def test_history_cap_keeps_most_recent():
    rows = [("u", f"i{t}", t) for t in range(10)] + [("v", f"i{t}", t) for t in range(10)]
    table, _ = preprocess(_interactions(rows), min_user=3, min_item=1, max_history=4)
    u = [r["item_id"] for r in table.to_pylist() if r["user_id"] == "u"]
    assert u == ["i6", "i7", "i8", "i9"]


def test_split_invariants_on_synthetic():
    from msr_ray.config import SyntheticConfig
    from msr_ray.data.synthetic import generate

    raw = generate(SyntheticConfig(num_users=30, num_items=40))
    table, _ = preprocess(raw.interactions, 6, 5, None)
    by_user: dict[str, list] = {}
    for r in table.to_pylist():
        by_user.setdefault(r["user_id"], []).append(r)
    for rows in by_user.values():
        stamps = [r["timestamp"] for r in rows]
        assert stamps == sorted(stamps)
        assert [r["split"] for r in rows][-2:] == ["valid", "test"]
        assert all(r["split"] == "train" for r in rows[:-2])
        assert rows[-1]["timestamp"] == max(stamps)


def test_negatives_disjoint_seeded_and_bounded():
    sampler = NegativeSampler([f"i{n}" for n in range(50)], seed=7)
    history = {f"i{n}" for n in range(0, 50, 2)}
    first = sampler.sample("u1", history, 20, "test")
    assert len(first) == len(set(first)) == 20
    assert not set(first) & history
    assert first == NegativeSampler(reversed(sampler.pool), seed=7).sample(
        "u1", history, 20, "test"
    )
    assert first != sampler.sample("u1", history, 20, "valid")
    assert first != NegativeSampler(sampler.pool, seed=8).sample("u1", history, 20, "test")
    import pytest

    with pytest.raises(ValueError, match="only 25"):
        sampler.sample("u1", history, 26, "test")


def test_user_sample_is_seeded_after_the_kcore_and_keeps_whole_histories():
    rows = [(f"u{n}", f"i{t}", t) for n in range(20) for t in range(6)] + [("short", "i0", 0)]

    def users(seed, max_users):
        table, funnel = preprocess(_interactions(rows), 3, 1, None, max_users, seed)
        return sorted(set(table["user_id"].to_pylist())), table, funnel

    chosen, table, funnel = users(7, 5)
    assert len(chosen) == 5 and "short" not in chosen  # drawn from users left by the k-core
    assert users(7, 5)[0] == chosen and users(8, 5)[0] != chosen
    assert table.num_rows == 5 * 6  # whole histories
    assert [s["step"] for s in funnel.steps][-2:] == ["user_sample", "history_cap"]
    assert funnel.steps[-2]["users"] == 5
    assert len(users(7, 50)[0]) == 20  # fewer users than asked: all of them
