"""Recommendation quality under the paper's protocol (leave-last-out, 1 positive : 20 negatives).

    .venv/bin/python bench/quality.py --dataset movielens-1m --baselines-only

Prepares the dataset (k-core users >= 6, items >= 5), builds the valid/test candidate
lists (seeded negatives), then trains and scores Popularity, SASRec and GRU4Rec on the
same lists; prints AUC / HR@5 / NDCG@5 / MRR@5 with 95% CIs and training time each.
The MLLM-MSR arm (and its ablations) needs the full pipeline: see the README.
"""

from __future__ import annotations

import argparse
import tempfile

from msr_ray.baselines.runner import run_baseline
from msr_ray.config import load_config
from msr_ray.metrics import format_table
from msr_ray.pipeline import run_stage
from msr_ray.rundir import RunDir
from msr_ray.stages.prepare import read_dataset
from msr_ray.stages.samples import build_samples

SOURCES = {"movielens-1m": "movielens", "microlens-50k": "microlens"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="movielens-1m", choices=sorted(SOURCES))
    parser.add_argument("--datasets-root", default="../shared/datasets")
    parser.add_argument(
        "--baselines-only",
        action="store_true",
        required=True,
        help="only the sequential baselines (the MLLM arm runs via pipeline)",
    )
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="msr-bench-quality-")
    config = load_config(
        None,
        [
            f"run_dir={run_dir}",
            f"prepare.source={SOURCES[args.dataset]}",
            f"prepare.path={args.datasets_root}/{args.dataset}",
            "prepare.max_image_side=64",
            *args.overrides,
        ],
    )
    run_stage("prepare", config)
    run = RunDir(run_dir)
    items, sequences = read_dataset(run)
    samples, _ = build_samples(
        sequences,
        None,
        items["item_id"].to_pylist(),
        config.samples.train_negatives,
        config.samples.eval_negatives,
        config.samples.seed,
    )
    with run.stage_output("samples") as out:
        out.write_table(samples)
    results, seconds = {}, {}
    for model in ("pop", "sasrec", "gru4rec"):
        summary = run_baseline(config, run, model)
        results[summary["model"]] = summary["metrics"]
        seconds[summary["model"]] = summary["train_seconds"]
    print(format_table(results, "test"))
    print("train+score seconds: " + ", ".join(f"{m} {s:.0f}s" for m, s in seconds.items()))
    print(f"run directory: {run_dir}")


if __name__ == "__main__":
    main()
