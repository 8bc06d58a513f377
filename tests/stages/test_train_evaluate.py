import json

import pyarrow as pa
import pytest
from PIL import Image

from msr_ray.data.images import encode_png
from msr_ray.data.schemas import ITEMS
from msr_ray.pipeline import run_stage
from msr_ray.rundir import RunDir
from msr_ray.stages.evaluate import CandidateScorer
from msr_ray.stages.samples import SCHEMA as SAMPLES
from msr_ray.stages.train import adapter_dir, candidate_rows
from tests.stages.conftest import tiny_config

RED = encode_png(Image.new("RGB", (32, 32), (230, 20, 20)))
BLUE = encode_png(Image.new("RGB", (32, 32), (20, 20, 230)))


def _easy_task(run: RunDir) -> None:
    """Users always pick the bright red item, never the dark blue one."""
    items = [
        {
            "item_id": f"r{n}",
            "title": "Bright red clip",
            "text": "",
            "image_paths": [],
            "image_bytes": [RED],
        }
        for n in range(6)
    ]
    items += [
        {
            "item_id": f"b{n}",
            "title": "Dark blue clip",
            "text": "",
            "image_paths": [],
            "image_bytes": [BLUE],
        }
        for n in range(6)
    ]
    rows = []
    for g in range(48):
        group = f"train:u{g % 8}:{g}"
        for item, label in ((f"r{g % 6}", 1), (f"b{(g + 1) % 6}", 0)):
            rows.append(
                {
                    "split": "train",
                    "user_id": f"u{g % 8}",
                    "item_id": item,
                    "label": label,
                    "group": group,
                    "step": g,
                    "summary": "Likes clips.",
                }
            )
    for split in ("valid", "test"):
        for u in range(8):
            group = f"{split}:u{u}:9"
            candidates = [(f"r{u % 6}", 1)] + [(f"b{n}", 0) for n in range(5)]
            rows += [
                {
                    "split": split,
                    "user_id": f"u{u}",
                    "item_id": i,
                    "label": lab,
                    "group": group,
                    "step": 9,
                    "summary": "Likes clips.",
                }
                for i, lab in candidates
            ]
    with run.stage_output("dataset") as out:
        out.write_table(pa.Table.from_pylist(items, schema=ITEMS), "items.parquet")
    with run.stage_output("samples") as out:
        out.write_table(pa.Table.from_pylist(rows, schema=SAMPLES))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_session):
    run_dir = tmp_path_factory.mktemp("train")
    config = tiny_config(
        run_dir,
        "train.epochs=3",
        "train.learning_rate=0.02",
        "train.lora_r=16",
        "train.fail_once_at_epoch=1",
        "train.max_failures=1",
        "train.resources.num_cpus=0.5",
        "train.max_valid_groups=4",
        "evaluate.num_actors=1",
        "evaluate.resources.num_cpus=0.5",
        "evaluate.bootstrap_samples=50",
    )
    run = RunDir(str(run_dir))
    _easy_task(run)
    summary = run_stage("train", config)
    return config, run, summary


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
