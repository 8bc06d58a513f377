"""SFT samples/s of the train stage, two settings side by side on the same data, one run.

Synthetic dataset, embedded MLLM, DeepSpeed on gloo, ``--epochs`` epochs each (LoRA and
ZeRO-2 unless an arm says otherwise); the training pairs (every-item targets) come from the
samples builder with a fixed preference summary per user and step. Each arm prints the
last epoch's samples/s and its training steps' achieved matmul GFLOP/s as a share of the
workers' measured rate (the CPU's per-thread rate in the model's dtype, times threads):

    .venv/bin/python bench/train.py --compare workers   # 2 Ray Train workers vs 1
    .venv/bin/python bench/train.py --compare prompt    # paper's prompt order vs shared prefix
    .venv/bin/python bench/train.py --compare dtype     # fp32 vs bf16 (2 workers each)
    .venv/bin/python bench/train.py --compare recipe    # LoRA vs the top 8 layers in full
    .venv/bin/python bench/train.py --compare frozen-cache --epochs 2  # top 8: replay off/on
    .venv/bin/python bench/train.py --compare zero --epochs 2  # top 8: ZeRO-2 vs stage 0

``--smoke`` runs the same code on the tiny MLLM with 4 users and 1 worker (the test suite
runs it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import pyarrow as pa

from msr_ray.config import SamplesConfig, load_config
from msr_ray.data.histories import boundaries, train_histories
from msr_ray.data.sampling import build_samples
from msr_ray.data.schemas import USER_SUMMARIES
from msr_ray.models.loading import cpu_matmul_rates
from msr_ray.run.cluster import init_ray
from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import RunDir
from msr_ray.run.tables import read_dataset

SUMMARY = "The user appears to have a preference for colourful, upbeat videos (step {step})."
TOP_LAYERS = ["train.trainable=top-layers", "train.top_layers=8", "train.train_projector=false"]
ARMS = {
    "workers": (("1 worker", ["train.num_workers=1"]), ("2 workers", ["train.num_workers=2"])),
    "prompt": (
        ("paper order", ["recommender.prompt_order=paper"]),
        ("shared prefix", ["recommender.prompt_order=shared-prefix"]),
    ),
    "dtype": (("fp32", ["mllm.dtype=float32"]), ("bf16", ["mllm.dtype=bfloat16"])),
    "recipe": (("lora", []), ("top-8 layers", TOP_LAYERS)),
    "zero": (
        ("ZeRO-2", [*TOP_LAYERS, "train.zero_stage=2"]),
        ("ZeRO-0", [*TOP_LAYERS, "train.zero_stage=0"]),
    ),
    "frozen-cache": (
        ("no replay", [*TOP_LAYERS, "train.cache_frozen_layers=false"]),
        ("replay", [*TOP_LAYERS, "train.cache_frozen_layers=true"]),
    ),
}


def _dataset_settings(users: int) -> list[str]:
    """The dataset both arms train on (the train stage checks that its input is this one)."""
    return [
        f"prepare.synthetic.num_users={users}",
        "prepare.min_item_interactions=1",  # a throughput bench: keep every item
    ]


def _prepare(run_dir: str, users: int) -> None:
    config = load_config(None, [f"run_dir={run_dir}", *_dataset_settings(users)])
    run_stage("prepare", config)
    run = RunDir(run_dir)
    items, sequences = read_dataset(run)
    summaries = [
        {
            "user_id": u,
            "step": s,
            "summary": SUMMARY.format(step=s),
            "model": "fixed",
            "prompt_version": "b",
            "mode": "recurrent",
            "block_size": 3,
            "prompt_tokens": 0,
            "generated_tokens": 0,
        }
        for u, h in train_histories(sequences).items()
        for s in boundaries(len(h), 3)
    ]
    samples, _ = build_samples(
        sequences,
        pa.Table.from_pylist(summaries, schema=USER_SUMMARIES),
        items["item_id"].to_pylist(),
        SamplesConfig(train_targets="every-item"),
    )
    with run.stage_output("samples") as out:
        out.write_table(samples)


def _measure(base: str, name: str, overrides: list[str]) -> tuple[float, float, int, float | None]:
    run_dir = f"{base}/{name.replace(' ', '-')}"
    _prepare(run_dir, ARGS.users)
    config = load_config(
        None,
        [
            f"run_dir={run_dir}",
            *_dataset_settings(ARGS.users),
            "train.num_workers=2",
            f"train.epochs={ARGS.epochs}",
            "train.max_valid_groups=0",
            "train.micro_batch_size=4",
            "train.resources.num_cpus=1",
            *(["mllm.name=tiny", "train.num_workers=1"] if ARGS.smoke else []),
            *overrides,
            *(["train.top_layers=1"] if ARGS.smoke else []),  # the tiny MLLM has 2 layers
        ],
    )
    start = time.perf_counter()
    run_stage("train", config)
    wall = time.perf_counter() - start
    run = RunDir(run_dir)
    rates = []
    epoch = config.train.epochs - 1
    for rank in range(config.train.num_workers):
        log = run.read_text("train_logs", f"epoch-{epoch:03d}-rank-{rank}.jsonl")
        rates.append(json.loads(log.splitlines()[-1])["samples_per_s"])
    completion = run.completion("train")
    return sum(rates), wall, completion["train_rows"], completion["final"]["loop_matmul_share"]


def main() -> None:
    init_ray(num_cpus=2)
    base = tempfile.mkdtemp(prefix="msr-bench-train-")
    results = [(name, *_measure(base, name, overrides)) for name, overrides in ARMS[ARGS.compare]]
    rates = cpu_matmul_rates()
    print(
        f"synthetic users={ARGS.users}, {'tiny' if ARGS.smoke else 'embedded'} MLLM, "
        f"ZeRO-2 unless the arm says, micro-batch 4, {ARGS.epochs} epoch(s), every-item targets; {rates['cpu']}: one "
        f"thread {rates['fp32_gflops']:.0f} GFLOP/s fp32, {rates['bf16_gflops']:.0f} bf16"
    )
    for name, rate, wall, rows, share in results:
        used = f"{share:.0%} of the measured matmul rate" if share else "no CPU rate"
        print(
            f"{name:14s} {rate:.2f} samples/s in the last epoch's loop, {used} "
            f"({rows} rows, stage {wall:.0f}s)"
        )
    print(f"ratio {results[1][0]} / {results[0][0]}: {results[1][1] / results[0][1]:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--compare", choices=sorted(ARMS), default="prompt")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny MLLM, 4 users")
    ARGS = parser.parse_args()
    if ARGS.smoke:
        ARGS.users = 4
    main()
