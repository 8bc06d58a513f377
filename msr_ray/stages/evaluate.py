"""Stage `evaluate`: score every valid/test candidate with the fine-tuned recommender.

A Ray Data actor pool loads the base MLLM with the trained LoRA adapter merged in and
computes P(yes) for every candidate (``msr_ray.method.recommender``). Blocks hold whole
candidate lists, so each user's shared prompt prefix is computed once. ``scores/`` holds
one row per candidate and ``eval/metrics.json`` the metrics of each split.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from msr_ray.config import PipelineConfig
from msr_ray.data.schemas import SCORES
from msr_ray.evaluation.metrics import evaluate_scores
from msr_ray.method.recommender import Recommender, adapter_dir, candidate_rows
from msr_ray.models.prompts import RECOMMEND_PROMPT_VERSION
from msr_ray.run.actor_pools import PoolMap
from msr_ray.run.blocks import dataset_in_groups
from msr_ray.run.provenance import BuildContext
from msr_ray.run.registry import output_of
from msr_ray.run.rundir import RunDir
from msr_ray.run.tables import scores_table

STAGE = output_of(__name__)
SCORES_DIR = "scores"
MODEL_NAME = "mllm-msr"


class CandidateScorer:
    """Ray Data callable class: base model + merged adapter, loaded once per actor."""

    def __init__(self, config: PipelineConfig, adapter: str | None):
        self.recommender = Recommender.load(config, adapter)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        return scores_table(rows, self.recommender.score(rows), MODEL_NAME)


def score_candidates(config: PipelineConfig, run: RunDir, adapter: str | None) -> pa.Table:
    """Scores of every candidate of the configured splits, computed by the actor pool."""
    import ray.data
    from tqdm import tqdm

    cfg = config.evaluate
    candidates = candidate_rows(run, config, tuple(cfg.splits))
    scored = PoolMap(
        candidates,
        "group",
        lambda rows: dataset_in_groups(rows, "group", cfg.groups_per_batch),
        CandidateScorer,
        fn_constructor_kwargs={"config": config, "adapter": adapter},
        compute=ray.data.ActorPoolStrategy(min_size=cfg.min_actors, max_size=cfg.max_actors),
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=cfg.resources.num_cpus,
        num_gpus=cfg.resources.num_gpus,
    )
    batches = []
    with tqdm(total=candidates.num_rows, desc="evaluate", unit="candidate") as bar:
        for batch in scored.batches():
            batches.append(batch)
            bar.update(batch.num_rows)
    table = pa.concat_tables(batches) if batches else SCORES.empty_table()
    return table.sort_by([("split", "ascending"), ("group", "ascending"), ("item_id", "ascending")])


def build(context: BuildContext) -> dict[str, Any]:
    """Score with the trained adapter; write ``scores/`` and ``eval/metrics.json``."""
    config, run = context.config, context.run
    cfg = config.evaluate
    scores = score_candidates(config, run, adapter_dir(run))
    metrics = evaluate_scores(scores, cfg.ks, cfg.bootstrap_samples, config.seed)
    # The scores are part of this stage's build: same fingerprint as eval/.
    fingerprint = context.fingerprint
    with run.stage_output(f"{SCORES_DIR}/{MODEL_NAME}", fingerprint=fingerprint) as out:
        out.write_table(scores, "scores.parquet")
    metadata = {"metrics": metrics, "prompt_version": RECOMMEND_PROMPT_VERSION}
    with run.stage_output(STAGE, metadata, fingerprint) as out:
        out.write_bytes(json.dumps({MODEL_NAME: metrics}, indent=2).encode(), "metrics.json")
    return {"candidates": scores.num_rows, "metrics": metrics}
