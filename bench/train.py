"""SFT samples/s of the train stage with 2 Ray Train workers vs 1, same data, one run.

Synthetic dataset, embedded MLLM, LoRA + DeepSpeed ZeRO-2 on gloo, one epoch each; the
training pairs come from the samples builder with a fixed preference summary:

    .venv/bin/python bench/train.py [--users 40]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import pyarrow as pa

from msr_ray.cluster import init_ray
from msr_ray.config import load_config
from msr_ray.data.histories import boundaries, train_histories
from msr_ray.pipeline import run_stage
from msr_ray.rundir import RunDir
from msr_ray.stages.prepare import read_dataset
from msr_ray.stages.samples import build_samples
from msr_ray.stages.users import SCHEMA as USER_SUMMARIES

SUMMARY = "The user appears to have a preference for colourful, upbeat videos."


def _prepare(run_dir: str, users: int) -> None:
    config = load_config(None, [f"run_dir={run_dir}", f"prepare.synthetic.num_users={users}"])
    run_stage("prepare", config)
    run = RunDir(run_dir)
    items, sequences = read_dataset(run)
    summaries = [
        {
            "user_id": u,
            "step": s,
            "summary": SUMMARY,
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
        1,
        20,
        0,
    )
    with run.stage_output("samples") as out:
        out.write_table(samples)


def _measure(base: str, workers: int) -> tuple[float, float, int]:
    run_dir = f"{base}/workers-{workers}"
    _prepare(run_dir, ARGS.users)
    config = load_config(
        None,
        [
            f"run_dir={run_dir}",
            f"train.num_workers={workers}",
            "train.epochs=1",
            "train.max_valid_groups=0",
            "train.micro_batch_size=4",
            "train.resources.num_cpus=1",
        ],
    )
    start = time.perf_counter()
    run_stage("train", config)
    wall = time.perf_counter() - start
    run = RunDir(run_dir)
    rates = []
    for rank in range(workers):
        path = run.path("train_logs", f"epoch-000-rank-{rank}.jsonl")
        last = run.fs.open_input_stream(path).read().decode().splitlines()[-1]
        rates.append(json.loads(last)["samples_per_s"])
    samples = run.completion("train")["train_rows"]
    return sum(rates), wall, samples


def main() -> None:
    init_ray(num_cpus=2)
    base = tempfile.mkdtemp(prefix="msr-bench-train-")
    one, one_wall, rows = _measure(base, 1)
    two, two_wall, rows2 = _measure(base, 2)
    print(f"synthetic users={ARGS.users}, embedded MLLM, LoRA, ZeRO-2, micro-batch 4, 1 epoch")
    print(f"1 worker:  {one:.2f} samples/s in the loop ({rows} rows, stage {one_wall:.0f}s)")
    print(f"2 workers: {two:.2f} samples/s in the loop ({rows2} rows, stage {two_wall:.0f}s)")
    print(f"ratio: {two / one:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=40)
    ARGS = parser.parse_args()
    main()
