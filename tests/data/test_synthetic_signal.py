"""Signal survival on known inputs: summaries written to name (or not) the latent genre."""

import pyarrow as pa
import pytest

from msr_ray.config import load_config
from msr_ray.data.histories import train_histories
from msr_ray.data.synthetic import make_items, make_users
from msr_ray.data.synthetic_signal import survival
from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import RunDir


@pytest.fixture
def world(tmp_path):
    config = load_config(
        None,
        [
            f"run_dir={tmp_path / 'run'}",
            "prepare.synthetic.num_users=20",
            "prepare.synthetic.num_items=64",
            "prepare.min_item_interactions=1",
        ],
    )
    run_stage("prepare", config)
    sequences = RunDir(config.run_dir).read_table("dataset", "sequences.parquet")
    return config.prepare.synthetic, sequences


def test_shares_count_what_each_summary_names(world):
    synthetic, sequences = world
    items = {it.item_id: it for it in make_items(synthetic)}
    users = {u.user_id: u for u in make_users(synthetic)}
    histories = train_histories(sequences)
    kept = sorted({i for h in histories.values() for i in h})
    # Every other item summary names its genre; the rest name nothing.
    item_rows = [
        {"item_id": i, "summary": f"A {items[i].genre} video." if n % 2 == 0 else "A video."}
        for n, i in enumerate(kept)
    ]
    # User n: current genre named (n % 4 == 0), another genre only (1), nothing (2, 3).
    user_rows = []
    for n, (user, history) in enumerate(sorted(histories.items())):
        current = users[user].genre_at(len(history) - 1)
        other = next(g for g in ("comedy", "music") if g != current)
        text = {0: f"Likes {current}.", 1: f"Likes {other}."}.get(n % 4, "Likes videos.")
        user_rows += [
            {"user_id": user, "step": 3, "summary": "Likes nothing yet."},
            {"user_id": user, "step": len(history), "summary": text},
        ]
    figures = survival(
        synthetic, sequences, pa.Table.from_pylist(item_rows), pa.Table.from_pylist(user_rows)
    )
    assert figures["items"] == len(kept)
    assert figures["items_naming_genre"] == pytest.approx(len(kept[::2]) / len(kept))
    assert figures["users"] == len(histories) == 20
    assert figures["users_naming_current"] == pytest.approx(5 / 20)
    assert figures["users_naming_only_wrong"] == pytest.approx(5 / 20)
    switched = [u for u in users.values() if u.switch_at < u.length]
    assert figures["switchers"] == len(switched) > 0


def test_ranking_by_the_recent_items_genres_reads_only_the_items_before_the_held_out_one(world):
    from msr_ray.data.histories import user_sequences
    from msr_ray.data.synthetic_signal import RECENT_WINDOW

    synthetic, sequences = world
    genre = {item.item_id: item.genre for item in make_items(synthetic)}
    user, events = next(iter(user_sequences(sequences).items()))
    history = [item for item, _ in events]
    shown = {genre[i] for i in history[:-1][-RECENT_WINDOW:]}
    unseen = [i for i in genre if i not in history]
    inside = [i for i in unseen if genre[i] in shown][:3]
    outside = [i for i in unseen if genre[i] not in shown][:3]
    # List a: the positive shares a recent item's genre, the negatives do not (AUC 1);
    # list b: the other way round (AUC 0). Constant model scores: test AUC 0.5.
    lists = {"a": (inside[0], outside[:2]), "b": (outside[2], inside[1:3])}
    scores = pa.Table.from_pylist(
        [
            {"split": "test", "group": g, "user_id": user, "item_id": i, "label": int(i == p)}
            | {"score": 0.5}
            for g, (p, negatives) in lists.items()
            for i in (p, *negatives)
        ]
    )
    samples = pa.table({"item_id": ["x"], "split": ["train"], "label": [0]})
    figures = survival(synthetic, sequences, samples=samples, scores=scores)
    assert figures["recent_genre_auc"] == pytest.approx(0.5)
    assert figures["test_auc"] == pytest.approx(0.5)
    one = scores.filter(pa.compute.equal(scores["group"], "a"))
    assert survival(synthetic, sequences, samples=samples, scores=one)["recent_genre_auc"] == 1.0
