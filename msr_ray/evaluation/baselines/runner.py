"""`msr-ray baseline`: train one baseline and score exactly the samples' valid/test candidates.

Writes ``scores/<model>/`` (same columns as the evaluate stage) and
``baselines/<model>/metrics.json``; with ``baselines.train_users: sampled`` the model
learns only from the users ``samples.train_users`` selects and is named ``<model>-sampled``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from msr_ray.config import PipelineConfig
from msr_ray.data.sampling import run_sample
from msr_ray.evaluation.baselines import BASELINES
from msr_ray.evaluation.baselines.data import eval_groups, sequence_data, train_counts
from msr_ray.evaluation.baselines.models import GRU4Rec, SASRec
from msr_ray.evaluation.baselines.training import fit, score
from msr_ray.evaluation.metrics import evaluate_scores
from msr_ray.run import provenance
from msr_ray.run.rundir import RunDir
from msr_ray.run.tables import read_dataset, scores_table


def baseline_name(model: str, config: PipelineConfig) -> str:
    """The output name of baseline ``model`` under this config (``-sampled`` when it
    learns from the sampled training users only)."""
    suffix = "-sampled" if config.baselines.train_users == "sampled" else ""
    return BASELINES[model] + suffix


def run_baseline(config: PipelineConfig, run: RunDir, model: str) -> dict[str, Any]:
    """Train ``model`` (pop / sasrec / gru4rec) on the train split and score the samples."""
    cfg = config.baselines
    name = baseline_name(model, config)
    provenance.check_upstream("baselines", config, run)
    items, sequences = read_dataset(run)
    data = sequence_data(items, sequences)
    if cfg.train_users == "sampled":
        sample = run_sample(config, sequences)
        data.train = {u: seq for u, seq in data.train.items() if sample.trains(u)}
    candidates = eval_groups(run.read_table("samples")).to_pylist()
    start = time.perf_counter()
    losses: list[float] = []
    if model == "pop":
        counts = train_counts(data)
        scores = [float(counts.get(data.vocab[r["item_id"]], 0)) for r in candidates]
    else:
        # The initial weights come from the seed, not from whatever drew from torch's
        # global generator earlier in this process (a baseline trained before this one).
        torch.manual_seed(cfg.seed)
        net = (
            SASRec(
                len(data.vocab),
                cfg.hidden_size,
                cfg.num_layers,
                cfg.num_heads,
                cfg.dropout,
                cfg.max_len,
            )
            if model == "sasrec"
            else GRU4Rec(len(data.vocab), cfg.hidden_size, cfg.num_layers, cfg.dropout)
        )
        losses = fit(
            net,
            list(data.train.values()),
            cfg.max_len,
            cfg.epochs,
            cfg.batch_size,
            cfg.learning_rate,
            cfg.seed,
            name,
        )
        prefixes = [data.prefix(r["user_id"], r["split"]) for r in candidates]
        scores = score(net, prefixes, [data.vocab[r["item_id"]] for r in candidates], cfg.max_len)
    seconds = time.perf_counter() - start
    table = scores_table(candidates, scores, name)
    metrics = evaluate_scores(
        table, config.evaluate.ks, config.evaluate.bootstrap_samples, config.seed
    )
    # The scores and the metrics are one build, as evaluate's scores/ and eval/ are.
    context = provenance.build_context("baselines", config, run)
    with run.stage_output(f"scores/{name}", fingerprint=context.fingerprint) as out:
        out.write_table(table, "scores.parquet")
    summary = {
        "model": name,
        "train_users": len(data.train),
        "train_seconds": round(seconds, 3),
        "epoch_losses": losses,
        "candidates": table.num_rows,
        "metrics": metrics,
    }
    with run.stage_output(f"baselines/{name}", {"model": name}, context.fingerprint) as out:
        out.write_bytes(json.dumps({name: metrics}, indent=2).encode(), "metrics.json")
        training = {k: v for k, v in summary.items() if k != "metrics"}
        out.write_bytes(json.dumps(training).encode(), "training.json")
    return summary
