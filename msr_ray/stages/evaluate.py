"""Stage `evaluate`: score every valid/test candidate with the fine-tuned recommender.

A Ray Data actor pool loads the base MLLM with the trained LoRA adapter merged in and
computes P(yes) for every candidate; ``scores/`` holds one row per candidate and
``eval/metrics.json`` the metrics of each split (shared metrics module).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from msr_ray.config import PipelineConfig
from msr_ray.metrics import evaluate_scores
from msr_ray.rundir import RunDir
from msr_ray.stages.datasets import dataset_in_blocks
from msr_ray.stages.train import adapter_dir, candidate_rows, requests_for

STAGE = "eval"
SCORES = "scores"
MODEL_NAME = "mllm-msr"
SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("label", pa.int8()),
        ("group", pa.string()),
        ("score", pa.float64()),
        ("model", pa.string()),
    ]
)


def scores_table(rows: list[dict], scores: list[float], model: str) -> pa.Table:
    """The scores layout every model writes: candidate columns, its score, the model name."""
    keys = ("split", "user_id", "item_id", "label", "group")
    return pa.Table.from_pylist(
        [
            {**{k: r[k] for k in keys}, "score": s, "model": model}
            for r, s in zip(rows, scores, strict=True)
        ],
        schema=SCHEMA,
    )


def load_recommender(config: PipelineConfig, adapter: str | None):
    """The base MLLM with the LoRA adapter at ``adapter`` merged in (None: the base alone)."""
    from msr_ray.models.loading import load_model

    loaded = load_model(config.mllm, "mllm")
    if adapter:
        from peft import PeftModel

        loaded.model = PeftModel.from_pretrained(loaded.model, adapter).merge_and_unload().eval()
    return loaded


class CandidateScorer:
    """Ray Data callable class: base model + merged adapter, loaded once per actor."""

    def __init__(self, config: PipelineConfig, adapter: str | None):
        self.config = config
        self.loaded = load_recommender(config, adapter)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from msr_ray.models.scoring import score_yes_no

        rows = batch.to_pylist()
        requests = requests_for(rows, self.config.domain, self.config.prepare.max_image_side)
        scores = score_yes_no(self.loaded, requests)
        return scores_table(rows, scores, MODEL_NAME)


def score_candidates(config: PipelineConfig, run: RunDir, adapter: str | None) -> pa.Table:
    """Scores of every candidate of the configured splits, computed by the actor pool."""
    import ray.data

    cfg = config.evaluate
    candidates = candidate_rows(run, tuple(cfg.splits))
    scored = dataset_in_blocks(candidates, cfg.batch_size).map_batches(
        CandidateScorer,
        fn_constructor_kwargs={"config": config, "adapter": adapter},
        compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        num_cpus=cfg.resources.num_cpus,
        num_gpus=cfg.resources.num_gpus,
    )
    batches = list(scored.iter_batches(batch_size=None, batch_format="pyarrow"))
    table = pa.concat_tables(batches) if batches else SCHEMA.empty_table()
    return table.sort_by([("split", "ascending"), ("group", "ascending"), ("item_id", "ascending")])


def run(config: PipelineConfig, run: RunDir) -> dict[str, Any]:
    """Score with the trained adapter; write ``scores/`` and ``eval/metrics.json``."""
    cfg = config.evaluate
    scores = score_candidates(config, run, adapter_dir(run))
    metrics = evaluate_scores(scores, cfg.ks, cfg.bootstrap_samples, config.seed)
    with run.stage_output(f"{SCORES}/{MODEL_NAME}") as out:
        out.write_table(scores, "scores.parquet")
    with run.stage_output(STAGE, {"metrics": metrics}) as out:
        with out.fs.open_output_stream(f"{out.path}/metrics.json") as f:
            f.write(json.dumps({MODEL_NAME: metrics}, indent=2).encode())
    return {"candidates": scores.num_rows, "metrics": metrics}
