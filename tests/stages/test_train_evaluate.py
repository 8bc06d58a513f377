import json

import pytest

from msr_ray.pipeline import run_stage
from msr_ray.rundir import RunDir
from msr_ray.stages.evaluate import CandidateScorer
from msr_ray.stages.train import adapter_dir, candidate_rows


def _logs(run: RunDir, epoch: int) -> list[dict]:
    rows = []
    for rank in (0, 1):
        text = (
            run.fs.open_input_stream(run.path("train_logs", f"epoch-{epoch:03d}-rank-{rank}.jsonl"))
            .read()
            .decode()
        )
        rows += [json.loads(line) for line in text.splitlines()]
    return rows


def test_training_recovers_from_injected_failure_and_learns(trained):
    config, run, summary = trained
    assert summary["final"]["epoch"] == 2 and summary["num_workers"] == 2
    assert run.exists("_train_failure_injected_1")
    # Epoch 1 ran in the second attempt, which started from the epoch-0 checkpoint.
    assert {r["resumed_at_epoch"] for r in _logs(run, 1)} == {1}
    first, last = _logs(run, 0), _logs(run, 2)
    mean = lambda rows: sum(r["loss"] for r in rows) / len(rows)  # noqa: E731
    assert mean(last) < mean(first) - 0.5
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in last)
    assert run_stage("train", config)["skipped"] is True


def test_adapter_is_standard_peft_and_evaluate_beats_chance(trained):
    config, run, _ = trained
    from peft import PeftConfig

    adapter = adapter_dir(run)
    assert PeftConfig.from_pretrained(adapter).r == 16
    summary = run_stage("evaluate", config)
    test = summary["metrics"]["test"]
    assert test["groups"] == 8 and test["auc"]["mean"] > 0.8
    scores = run.read_table("scores", "mllm-msr").to_pylist()
    assert {r["split"] for r in scores} == {"valid", "test"}
    metrics_file = run.read_json("eval", "metrics.json")
    assert metrics_file["mllm-msr"]["test"]["auc"] == test["auc"]
    # The adapter loaded with PEFT, merged, reproduces the stage's scores.
    scorer = CandidateScorer(config, adapter)
    rows = candidate_rows(run, ("test",)).slice(0, 6)
    again = scorer(rows).to_pylist()
    by_key = {(r["group"], r["item_id"]): r["score"] for r in scores}
    for row in again:
        assert row["score"] == pytest.approx(by_key[(row["group"], row["item_id"])], abs=1e-5)
