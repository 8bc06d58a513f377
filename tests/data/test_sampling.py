"""The sampled protocol: who is evaluated and trained, windows, capped pairs, items read."""

import pytest

from msr_ray.config import SamplesConfig, load_config
from msr_ray.data.histories import block_start, boundaries, next_boundary, summary_start
from msr_ray.data.sampling import build_samples, items_read, planned_summaries, sample_users
from tests.stages.test_samples import _sequences

CATALOGUE = [f"i{n:03d}" for n in range(200)]


# 40 users with 12 items each from the first 120 items: items 120-199 nobody rated.
HISTORIES = {f"u{n:02d}": [CATALOGUE[(7 * n + j) % 120] for j in range(12)] for n in range(40)}
SEQUENCES_TABLE = _sequences(HISTORIES)


def test_user_samples_are_seeded_prefixes_of_one_order():
    users = list(HISTORIES)
    small = sample_users(users, SamplesConfig(eval_users=5))
    large = sample_users(reversed(users), SamplesConfig(eval_users=12, train_users=20))
    assert small.eval_users == small.train_users and len(small.eval_users) == 5
    assert small.eval_users <= large.eval_users <= large.train_users
    assert (len(large.eval_users), len(large.train_users)) == (12, 20)
    assert sample_users(users, SamplesConfig(eval_users=5, user_seed=1)) != small
    everyone = sample_users(users, SamplesConfig())
    assert not everyone.is_sampled and everyone.evaluates("anyone") and everyone.trains("x")


def test_windowed_boundaries_count_items_of_the_whole_history():
    assert summary_start(10, None) == 0 and summary_start(10, 6) == 4 and summary_start(4, 6) == 0
    assert boundaries(10, 3, 4) == [7, 10] and boundaries(11, 3, 4) == [7, 10, 11]
    assert boundaries(10, 3) == [3, 6, 9, 10]
    assert [block_start(s, 3, 4) for s in (7, 10, 11)] == [4, 7, 10]
    assert next_boundary(10, 3, {}, 4) == 7 and next_boundary(10, 3, {7: "s"}, 4) == 10
    assert next_boundary(10, 3, {10: "s"}, 4) == 7  # 10 continues 7, which is not done


def test_only_sampled_users_get_lists_and_negatives_come_from_the_whole_catalogue():
    cfg = SamplesConfig(eval_users=10, train_users=25, train_targets="every-item")
    config = load_config(None, ["users.history_window=6"])
    config.samples = cfg
    planned = planned_summaries(config, SEQUENCES_TABLE)
    sample = sample_users(HISTORIES, cfg)
    assert set(planned["user_id"].to_pylist()) == sample.train_users
    assert set(planned["step"].to_pylist()) == {7, 10}  # 10 train items, the last 6 read
    table, skipped = build_samples(SEQUENCES_TABLE, planned, CATALOGUE, cfg)
    assert skipped == {"not_sampled": 15}
    rows = table.to_pylist()
    test_users = {r["user_id"] for r in rows if r["split"] == "test"}
    train_users = {r["user_id"] for r in rows if r["split"] == "train"}
    assert test_users == sample.eval_users and train_users == sample.train_users
    # Train targets: positions 7, 8, 9 (from the first summary step on), 1 negative each.
    assert sum(r["split"] == "train" for r in rows) == 25 * 3 * 2
    negatives = {r["item_id"] for r in rows if r["label"] == 0}
    assert negatives & set(CATALOGUE[120:])  # items no sampled user (nor anyone) rated
    for user in test_users:
        group = [r for r in rows if r["split"] == "test" and r["user_id"] == user]
        assert len(group) == 21 and not {r["item_id"] for r in group[1:]} & set(HISTORIES[user])
    # The lists of a user do not depend on who else is sampled.
    alone, _ = build_samples(
        SEQUENCES_TABLE, planned, CATALOGUE, SamplesConfig(train_targets="every-item")
    )
    user = sorted(test_users)[0]
    mine = [r for r in rows if r["user_id"] == user]
    assert mine == [r for r in alone.to_pylist() if r["user_id"] == user]


def test_a_cap_keeps_a_seeded_sample_of_whole_training_groups():
    config = load_config(None, [])
    planned = planned_summaries(config, SEQUENCES_TABLE)
    whole, _ = build_samples(SEQUENCES_TABLE, planned, CATALOGUE, SamplesConfig())
    capped, _ = build_samples(
        SEQUENCES_TABLE, planned, CATALOGUE, SamplesConfig(max_train_groups=30)
    )
    again, _ = build_samples(
        SEQUENCES_TABLE, planned, CATALOGUE, SamplesConfig(max_train_groups=30)
    )
    train = [r for r in capped.to_pylist() if r["split"] == "train"]
    assert len({r["group"] for r in train}) == 30 and len(train) == 60 and capped.equals(again)
    assert set(map(str, train)) <= set(map(str, whole.to_pylist()))
    evaluation = [r for r in whole.to_pylist() if r["split"] != "train"]
    assert [r for r in capped.to_pylist() if r["split"] != "train"] == evaluation


def test_a_sampled_run_reads_the_windows_of_its_users_and_the_candidates_it_shows():
    config = load_config(None, ["samples.eval_users=4", "users.history_window=3"])
    sample = sample_users(HISTORIES, config.samples)
    windows = {item for u in sample.eval_users for item in HISTORIES[u][7:10]}
    assert items_read(config, SEQUENCES_TABLE, CATALOGUE) == windows
    shown = load_config(None, ["samples.eval_users=4", "recommender.candidate_description=true"])
    read = items_read(shown, SEQUENCES_TABLE, CATALOGUE)
    table, _ = build_samples(
        SEQUENCES_TABLE, planned_summaries(shown, SEQUENCES_TABLE), CATALOGUE, shown.samples
    )
    histories = {item for u in sample.eval_users for item in HISTORIES[u][:10]}
    assert read == histories | set(table["item_id"].to_pylist()) and len(read) > len(histories)
    assert items_read(load_config(None, []), SEQUENCES_TABLE, CATALOGUE) is None


@pytest.mark.parametrize("bad", ["samples.eval_users=0", "samples.max_train_groups=-1"])
def test_sample_sizes_must_be_positive(bad):
    from msr_ray.config import ConfigError

    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        load_config(None, [bad])
