"""Provenance: a stage is current only when built from today's inputs and settings."""

import importlib
import json
import os

import pyarrow as pa
import pytest

from msr_ray.config import PipelineConfig, load_config, with_overrides
from msr_ray.data import synthetic
from msr_ray.data.schemas import ITEM_SUMMARIES, USER_SUMMARIES
from msr_ray.models import prompts
from msr_ray.run import provenance
from msr_ray.run.pipeline import run_stage
from msr_ray.run.registry import STAGES_BY_COMMAND
from msr_ray.run.rundir import MissingFingerprint, MissingStageOutput, RunDir


def _config(run_dir, *overrides):
    return load_config(
        None,
        [
            f"run_dir={run_dir}",
            "prepare.synthetic.num_users=12",
            "prepare.synthetic.num_items=16",
            "prepare.min_item_interactions=1",
            "samples.eval_negatives=3",
            *overrides,
        ],
    )


def _fake_summaries(config, run: RunDir) -> None:
    """item_summaries and user_summaries as their stages would commit them (no LLM)."""
    items = run.read_table("dataset", "items.parquet")["item_id"].to_pylist()
    item_rows = [
        {
            "item_id": i,
            "summary": f"about {i}",
            "error": None,
            "model": "m",
            "prompt_version": "p",
            "prompt_tokens": 0,
            "generated_tokens": 0,
        }
        for i in items
    ]
    fingerprint = provenance.fingerprint("item_summaries", config, run)
    with run.stage_output("item_summaries", fingerprint=fingerprint) as out:
        out.write_table(pa.Table.from_pylist(item_rows, schema=ITEM_SUMMARIES))
    sequences = run.read_table("dataset", "sequences.parquet").to_pylist()
    users = sorted({r["user_id"] for r in sequences})
    rows = [
        {
            "user_id": u,
            "step": 3,
            "summary": f"likes {u}",
            "model": "m",
            "prompt_version": "p",
            "mode": "recurrent",
            "block_size": 3,
            "prompt_tokens": 0,
            "generated_tokens": 0,
        }
        for u in users
    ]
    fingerprint = provenance.fingerprint("user_summaries", config, run)
    with run.stage_output("user_summaries", fingerprint=fingerprint) as out:
        out.write_table(pa.Table.from_pylist(rows, schema=USER_SUMMARIES))


def test_a_changed_setting_rebuilds_and_a_skipped_stage_leaves_config_alone(tmp_path):
    config = _config(tmp_path / "run")
    run = RunDir(config.run_dir)
    first = run_stage("prepare", config)
    assert first["skipped"] is False
    assert provenance.state("dataset", config, run) == "current"
    recorded = run.read_text("config.yaml")
    # Unchanged: skipped, and config.yaml is not rewritten.
    assert run_stage("prepare", config)["skipped"] is True
    # A knob prepare does not read leaves it current; a skipped run does not record it.
    other = with_overrides(config, ["train.learning_rate=0.5"])
    assert run_stage("prepare", other)["skipped"] is True
    assert run.read_text("config.yaml") == recorded
    # A setting prepare reads makes it stale and rebuilds it.
    changed = with_overrides(config, ["prepare.synthetic.num_users=10"])
    assert provenance.state("dataset", changed, run) == "stale"
    rebuilt = run_stage("prepare", changed)
    assert rebuilt["skipped"] is False
    users = set(run.read_table("dataset", "sequences.parquet")["user_id"].to_pylist())
    assert len(users) == 10
    assert "num_users: 10" in run.read_text("config.yaml")


def test_downstream_of_a_rebuilt_stage_is_stale(tmp_path):
    config = _config(tmp_path / "run")
    run = RunDir(config.run_dir)
    run_stage("prepare", config)
    _fake_summaries(config, run)
    assert run_stage("build-samples", config)["skipped"] is False
    assert provenance.state("samples", config, run) == "current"
    # prepare rebuilt (forced, same settings): a new dataset version.
    run_stage("prepare", config, force=True)
    assert provenance.state("user_summaries", config, run) == "stale"
    assert provenance.state("samples", config, run) == "stale"
    with pytest.raises(MissingStageOutput, match="user_summaries/ .* was built from other"):
        run_stage("build-samples", config)
    _fake_summaries(config, run)
    assert run_stage("build-samples", config)["skipped"] is False


def test_changed_source_files_make_prepare_stale(tmp_path):
    source = tmp_path / "data"
    source.mkdir()
    (source / "items.csv").write_text("item_id,title\n" + "".join(f"i{n},T{n}\n" for n in range(8)))
    lines = [f"u{u},i{(u + k) % 8},{k}\n" for u in range(4) for k in range(7)]
    (source / "interactions.csv").write_text("user_id,item_id,timestamp\n" + "".join(lines))
    config = _config(
        tmp_path / "run",
        "prepare.source=csv",
        f"prepare.path={source}",
        "prepare.min_user_interactions=3",
    )
    run = RunDir(config.run_dir)
    run_stage("prepare", config)
    assert run_stage("prepare", config)["skipped"] is True
    more = "".join(f"u9,i{k},{k}\n" for k in range(7))
    with open(source / "interactions.csv", "a") as f:
        f.write(more)
    os.utime(source / "interactions.csv", ns=(1, 1))
    assert provenance.state("dataset", config, run) == "stale"
    assert run_stage("prepare", config)["skipped"] is False
    assert "u9" in run.read_table("dataset", "sequences.parquet")["user_id"].to_pylist()


