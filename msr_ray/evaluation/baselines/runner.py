"""`msr-ray baseline`: train one baseline and score exactly the samples' valid/test candidates.

Writes ``scores/<model>/`` (same columns as the evaluate stage) and ``baselines/<model>/``:
``metrics.json``, ``training.json`` and the trained model (``baselines.kept``). With
``baselines.train_users: sampled`` the model learns only from the users
``samples.train_users`` selects and is named ``<model>-sampled``.
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
from msr_ray.evaluation.baselines.kept import ARCHITECTURE, MODEL_FILE, KeptBaseline
from msr_ray.evaluation.baselines.models import sequence_model
from msr_ray.evaluation.baselines.training import fit, score
from msr_ray.evaluation.metrics import evaluate_scores
from msr_ray.run import provenance
from msr_ray.run.registry import BASELINES_OUTPUT, SAMPLES_OUTPUT, SCORES_OUTPUT
from msr_ray.run.rundir import RunDir
from msr_ray.run.tables import read_dataset, scores_table


def baseline_name(model: str, config: PipelineConfig) -> str:
    """The output name of baseline ``model`` under this config (``-sampled`` when it
    learns from the sampled training users only)."""
    return config.baselines.output_name(BASELINES[model])


def refresh_baseline(
    config: PipelineConfig, run: RunDir, model: str, force: bool = False
) -> dict[str, Any] | None:
    """``run_baseline`` unless the baseline's kept output is current (``force``: always);
    its summary, or None when it was current."""
    folder = f"{BASELINES_OUTPUT}/{baseline_name(model, config)}"
    kept = provenance.state(BASELINES_OUTPUT, config, run, folder) == "current"
    if kept and not force and MODEL_FILE in run.completion(folder)["files"]:
        return None
    return run_baseline(config, run, model)


def run_baseline(config: PipelineConfig, run: RunDir, model: str) -> dict[str, Any]:
    """Train ``model`` (pop / sasrec / gru4rec) on the train split and score the samples."""
    cfg = config.baselines
    name = baseline_name(model, config)
    provenance.check_upstream(BASELINES_OUTPUT, config, run)
    items, sequences = read_dataset(run)
    data = sequence_data(items, sequences)
    if cfg.train_users == "sampled":
        sample = run_sample(config, sequences)
        data.train = {u: seq for u, seq in data.train.items() if sample.trains(u)}
    candidates = eval_groups(run.read_table(SAMPLES_OUTPUT)).to_pylist()
    start = time.perf_counter()
    losses: list[float] = []
    kept = KeptBaseline(BASELINES[model], sorted(data.vocab, key=data.vocab.get), cfg.model_dump())
    if model == "pop":
        counts = train_counts(data)
        kept.counts = [counts.get(index, 0) for index in range(1, len(data.vocab) + 1)]
        scores = [float(counts.get(data.vocab[r["item_id"]], 0)) for r in candidates]
    else:
        # The initial weights come from the seed, not from whatever drew from torch's
        # global generator earlier in this process (a baseline trained before this one).
        torch.manual_seed(cfg.seed)
        shape = {k: getattr(cfg, k) for k in ARCHITECTURE}
        kept.net = sequence_model(kept.kind, len(data.vocab), **shape)
        losses = fit(
            kept.net,
            list(data.train.values()),
            cfg.max_len,
            cfg.epochs,
            cfg.batch_size,
            cfg.learning_rate,
            cfg.seed,
            name,
        )
        prefixes = [data.prefix(r["user_id"], r["split"]) for r in candidates]
        targets = [data.vocab[r["item_id"]] for r in candidates]
        scores = score(kept.net, prefixes, targets, cfg.max_len)
    seconds = time.perf_counter() - start
    table = scores_table(candidates, scores, name)
    metrics = evaluate_scores(
        table, config.evaluate.ks, config.evaluate.bootstrap_samples, config.seed
    )
    # The scores and the metrics are one build, as evaluate's scores/ and eval/ are.
    context = provenance.build_context(BASELINES_OUTPUT, config, run)
    with run.stage_output(f"{SCORES_OUTPUT}/{name}", fingerprint=context.fingerprint) as out:
        out.write_table(table, "scores.parquet")
    summary = {
        "model": name,
        "train_users": len(data.train),
        "train_seconds": round(seconds, 3),
        "epoch_losses": losses,
        "candidates": table.num_rows,
        "metrics": metrics,
    }
    with run.stage_output(
        f"{BASELINES_OUTPUT}/{name}", {"model": name}, context.fingerprint
    ) as out:
        out.write_bytes(json.dumps({name: metrics}, indent=2).encode(), "metrics.json")
        training = {k: v for k, v in summary.items() if k != "metrics"}
        out.write_bytes(json.dumps(training).encode(), "training.json")
        kept.write(out)
    return summary
