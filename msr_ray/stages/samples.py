"""Stage `build-samples`: training pairs from the summaries, valid/test candidate lists.

What the pairs and lists are, and how a sampled run picks its users, is in
``msr_ray.data.sampling``; this stage reads the run's tables, builds them and seals
``samples/``.
"""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from msr_ray.data.histories import train_histories
from msr_ray.data.sampling import build_samples
from msr_ray.data.schemas import DataError
from msr_ray.run.provenance import BuildContext
from msr_ray.run.registry import SAMPLES_OUTPUT, USER_SUMMARIES_OUTPUT
from msr_ray.run.tables import read_dataset


def build(context: BuildContext) -> dict[str, Any]:
    """Write ``samples/`` from the dataset and the user summaries."""
    config, run = context.config, context.run
    run.require(USER_SUMMARIES_OUTPUT)
    items, sequences = read_dataset(run)
    summaries = run.read_table(USER_SUMMARIES_OUTPUT)
    cfg = config.samples
    table, skipped = build_samples(sequences, summaries, items["item_id"].to_pylist(), cfg)
    if table.num_rows == 0:
        raise DataError(
            run.output_path(USER_SUMMARIES_OUTPUT),
            f"no samples: every user was skipped ({dict(skipped)}). With "
            f"{items.num_rows} items, a user needs {cfg.eval_negatives} unseen items for "
            "each candidate list: lower samples.eval_negatives or add items",
        )
    if not pc.any(pc.equal(table["split"], "train")).as_py():
        longest = max((len(t) for t in train_histories(sequences).values()), default=0)
        raise DataError(
            run.output_path(USER_SUMMARIES_OUTPUT),
            f"0 training rows ({table.num_rows} valid/test rows): a training pair needs a "
            f"train item after a user's first summary step (every {config.users.block_size} "
            f"items), and the longest train history has {longest} items. Give users longer "
            "histories (prepare.min_history) or a smaller users.block_size; nothing was sealed",
        )
    counts = table.group_by("split").aggregate([([], "count_all"), ("group", "count_distinct")])
    summary = {
        "rows_by_split": {r["split"]: r["count_all"] for r in counts.to_pylist()},
        "groups_by_split": {r["split"]: r["group_count_distinct"] for r in counts.to_pylist()},
        "users_skipped": dict(skipped),
    }
    with run.stage_output(SAMPLES_OUTPUT, fingerprint=context.fingerprint) as out:
        out.write_table(table, "samples.parquet")
        out.metadata.update(summary)
    return summary
