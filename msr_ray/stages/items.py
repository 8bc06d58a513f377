"""Stage `summarize-items`: Ray Data maps the MLLM over an autoscaling actor pool.

dataset/items -> drop items already summarized (resume) -> blocks of one batch -> map_batches
(ItemSummarizer, ActorPoolStrategy; a lost actor's rows go to a fresh pool,
``msr_ray.run.actor_pools``) -> each finished batch appended durably to
``_parts/item_summaries/`` -> once every item has a row, the parts become the sealed
``item_summaries/`` table. A bad row (missing/corrupt image, empty text) gets ``error``
set and the configured fallback; it never fails the job. A run that samples its users
(``samples.eval_users`` / ``train_users``) or windows their histories
(``users.history_window``) summarizes only the items it reads
(``msr_ray.data.sampling.items_read``); the others keep no row, and a history shows their
own text instead.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.data.preprocess import dedupe
from msr_ray.data.sampling import items_read, reads_a_selection
from msr_ray.data.schemas import ITEM_SUMMARIES
from msr_ray.method.item_summaries import ItemSummarizer, outcome
from msr_ray.run.actor_pools import PoolMap
from msr_ray.run.blocks import dataset_in_blocks
from msr_ray.run.provenance import BuildContext
from msr_ray.run.registry import COMMAND_OF_OUTPUT, DATASET_OUTPUT, ITEM_SUMMARIES_OUTPUT


def _unique(parts: pa.Table | None) -> pa.Table:
    """One row per item (the first written: a retried batch may have written it twice)."""
    return ITEM_SUMMARIES.empty_table() if parts is None else dedupe(parts, ("item_id",))


def build(context: BuildContext) -> dict[str, Any]:
    """Summarize every item the run reads not yet summarized; seal the table once all are
    done."""
    config, run = context.config, context.run
    import ray.data
    from tqdm import tqdm

    cfg = config.items
    run.require(DATASET_OUTPUT)
    items = run.read_table(DATASET_OUTPUT, "items.parquet")
    catalogue = items.num_rows
    if reads_a_selection(config):
        sequences = run.read_table(DATASET_OUTPUT, "sequences.parquet")
        read = items_read(config, sequences, items["item_id"].to_pylist()) or set()
        items = items.filter(
            pc.is_in(items["item_id"], value_set=pa.array(sorted(read), pa.string()))
        )
    total = items.num_rows
    key = context.parts_key
    done = _unique(run.read_parts(ITEM_SUMMARIES_OUTPUT, key))["item_id"]
    todo = items.filter(pc.invert(pc.is_in(items["item_id"], value_set=done)))
    if cfg.max_items is not None:
        todo = todo.slice(0, cfg.max_items)
    summaries = PoolMap(
        todo,
        "item_id",
        lambda rows: dataset_in_blocks(rows, cfg.batch_size),
        ItemSummarizer,
        fn_constructor_kwargs={
            "spec": config.mllm,
            "cfg": cfg,
            "domain": config.domain,
            "max_image_side": cfg.max_image_side,
        },
        compute=ray.data.ActorPoolStrategy(min_size=cfg.min_actors, max_size=cfg.max_actors),
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        num_cpus=cfg.resources.num_cpus,
        num_gpus=cfg.resources.num_gpus,
    )
    start = time.perf_counter()
    written = generated_tokens = 0
    errors: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    with tqdm(
        total=todo.num_rows, desc=COMMAND_OF_OUTPUT[ITEM_SUMMARIES_OUTPUT], unit="item"
    ) as bar:
        for batch in summaries.batches():
            run.append_part(batch, ITEM_SUMMARIES_OUTPUT, key)
            written += batch.num_rows
            generated_tokens += pc.sum(batch["generated_tokens"]).as_py() or 0
            errors.update(e.split(":", 1)[0] for e in batch["error"].to_pylist() if e)
            outcomes.update(
                outcome(e, n)
                for e, n in zip(
                    batch["error"].to_pylist(), batch["prompt_tokens"].to_pylist(), strict=True
                )
            )
            bar.update(batch.num_rows)
    seconds = time.perf_counter() - start
    table = _unique(run.read_parts(ITEM_SUMMARIES_OUTPUT, key))
    table = table.filter(pc.is_in(table["item_id"], value_set=items["item_id"]))
    complete = table.num_rows >= total
    summary = {
        "items": total,
        "items_not_read": catalogue - total,
        "summarized_now": written,
        "skipped_already_done": len(done),
        "outcomes_now": {k: outcomes.get(k, 0) for k in ("summary", "fallback", "error")},
        "failed_now": outcomes["error"],
        "failures_by_reason": dict(errors),
        "remaining": total - table.num_rows,
        "complete": complete,
        "pools_lost": summaries.pools_lost,
        "items_per_s": round(written / seconds, 3) if seconds else None,
        "generated_tokens_per_s": round(generated_tokens / seconds, 3) if seconds else None,
        "mode": cfg.mode,
        "model": config.mllm.name,
    }
    if complete:
        with run.stage_output(ITEM_SUMMARIES_OUTPUT, fingerprint=context.fingerprint) as out:
            out.write_table(table.sort_by("item_id"), "summaries.parquet")
            out.metadata.update(summary)
    return summary
