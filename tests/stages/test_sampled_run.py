"""A sampled run: the dataset stays whole, only the sampled users and the items they read
are summarized, the baselines learn from everyone or from the sampled users, and two
samples that summarize the same users share their summaries."""

import pyarrow.compute as pc

from msr_ray.config import with_overrides
from msr_ray.data.histories import train_histories
from msr_ray.data.sampling import items_read, sample_users
from msr_ray.evaluation.baselines.runner import run_baseline
from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import RunDir
from tests.stages.conftest import tiny_config

SAMPLED = [
    "prepare.synthetic.num_users=20",
    "prepare.synthetic.num_items=40",
    "prepare.min_item_interactions=2",
    "samples.eval_users=3",
    "samples.train_users=5",
    "users.history_window=6",
]


def test_a_sampled_run_summarizes_what_it_reads_and_keeps_the_catalogue(tmp_path, ray_session):
    config = tiny_config(tmp_path / "run", *SAMPLED)
    run = RunDir(config.run_dir)
    commands = ("prepare", "summarize-items", "summarize-users", "build-samples")
    summaries = {command: run_stage(command, config) for command in commands}
    items = run.read_table("dataset", "items.parquet")
    sequences = run.read_table("dataset", "sequences.parquet")
    histories = train_histories(sequences)
    sample = sample_users(histories, config.samples)
    read = items_read(config, sequences, items["item_id"].to_pylist())
    assert len(histories) == 20 and len(read) < items.num_rows == 40
    summarized = run.read_table("item_summaries")
    assert set(summarized["item_id"].to_pylist()) == read
    users = run.read_table("user_summaries")
    assert set(users["user_id"].to_pylist()) == sample.train_users
    for user, step in zip(users["user_id"].to_pylist(), users["step"].to_pylist(), strict=True):
        assert step > len(histories[user]) - 6  # every summary lies in the user's window
    samples = run.read_table("samples")
    test = samples.filter(pc.equal(samples["split"], "test"))
    assert set(test["user_id"].to_pylist()) == sample.eval_users and test.num_rows == 3 * 21
    train = samples.filter(pc.equal(samples["split"], "train"))
    assert set(train["user_id"].to_pylist()) == sample.train_users
    assert summaries["build-samples"]["users_skipped"] == {"not_sampled": 15}

    # More evaluated users inside the same 5 summarized: the summaries are reused.
    wider = with_overrides(config, ["samples.eval_users=4"])
    assert run_stage("summarize-items", wider).get("skipped") is True
    assert run_stage("summarize-users", wider).get("skipped") is True
    assert run_stage("build-samples", wider).get("skipped") is not True
    # A sixth summarized user: both summaries are rebuilt for what the new sample reads.
    more = with_overrides(config, ["samples.eval_users=4", "samples.train_users=6"])
    assert run_stage("summarize-items", more)["items"] >= len(read)
    assert run_stage("summarize-users", more)["users"] == 6
    assert run_stage("build-samples", more).get("skipped") is not True

    everyone = run_baseline(more, run, "pop")
    sampled = run_baseline(with_overrides(more, ["baselines.train_users=sampled"]), run, "pop")
    assert (everyone["model"], sampled["model"]) == ("popularity", "popularity-sampled")
    assert (everyone["train_users"], sampled["train_users"]) == (20, 6)
    scored = [run.read_table("scores", name) for name in ("popularity", "popularity-sampled")]
    assert all(len(t["group"].unique()) == 8 for t in scored)  # 4 valid + 4 test
    assert scored[0].select(["group", "item_id"]).equals(scored[1].select(["group", "item_id"]))
