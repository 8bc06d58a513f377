"""Stage `evaluate`: score every valid/test candidate with the fine-tuned recommender.

A Ray Data actor pool loads the base MLLM with the trained LoRA adapter merged in and
computes P(yes) for every candidate (``msr_ray.method.recommender``). Blocks hold whole
candidate lists, so each user's shared prompt prefix is computed once. ``scores/`` holds
one row per candidate and ``eval/metrics.json`` the metrics of each split.

With ``evaluate.full_catalogue`` the kept baseline it names also proposes its top N of
the whole catalogue for each test user; the same pool scores those N as candidates of the
user's test list (same summary, same step), and ``eval/`` gains ``full_catalogue.json``
(``msr_ray.evaluation.full_catalogue``: retrieval alone and retrieval + rerank, paired),
``full_catalogue_lists.parquet`` (the retrieved items, both scores) and
``full_catalogue_ranks.parquet`` (each test user's held-out item's ranks).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.config import PipelineConfig
from msr_ray.data.schemas import SCORES
from msr_ray.evaluation.baselines.retrieval import Retriever
from msr_ray.evaluation.full_catalogue import (
    FULL_CATALOGUE_FILE,
    RETRIEVED_SPLIT,
    full_catalogue_metrics,
    reranked,
    retrieve,
)
from msr_ray.evaluation.metrics import evaluate_scores
from msr_ray.method.recommender import Recommender
from msr_ray.models.prompts import RECOMMEND_PROMPT_VERSION
from msr_ray.run.actor_pools import PoolMap
from msr_ray.run.blocks import dataset_in_groups
from msr_ray.run.method_inputs import adapter_dir, candidate_rows
from msr_ray.run.provenance import BuildContext
from msr_ray.run.registry import EVAL_OUTPUT, SAMPLES_OUTPUT, SCORES_OUTPUT
from msr_ray.run.rundir import RunDir, StageOutput
from msr_ray.run.tables import read_dataset, scores_table

MODEL_NAME = "mllm-msr"


class CandidateScorer:
    """Ray Data callable class: base model + merged adapter, loaded once per actor."""

    def __init__(self, config: PipelineConfig, adapter: str | None):
        self.recommender = Recommender.load(config, adapter)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        return scores_table(rows, self.recommender.score(rows), MODEL_NAME)


def score_candidates(config: PipelineConfig, candidates: pa.Table, adapter: str | None) -> pa.Table:
    """Scores of every candidate row, computed by the actor pool."""
    import ray.data
    from tqdm import tqdm

    cfg = config.evaluate
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


class FullCatalogue:
    """The full-catalogue part of a build: the retriever's top N of every test user, then
    the results once the pool has scored them."""

    def __init__(self, config: PipelineConfig, run: RunDir):
        cfg = self.cfg = config.evaluate.full_catalogue
        start = time.perf_counter()
        self.retriever = Retriever.from_run(run, config.baselines.output_name(cfg.retriever))
        _, sequences = read_dataset(run)
        self.retrieval = retrieve(self.retriever, run.read_table(SAMPLES_OUTPUT), sequences, cfg.n)
        self.seconds = time.perf_counter() - start
        self.candidates = candidate_rows(
            run, config, (RETRIEVED_SPLIT,), self.retrieval.candidates()
        )

    def write(self, config: PipelineConfig, scored: pa.Table, out: StageOutput) -> dict[str, Any]:
        """Write the results of the pool's ``scored`` rows into ``eval/``; return them."""
        lists, ranks = reranked(self.retrieval, _split(scored, [RETRIEVED_SPLIT]))
        evaluate = config.evaluate
        results = {
            "retriever": self.retriever.name,
            "n": self.cfg.n,
            "users": ranks.num_rows,
            "unknown_items": self.retriever.unknown_items,
            "retrieval_seconds": round(self.seconds, 3),
            "rerank_candidates": lists.num_rows,
            **full_catalogue_metrics(
                ranks,
                self.retriever.name,
                self.cfg.n,
                evaluate.ks,
                evaluate.bootstrap_samples,
                config.seed,
            ),
        }
        out.write_bytes(json.dumps(results, indent=2).encode(), FULL_CATALOGUE_FILE)
        out.write_table(lists, "full_catalogue_lists.parquet")
        out.write_table(ranks, "full_catalogue_ranks.parquet")
        return results


def _split(table: pa.Table, splits: list[str]) -> pa.Table:
    return table.filter(pc.is_in(table["split"], value_set=pa.array(splits)))


def build(context: BuildContext) -> dict[str, Any]:
    """Score with the trained adapter; write ``scores/`` and ``eval/`` (``metrics.json``,
    and the full-catalogue results when ``evaluate.full_catalogue`` is on)."""
    config, run = context.config, context.run
    cfg = config.evaluate
    candidates = candidate_rows(run, config, tuple(cfg.splits))
    full = FullCatalogue(config, run) if cfg.full_catalogue is not None else None
    if full is not None:
        candidates = pa.concat_tables([candidates, full.candidates])
    scored = score_candidates(config, candidates, adapter_dir(run))
    scores = _split(scored, list(cfg.splits))
    metrics = evaluate_scores(scores, cfg.ks, cfg.bootstrap_samples, config.seed)
    # The scores are part of this stage's build: same fingerprint as eval/.
    fingerprint = context.fingerprint
    with run.stage_output(f"{SCORES_OUTPUT}/{MODEL_NAME}", fingerprint=fingerprint) as out:
        out.write_table(scores, "scores.parquet")
    metadata = {"metrics": metrics, "prompt_version": RECOMMEND_PROMPT_VERSION}
    summary: dict[str, Any] = {"candidates": scores.num_rows, "metrics": metrics}
    with run.stage_output(EVAL_OUTPUT, metadata, fingerprint) as out:
        out.write_bytes(json.dumps({MODEL_NAME: metrics}, indent=2).encode(), "metrics.json")
        if full is not None:
            summary["full_catalogue"] = full.write(config, scored, out)
            summary["rerank_candidates"] = summary["full_catalogue"]["rerank_candidates"]
    return summary
