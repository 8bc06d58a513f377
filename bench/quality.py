"""Recommendation quality under the paper's protocol (leave-last-out, 1 positive : 20 negatives).

    .venv/bin/python bench/quality.py --dataset movielens-1m
    .venv/bin/python bench/quality.py --dataset movielens-1m --baselines-only \\
        --set prepare.max_users=null --set prepare.max_history=null

Default: on the seeded user subset of ``bench/configs/quality-movielens.yaml``, runs the
whole pipeline three times with the embedded models - MLLM-MSR, then its ablations
(text-only item summaries; direct instead of recurrent user summaries) - and trains
Popularity, SASRec and GRU4Rec on the same data. Every arm scores the same test
candidate lists (checked). Prints AUC / HR@5 / NDCG@5 / MRR@5 with 95% CIs and the
seconds of every stage; writes ``quality.json`` in the run directory. A rerun with the
same ``--run-dir`` resumes: complete stages are skipped.

``--baselines-only`` skips the MLLM arms (and the summaries they need).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.baselines.runner import run_baseline
from msr_ray.config import PipelineConfig, load_config, with_overrides
from msr_ray.metrics import format_table
from msr_ray.pipeline import run_stage
from msr_ray.registry import STAGES
from msr_ray.rundir import RunDir
from msr_ray.stages.samples import build_samples
from msr_ray.tables import read_dataset

SOURCES = {"movielens-1m": "movielens", "microlens-50k": "microlens"}
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "quality-movielens.yaml"
BASELINES = ("pop", "sasrec", "gru4rec")


@dataclass(frozen=True)
class Arm:
    """One MLLM run: its name in the table, its overrides, and the outputs it reuses."""

    name: str
    overrides: tuple[str, ...]
    reuses: tuple[str, ...]


# The full model runs first; the ablations reuse what they share with it.
ARMS = (
    Arm("mllm-msr", (), ()),
    Arm("direct-summaries", ("users.mode=direct",), ("dataset", "item_summaries")),
    Arm("text-only-items", ("items.mode=text",), ("dataset",)),
)


def reuse_outputs(source: RunDir, target: RunDir, outputs: tuple[str, ...]) -> None:
    """Copy complete stage outputs of one local run into another (atomically, once)."""
    for output in outputs:
        if target.is_complete(output):
            continue
        source.require(output)
        destination = Path(target.path(output))
        staging = destination.with_name(destination.name + ".copying")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(source.path(output), staging)
        staging.rename(destination)


def scored_test_lists(run: RunDir) -> pa.Table:
    """The test candidate lists of a run, in a canonical order."""
    samples = run.read_table("samples").select(["split", "user_id", "item_id", "label"])
    test = samples.filter(pc.equal(samples["split"], "test"))
    return test.sort_by([("user_id", "ascending"), ("item_id", "ascending")])


def run_arm(base: PipelineConfig, root: str, arm: Arm) -> tuple[dict, dict[str, float], dict]:
    """Run the pipeline for one arm; its test metrics, stage seconds and samples summary."""
    config = with_overrides(base, [f"run_dir={root}/{arm.name}", *arm.overrides])
    reuse_outputs(RunDir(f"{root}/{ARMS[0].name}"), RunDir(config.run_dir), arm.reuses)
    seconds, summaries = {}, {}
    for stage in STAGES:
        summary = run_stage(stage.command, config)
        summaries[stage.command] = summary
        seconds[stage.command] = summary.get("seconds", 0.0)
    return summaries["evaluate"]["metrics"], seconds, summaries["build-samples"]


def baselines_only_samples(config: PipelineConfig, run: RunDir) -> None:
    """Valid/test candidate lists without summaries, for a run with no MLLM arm."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="movielens-1m", choices=sorted(SOURCES))
    parser.add_argument("--datasets-root", default="../shared/datasets")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--baselines-only", action="store_true", help="skip the MLLM arms")
    parser.add_argument("--run-dir", default=None, help="default: the config's run_dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    base = load_config(
        args.config,
        [
            f"prepare.source={SOURCES[args.dataset]}",
            f"prepare.path={args.datasets_root}/{args.dataset}",
            *([f"run_dir={args.run_dir}"] if args.run_dir else []),
            *args.overrides,
        ],
    )
    root = base.run_dir
    results: dict[str, dict] = {}
    report: dict[str, dict] = {"config": base.model_dump(mode="json"), "arms": {}, "baselines": {}}
    if args.baselines_only:
        baseline_run = RunDir(root)
        baseline_config = base
        run_stage("prepare", base)
        if not baseline_run.is_complete("samples"):
            baselines_only_samples(base, baseline_run)
    else:
        reference = None
        for arm in ARMS:
            metrics, seconds, samples = run_arm(base, root, arm)
            candidates = scored_test_lists(RunDir(f"{root}/{arm.name}"))
            if reference is None:
                reference = candidates
            elif not candidates.equals(reference):
                raise RuntimeError(f"arm {arm.name} scored other test candidates than the full arm")
            results[arm.name] = metrics
            report["arms"][arm.name] = {"seconds": seconds, "samples": samples, "metrics": metrics}
            print(f"{arm.name}: " + ", ".join(f"{s} {t:.0f}s" for s, t in seconds.items()))
        baseline_config = with_overrides(base, [f"run_dir={root}/{ARMS[0].name}"])
        baseline_run = RunDir(baseline_config.run_dir)
    for model in BASELINES:
        summary = run_baseline(baseline_config, baseline_run, model)
        results[summary["model"]] = summary["metrics"]
        report["baselines"][summary["model"]] = {
            "seconds": summary["train_seconds"],
            "metrics": summary["metrics"],
        }
    table = format_table(results, "test")
    RunDir(root).write_text(json.dumps(report, indent=2), "quality.json")
    print(table)
    print(
        "baseline train+score seconds: "
        + ", ".join(f"{m} {r['seconds']:.0f}s" for m, r in report["baselines"].items())
    )
    print(f"results: {RunDir(root).path('quality.json')}")


if __name__ == "__main__":
    main()
