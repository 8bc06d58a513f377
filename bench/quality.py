"""Recommendation quality on real data under a sampled protocol that keeps the catalogue.

    .venv/bin/python bench/quality.py --dataset movielens-1m
    .venv/bin/python bench/quality.py --dataset movielens-1m --baselines-only

Protocol (``bench/configs/quality-movielens.yaml``): the whole k-core dataset is prepared
once. ``samples.eval_users`` seeded users are evaluated, each on the held-out item plus 20
negatives from the whole catalogue; the MLLM arms train on ``samples.train_users`` (default:
the same users) with a seeded cap on training groups, and summarize only those users'
history windows (``users.history_window``). Arms: MLLM-MSR on every evaluated user; its
ablations (direct summaries, text-only item summaries) on a seeded subset of
``--ablation-users`` of them (a prefix of the same user order), training on the same pairs.
Popularity, SASRec and GRU4Rec train twice, on every user's train split and on the sampled
training users only, and are scored on the same lists.

Prints AUC / HR@5 / NDCG@5 / MRR@5 with 95% bootstrap intervals, the paired-bootstrap
interval of each arm's AUC minus every baseline's on the same users, and the seconds of
every stage; writes ``quality.json`` in the run directory. A rerun with the same
``--run-dir`` resumes: current stages are skipped. ``--smoke`` runs the same code on the
synthetic dataset with tiny models and 6 evaluated users (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.config import PipelineConfig, load_config, with_overrides
from msr_ray.data.genre_signal import genre_scores, item_genres, named_genres, naming_share, profile
from msr_ray.data.histories import latest_summaries, summary_start, train_histories
from msr_ray.data.sampling import build_samples
from msr_ray.evaluation.baselines import BASELINES
from msr_ray.evaluation.baselines.runner import baseline_name, run_baseline
from msr_ray.evaluation.metrics import evaluate_scores, format_table, paired_difference
from msr_ray.run.pipeline import run_stage
from msr_ray.run.registry import STAGES
from msr_ray.run.rundir import RunDir
from msr_ray.run.tables import read_dataset

SOURCES = {"movielens-1m": "movielens", "microlens-50k": "microlens"}
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "quality-movielens.yaml"
SMOKE = [
    "prepare.source=synthetic",
    "prepare.synthetic.num_users=30",
    "prepare.synthetic.num_items=40",
    "prepare.min_item_interactions=1",
    "mllm.name=tiny",
    "llm.name=tiny",
    "mllm.max_new_tokens=4",
    "llm.max_new_tokens=4",
    "samples.eval_users=6",
    "samples.max_train_groups=8",
    "train.max_valid_groups=2",
    "train.num_workers=1",
    "items.min_actors=1",
    "evaluate.min_actors=1",
    "evaluate.max_actors=1",
    "evaluate.bootstrap_samples=50",
    "baselines.epochs=1",
]


@dataclass(frozen=True)
class Arm:
    """One MLLM run: its name in the table, its overrides, the outputs it reuses, and
    whether it is an ablation (scored on the ``--ablation-users`` subset)."""

    name: str
    overrides: tuple[str, ...]
    reuses: tuple[str, ...]
    ablation: bool = True


# The full model runs first; the others reuse what they share with it. The recent-prompt
# arm is MLLM-MSR with `users.prompt: recent` (each history item's own text, here its
# genres, beside its summary), on every evaluated user.
ARMS = (
    Arm("mllm-msr", (), (), ablation=False),
    Arm("direct-summaries", ("users.mode=direct",), ("dataset", "item_summaries")),
    Arm("text-only-items", ("items.mode=text",), ("dataset",)),
    Arm("recent-prompt", ("users.prompt=recent",), ("dataset", "item_summaries"), ablation=False),
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


def test_scores(run: RunDir, model: str) -> pa.Table:
    """A model's scores of the test lists, in a canonical order."""
    scores = run.read_table("scores", model)
    test = scores.filter(pc.equal(scores["split"], "test"))
    return test.sort_by([("group", "ascending"), ("item_id", "ascending")])


def on_groups(scores: pa.Table, groups: pa.Array) -> pa.Table:
    """The rows of ``scores`` whose candidate list is one of ``groups``."""
    return scores.filter(pc.is_in(scores["group"], value_set=groups))


def arm_config(base: PipelineConfig, root: str, arm: Arm, ablation_users: int) -> PipelineConfig:
    """An arm's config: its run directory and overrides; the ablations score a seeded
    subset of the users and train on the full arm's training users."""
    overrides = [f"run_dir={root}/{arm.name}", *arm.overrides]
    if arm.ablation and base.samples.eval_users is not None:
        train_users = base.samples.train_users or base.samples.eval_users
        overrides += [
            f"samples.eval_users={min(ablation_users, base.samples.eval_users)}",
            f"samples.train_users={train_users}",
        ]
    return with_overrides(base, overrides)