def test_training_fingerprint_follows_what_training_reads(tmp_path):
    config = PipelineConfig(run_dir=str(tmp_path / "run"))
    run = RunDir(config.run_dir)
    name = provenance.fingerprint("train", config, run)
    drill = with_overrides(config, ["train.fail_once_at_epoch=1", "train.max_failures=3"])
    assert provenance.fingerprint("train", drill, run) == name  # a drill resumes the same run
    for same in ("mllm.num_threads=4", "evaluate.max_actors=5", "recommender.batch_size=3"):
        assert provenance.fingerprint("train", with_overrides(config, [same]), run) == name
    changes = ("train.learning_rate=0.1", "train.seed=3", "recommender.prompt_order=paper")
    for changed in (*changes, "recommender.description_words=5"):
        assert provenance.fingerprint("train", with_overrides(config, [changed]), run) != name
    with run.stage_output("samples") as out:
        out.write_table(pa.table({"x": [1]}))
    assert provenance.fingerprint("train", config, run) != name  # new samples


def test_each_image_side_rebuilds_only_the_outputs_that_read_it(tmp_path):
    config = PipelineConfig(run_dir=str(tmp_path / "run"))
    run = RunDir(config.run_dir)
    outputs = ("dataset", "item_summaries", "user_summaries", "train", "eval")
    before = {o: provenance.fingerprint(o, config, run) for o in outputs}
    expected = {
        "prepare.max_image_side=224": {"dataset"},
        "items.max_image_side=224": {"item_summaries"},
        "recommender.max_image_side=224": {"train", "eval"},
        "train.resources.num_gpus=1": set(),  # where it runs, not what it computes
    }
    for setting, changed in expected.items():
        after = with_overrides(config, [setting])
        moved = {o for o in outputs if provenance.fingerprint(o, after, run) != before[o]}
        assert moved == changed, setting


def test_status_shows_current_stale_and_missing_stages(tmp_path):
    from click.testing import CliRunner

    from msr_ray.cli import main

    config = _config(tmp_path / "run")
    run = RunDir(config.run_dir)
    run_stage("prepare", config)
    _fake_summaries(config, run)
    run_stage("build-samples", config)
    base = ["status", "--run-dir", config.run_dir]
    result = CliRunner().invoke(main, [*base, "--json"])
    assert result.exit_code == 0, result.output
    states = {row["stage"]: row["state"] for row in json.loads(result.output)}
    assert states == {
        "prepare": "current",
        "summarize-items": "current",
        "summarize-users": "current",
        "build-samples": "current",
        "train": "missing",
        "evaluate": "missing",
    }
    changed = CliRunner().invoke(main, [*base, "--json", "--set", "samples.seed=5"])
    assert {r["stage"]: r["state"] for r in json.loads(changed.output)}["build-samples"] == "stale"
    table = CliRunner().invoke(main, base)
    lines = table.output.splitlines()
    assert lines[0] == f"Run directory: {config.run_dir}"
    prepare = next(line for line in lines if line.startswith("prepare"))
    assert "current" in prepare and "users 12" in prepare


SUMMARIZER_SHAPED = {"item_summaries", "user_summaries", "samples", "train", "eval"}


@pytest.mark.parametrize(
    "version, shaped",
    [("PROMPT_VERSION", SUMMARIZER_SHAPED), ("RECOMMEND_PROMPT_VERSION", {"train", "eval"})],
)
def test_a_template_version_enters_the_fingerprints_it_shapes(
    tmp_path, monkeypatch, version, shaped
):
    config = _config(tmp_path / "run")
    run = RunDir(config.run_dir)
    before = {o: provenance.fingerprint(o, config, run) for o in provenance.PROVENANCE}
    monkeypatch.setattr(prompts, version, "reworded")
    after = {o: provenance.fingerprint(o, config, run) for o in provenance.PROVENANCE}
    assert {o for o in before if before[o] != after[o]} == shaped


def test_a_reworded_summarizer_prompt_rebuilds_what_it_shapes(tmp_path, monkeypatch):
    config = _config(tmp_path / "run")
    run = RunDir(config.run_dir)
    run_stage("prepare", config)
    _fake_summaries(config, run)
    run_stage("build-samples", config)
    assert run_stage("build-samples", config)["skipped"] is True
    monkeypatch.setattr(prompts, "PROMPT_VERSION", "reworded-for-test")
    assert provenance.state("dataset", config, run) == "current"
    for output in ("item_summaries", "user_summaries", "samples"):
        assert provenance.state(output, config, run) == "stale"
    with pytest.raises(MissingStageOutput, match="user_summaries/ .* was built from other"):
        run_stage("build-samples", config)
    _fake_summaries(config, run)  # the summarizers, rebuilt with the reworded prompt
    assert run_stage("build-samples", config)["skipped"] is False
    assert provenance.state("samples", config, run) == "current"


def test_a_new_generator_version_rebuilds_the_synthetic_dataset(tmp_path, monkeypatch):
    config = _config(tmp_path / "run")
    run = RunDir(config.run_dir)
    run_stage("prepare", config)
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", "synthetic-next")
    assert provenance.state("dataset", config, run) == "stale"
    assert run_stage("prepare", config)["skipped"] is False


def test_a_stage_built_outside_the_pipeline_refuses_to_seal(tmp_path):
    """Without the build's fingerprint its output would count as current forever."""
    config = _config(tmp_path / "run")
    run = RunDir(config.run_dir)
    prepare = importlib.import_module(STAGES_BY_COMMAND["prepare"].module)
    with pytest.raises(MissingFingerprint, match="run_stage"):
        prepare.build(provenance.BuildContext(config, run, "dataset", ""))
    assert not run.is_complete("dataset")
    prepare.build(provenance.build_context("dataset", config, run))  # what run_stage does
    assert provenance.state("dataset", config, run) == "current"
