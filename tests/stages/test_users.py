import subprocess
import sys

import ray

from msr_ray.data.histories import boundaries, shard_of
from msr_ray.run import provenance
from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import RunDir
from msr_ray.stages.users import UserShard, UserSummarizer, persisted
from tests.stages.conftest import tiny_config, write_dataset

ITEMS = {f"i{n}": f"A clip about topic {n % 4}." for n in range(12)}
HISTORIES = {f"u{n}": [f"i{(n + j) % 12}" for j in range(3 + n % 6)] for n in range(10)}


def _dataset(run_dir, histories=HISTORIES):
    write_dataset(RunDir(str(run_dir)), histories, {**ITEMS, "held-valid": "v", "held-test": "t"})


def _table(run_dir):
    return RunDir(str(run_dir)).read_table("user_summaries").select(["user_id", "step", "summary"])


def test_every_user_and_step_then_kill_a_shard_and_match(tmp_path, ray_session):
    clean = tiny_config(tmp_path / "clean", "users.num_shards=2", "users.max_batch_size=4")
    _dataset(tmp_path / "clean")
    summary = run_stage("summarize-users", clean)
    table = _table(tmp_path / "clean")
    expected = {(u, s) for u, h in HISTORIES.items() for s in boundaries(len(h), 3)}
    assert (
        set(zip(table["user_id"].to_pylist(), table["step"].to_pylist(), strict=True)) == expected
    )
    assert summary["summaries"] == len(expected) and summary["users"] == len(HISTORIES)
    assert summary["mean_batch_size"] > 1  # lockstep batching, not one user per call
    assert summary["generate_calls"] < len(expected)

    killed = tiny_config(tmp_path / "killed", "users.num_shards=2", "users.max_batch_size=4")
    run = RunDir(killed.run_dir)
    _dataset(tmp_path / "killed")
    key = provenance.fingerprint("user_summaries", killed, run)  # what run_stage builds
    summarizer = UserSummarizer(killed, key)
    summarizer.round()
    in_flight = [shard.advance_round.remote() for shard in summarizer.shards]
    ray.kill(summarizer.shards[0], no_restart=False)
    ray.get(in_flight)  # retried on the restarted shard
    while summarizer.round():
        pass
    assert persisted(run, key).num_rows == len(expected)
    resumed = run_stage("summarize-users", killed)  # seals; nothing left to generate
    assert resumed["summaries_now"] == 0 and resumed["skipped_already_done"] == len(expected)
    assert _table(tmp_path / "killed").equals(table)


def test_routing_is_stable_across_processes():
    users = [f"user-{n}" for n in range(50)]
    code = f"from msr_ray.data.histories import shard_of;print([shard_of(u, 4) for u in {users!r}])"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {f"{[shard_of(u, 4) for u in users]}\n"}
    assert len(set(shard_of(u, 4) for u in users)) == 4


def test_direct_mode_and_counted_errors(tmp_path, ray_session):
    histories = {**HISTORIES, "empty": [], "ghost": ["i1", "not-an-item"]}
    config = tiny_config(tmp_path / "d", "users.mode=direct")
    _dataset(tmp_path / "d", histories)
    # "not-an-item" has no row in items: drop it from the written catalog.
    summary = run_stage("summarize-users", config)
    assert summary["users_failed"] == {"empty_history": 1, "unknown_item": 1}
    assert "not-an-item" in summary["error_examples"]["unknown_item"]
    table = _table(tmp_path / "d")
    # Same boundaries as recurrent mode, so the ablation trains on the same pairs.
    assert {
        (u, s) for u, s in zip(table["user_id"].to_pylist(), table["step"].to_pylist(), strict=True)
    } == {(u, s) for u, h in HISTORIES.items() for s in boundaries(len(h), 3)}


def test_direct_prompt_holds_the_whole_prefix_and_no_previous_summary(tmp_path):
    history = [f"i{n}" for n in range(8)]
    _dataset(tmp_path / "r", {"u": history})
    _dataset(tmp_path / "d", {"u": history})
    recurrent = UserShard(0, 1, tiny_config(tmp_path / "r"), "test")
    direct = UserShard(0, 1, tiny_config(tmp_path / "d", "users.mode=direct"), "test")
    assert recurrent._pending() == [("u", 3)]  # each block waits for the one before
    assert direct._pending() == [("u", 3), ("u", 6), ("u", 8)]  # all independent
    recurrent.advance_round()
    block = recurrent.summarizer.request("u", recurrent.users["u"], 6).messages[0]["content"]
    prefix = direct.summarizer.request("u", direct.users["u"], 6).messages[0]["content"]
    assert "previous preference" in block and "previous preference" not in prefix
    assert "Title i0" not in block and "Title i5" in block and "Title i6" not in block
    assert all(f"Title i{n}" in prefix for n in range(6)) and "Title i6" not in prefix
    while direct.advance_round()["pending"]:
        pass
    assert sorted(direct.users["u"].summaries) == [3, 6, 8]


def test_a_history_window_summarizes_the_recent_items_from_a_first_block_of_its_own(tmp_path):
    history = [f"i{n}" for n in range(10)]
    _dataset(tmp_path / "w", {"u": history, "short": history[:4]})
    shard = UserShard(0, 1, tiny_config(tmp_path / "w", "users.history_window=6"), "test")
    assert (shard.users["u"].first, shard.users["short"].first) == (4, 0)
    assert shard._pending() == [("short", 3), ("u", 7)]
    first = shard.summarizer.request("u", shard.users["u"], 7).messages[0]["content"]
    assert "previous preference" not in first  # the window's first block continues nothing
    assert "1. Title - 'Title i4'" in first and "Title i3" not in first and "Title i7" not in first
    shard.advance_round()
    assert shard._pending() == [("short", 4), ("u", 10)]
    second = shard.summarizer.request("u", shard.users["u"], 10).messages[0]["content"]
    assert "previous preference" in second and "4. Title - 'Title i7'" in second
    config = tiny_config(tmp_path / "w", "users.history_window=6", "users.mode=direct")
    direct = UserShard(0, 1, config, "direct")
    prefix = direct.summarizer.request("u", direct.users["u"], 10).messages[0]["content"]
    assert all(f"Title i{n}'" in prefix for n in range(4, 10)) and "Title i3'" not in prefix