def run_arm(config: PipelineConfig, root: str, arm: Arm) -> dict[str, float]:
    """Run the pipeline for one arm; the seconds of each stage (0 when it was current)."""
    reuse_outputs(RunDir(f"{root}/{ARMS[0].name}"), RunDir(config.run_dir), arm.reuses)
    seconds = {}
    for stage in STAGES:
        summary = run_stage(stage.command, config)
        seconds[stage.command] = 0.0 if summary.get("skipped") else summary.get("seconds", 0.0)
    return seconds


def baselines_only_samples(config: PipelineConfig, run: RunDir) -> None:
    """Valid/test candidate lists without summaries, for a run with no MLLM arm."""
    items, sequences = read_dataset(run)
    samples, _ = build_samples(sequences, None, items["item_id"].to_pylist(), config.samples)
    with run.stage_output("samples") as out:
        out.write_table(samples)


def run_baselines(config: PipelineConfig, run: RunDir) -> dict[str, dict]:
    """Every baseline, trained on all users and on the sampled training users; per model
    name its train+score seconds and training users (skipped when already scored)."""
    report = {}
    for variant in ("all", "sampled"):
        variant_config = with_overrides(config, [f"baselines.train_users={variant}"])
        for model in BASELINES:
            name = baseline_name(model, variant_config)
            if run.is_complete(f"baselines/{name}"):
                training = run.read_json("baselines", name, "training.json")
            else:
                training = run_baseline(variant_config, run, model)
            report[name] = {"seconds": training["train_seconds"], "users": training["train_users"]}
    return report


def genre_signal(config: PipelineConfig, run: RunDir, lists: pa.Table) -> dict[str, float]:
    """What genre signal each stage of an arm keeps, on its test lists: the AUC of ranking
    candidates by the genres of the whole train history, of the summarized window, and of
    the genres the final user summary names; and the share of item summaries that name one
    of their item's genres (``msr_ray.data.genre_signal``)."""
    items, sequences = read_dataset(run)
    genres = item_genres(items)
    histories = train_histories(sequences)
    users = set(lists["user_id"].to_pylist())
    window = config.users.history_window
    windows = {u: histories[u][summary_start(len(histories[u]), window) :] for u in users}
    final = {u: text for u, (_, text) in latest_summaries(run.read_table("user_summaries")).items()}
    described = run.read_table("item_summaries").select(["item_id", "summary"]).to_pylist()
    profiles = {
        "history": {u: profile(histories[u], genres) for u in users},
        "window": {u: profile(windows[u], genres) for u in users},
        "user_summary": {u: Counter(named_genres(final.get(u, ""))) for u in users},
    }

    def auc(scorer: dict) -> float:
        table = genre_scores(lists, scorer, genres)
        return evaluate_scores(table, (5,), 0)["test"]["auc"]["mean"]

    return {
        **{f"auc_by_{name}_genres": round(auc(p), 3) for name, p in profiles.items()},
        "item_summaries_naming_a_genre": round(
            naming_share({r["item_id"]: r["summary"] for r in described}, genres), 3
        ),
        "user_summaries_naming_a_window_genre": round(
            sum(bool(named_genres(final.get(u, "")) & set(profiles["window"][u])) for u in users)
            / len(users),
            3,
        ),
    }


def metrics_on(scores: pa.Table, config: PipelineConfig) -> dict:
    cfg = config.evaluate
    return evaluate_scores(scores, cfg.ks, cfg.bootstrap_samples, config.seed)


