"""Shared fixtures: one local Ray instance per session, the shared datasets, a trained tiny
run, and a tiny pipeline run with its console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from msr_ray.config import ModelSpec
from msr_ray.data.images import encode_png
from msr_ray.data.schemas import ITEMS, SAMPLES, SEQUENCES
from msr_ray.models.loading import load_model
from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import RunDir
from tests.stages.conftest import TINY_SETTINGS, tiny_config

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray Train's controller polls its workers every 2 s, so a training run of a tiny model
# (seconds of work) waits on the poll at each step of its life; 0.5 s saves about 4 s per
# train stage. Set before any Ray instance starts, so that the session's, the CLI
# subprocesses' and the clusters' workers all inherit it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/datasets, or skip the test when it is absent."""
    path = SHARED_DATASETS / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


# The models tests compare results with in float32, whatever `dtype: auto` picks on this
# machine (bfloat16 on a CPU where bf16 is measured faster): exact-equality tests (batched against
# one-by-one generation, shared-prefix against whole-prompt scores) hold in fp32, and bf16
# is compared with fp32 by tests of its own.
@pytest.fixture(scope="session")
def tiny_llm():
    return load_model(ModelSpec(name="tiny", max_new_tokens=8, dtype="float32"), "llm")


@pytest.fixture(scope="session")
def tiny_mllm():
    return load_model(ModelSpec(name="tiny", max_new_tokens=8, dtype="float32"), "mllm")


@pytest.fixture(scope="session")
def embedded_llm():
    return load_model(ModelSpec(name="embedded", dtype="float32"), "llm")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every test that needs one."""
    from msr_ray.run.cluster import init_ray, shutdown_ray

    init_ray(num_cpus=2)
    yield
    shutdown_ray()


RED = encode_png(Image.new("RGB", (32, 32), (230, 20, 20)))
BLUE = encode_png(Image.new("RGB", (32, 32), (20, 20, 230)))


def write_easy_task(run: RunDir) -> None:
    """Users always pick the bright red item, never the dark blue one (dataset + samples)."""
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
    sequences = [
        {"user_id": f"u{u}", "item_id": item, "timestamp": pos, "position": pos, "split": split}
        for u in range(8)
        for pos, (item, split) in enumerate(
            [(f"r{u % 6}", "train"), (f"r{(u + 1) % 6}", "train"), ("r0", "valid"), ("r1", "test")]
        )
    ]
    with run.stage_output("dataset") as out:
        out.write_table(pa.Table.from_pylist(items, schema=ITEMS), "items.parquet")
        out.write_table(pa.Table.from_pylist(sequences, schema=SEQUENCES), "sequences.parquet")
    with run.stage_output("samples") as out:
        out.write_table(pa.Table.from_pylist(rows, schema=SAMPLES))


@pytest.fixture(scope="session")
def trained(tmp_path_factory, ray_session):
    """A run trained (tiny MLLM, 2 workers, one injected failure, tracked in MLflow) on the
    easy task."""
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
        "evaluate.max_actors=1",
        "evaluate.resources.num_cpus=0.5",
        "evaluate.bootstrap_samples=50",
        "train.tracking=mlflow",
    )
    run = RunDir(str(run_dir))
    write_easy_task(run)
    summary = run_stage("train", config)
    return config, run, summary


# The console test's pipeline: every stage on the embedded synthetic data, tiny models.
PIPELINE_SETTINGS = [
    *TINY_SETTINGS,
    "samples.eval_negatives=5",
    "users.num_shards=1",
    "train.num_workers=1",
    "train.resources.num_cpus=0.5",
    "evaluate.max_actors=1",
    "evaluate.bootstrap_samples=50",
]


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`msr-ray pipeline` run once in a subprocess on tiny models: its console and its run
    directory (a finished synthetic run; tests that write to it copy it first)."""
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    command = [sys.executable, "-m", "msr_ray.cli", "pipeline", "--run-dir", str(run_dir)]
    for setting in PIPELINE_SETTINGS:
        command += ["--set", setting]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, run_dir