def paired_lines(name: str, mine: pa.Table, others: dict[str, pa.Table], config) -> list[str]:
    """One line per other model: ``name``'s AUC minus its AUC on ``name``'s lists."""
    lines, groups = [], mine["group"].unique()
    cfg = config.evaluate
    for other, table in others.items():
        d = paired_difference(
            mine, on_groups(table, groups), "auc", cfg.ks, cfg.bootstrap_samples, config.seed
        )
        lines.append(
            f"  {name} - {other}: {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] "
            f"({d['groups']} users)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="movielens-1m", choices=sorted(SOURCES))
    parser.add_argument("--datasets-root", default="../shared/datasets")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--baselines-only", action="store_true", help="skip the MLLM arms")
    parser.add_argument("--ablation-users", type=int, default=150)
    parser.add_argument(
        "--arms",
        default=",".join(a.name for a in ARMS),
        help=f"comma-separated MLLM arms to run (default all: {', '.join(a.name for a in ARMS)}); "
        f"{ARMS[0].name} always runs, the others reuse its outputs",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny models, a few users")
    parser.add_argument("--run-dir", default=None, help="default: the config's run_dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    started = time.perf_counter()
    base = load_config(
        args.config,
        [
            f"prepare.source={SOURCES[args.dataset]}",
            f"prepare.path={args.datasets_root}/{args.dataset}",
            *(SMOKE if args.smoke else []),
            *([f"run_dir={args.run_dir}"] if args.run_dir else []),
            *args.overrides,
        ],
    )
    root = base.run_dir
    report: dict = {
        "config": base.model_dump(mode="json"),
        "arms": {},
        "genre_signal": {},
        "paired_auc": [],
    }
    arm_scores: dict[str, pa.Table] = {}
    if args.baselines_only:
        baseline_config, baseline_run = base, RunDir(root)
        run_stage("prepare", base)
        if not baseline_run.is_complete("samples"):
            baselines_only_samples(base, baseline_run)
    else:
        chosen = set(args.arms.split(",")) | {ARMS[0].name}
        unknown = chosen - {a.name for a in ARMS}
        if unknown:
            parser.error(f"unknown arms {sorted(unknown)}")
        for arm in (a for a in ARMS if a.name in chosen):
            config = arm_config(base, root, arm, args.ablation_users)
            seconds = run_arm(config, root, arm)
            arm_run = RunDir(config.run_dir)
            arm_scores[arm.name] = test_scores(arm_run, "mllm-msr")
            report["genre_signal"][arm.name] = genre_signal(config, arm_run, arm_scores[arm.name])
            report["arms"][arm.name] = {
                "seconds": seconds,
                "users": len(arm_scores[arm.name]["group"].unique()),
            }
            print(f"{arm.name}: " + ", ".join(f"{s} {t:.0f}s" for s, t in seconds.items()))
        baseline_config = with_overrides(base, [f"run_dir={root}/{ARMS[0].name}"])
        baseline_run = RunDir(baseline_config.run_dir)
    report["baselines"] = run_baselines(baseline_config, baseline_run)
    baseline_scores = {name: test_scores(baseline_run, name) for name in report["baselines"]}
    full = arm_scores.get(ARMS[0].name)
    reference = full if full is not None else next(iter(baseline_scores.values()))
    for name, table in baseline_scores.items():  # every model scored the same lists
        if not table.select(["group", "item_id"]).equals(reference.select(["group", "item_id"])):
            raise RuntimeError(f"{name} scored other test candidates than {ARMS[0].name}")
    tables, results = [], {}
    by_name = {a.name: a for a in ARMS}
    whole = {a: t for a, t in arm_scores.items() if not by_name[a].ablation}
    results["all"] = {name: metrics_on(t, base) for name, t in (whole | baseline_scores).items()}
    tables.append(format_table(results["all"], "test"))
    ablations = {a: t for a, t in arm_scores.items() if by_name[a].ablation}
    if ablations:
        groups = next(iter(ablations.values()))["group"].unique()
        subset = {name: on_groups(t, groups) for name, t in whole.items()} | ablations
        subset |= {name: on_groups(t, groups) for name, t in baseline_scores.items()}
        results["ablation_users"] = {name: metrics_on(t, base) for name, t in subset.items()}
        tables.append(format_table(results["ablation_users"], "test"))
    report["metrics"] = results
    lines = []
    for name, table in arm_scores.items():
        versus_full = {} if name == ARMS[0].name else {ARMS[0].name: full}
        lines += paired_lines(name, table, versus_full | baseline_scores, base)
    report["paired_auc"] = lines
    report["seconds"] = round(time.perf_counter() - started, 1)
    baseline_run.write_text(json.dumps(report, indent=2), "quality.json")
    print("\n\n".join(tables))
    if report["genre_signal"]:
        print("genre signal through the stages (AUC of ranking by genres; shares):")
        for arm, signal in report["genre_signal"].items():
            print(f"  {arm}: " + ", ".join(f"{k} {v:.3f}" for k, v in signal.items()))
    if lines:
        print("paired bootstrap, AUC difference [95% interval] on the same test lists:")
        print("\n".join(lines))
    print(
        "baseline train+score seconds: "
        + ", ".join(f"{m} {r['seconds']:.0f}s" for m, r in report["baselines"].items())
    )
    print(f"total {report['seconds']:.0f} s; results: {baseline_run.path('quality.json')}")


if __name__ == "__main__":
    main()
