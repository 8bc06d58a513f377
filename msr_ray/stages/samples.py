"""Stage `build-samples`: training pairs from the summaries, valid/test candidate lists.

Per user with summaries, training groups (positive = a train item, ``train_negatives``
seeded negatives), each holding the latest summary that precedes its target: with
``train_targets: boundaries`` one group per summary step s (target = the item at
position s), with ``every-item`` one per train position p from the first summary step
on (summary = the one at the largest step <= p). Valid (second-to-last item) and test (last item)
each get ``eval_negatives`` negatives and the summary of the whole train history. Every
negative is an item the user never interacted with, drawn with a seed per (user, purpose).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.config import PipelineConfig
from msr_ray.data.histories import summaries_by_user, train_histories, user_sequences
from msr_ray.data.negatives import NegativeSampler
from msr_ray.data.schemas import SAMPLES, DataError
from msr_ray.rundir import RunDir
from msr_ray.tables import read_dataset

STAGE = "samples"


def _group_rows(split, user, step, summary, positive, negatives, at=None) -> list[dict[str, Any]]:
    group = f"{split}:{user}:{step if at is None else at}"
    return [
        {
            "split": split,
            "user_id": user,
            "item_id": item,
            "label": int(item == positive),
            "group": group,
            "step": step,
            "summary": summary,
        }
        for item in [positive, *negatives]
    ]


def _train_targets(steps: list[int], history: int, mode: str) -> list[tuple[int, int]]:
    """(target position, summary step) pairs of one user's training groups."""
    if mode == "boundaries":
        return [(s, s) for s in steps if s < history]
    first = steps[0] if steps else history
    return [(p, max(s for s in steps if s <= p)) for p in range(first, history)]


def build_samples(
    sequences: pa.Table,
    summaries: pa.Table | None,
    item_ids: list[str],
    train_negatives: int,
    eval_negatives: int,
    seed: int,
    train_targets: str = "boundaries",
) -> tuple[pa.Table, Counter]:
    """The samples table and the count of users left out (and why).

    Without summaries (baselines only), every user gets valid/test lists and no pairs.
    """
    sampler = NegativeSampler(item_ids, seed)
    baselines_only = summaries is None
    by_user = {} if baselines_only else summaries_by_user(summaries)
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    for user, events in user_sequences(sequences).items():
        train = [item for item, split in events if split == "train"]
        steps = {len(train): ""} if baselines_only else by_user.get(user)
        if not steps:
            skipped["no_user_summary"] += 1
            continue
        seen = {item for item, _ in events}
        last = max(steps)
        user_rows = []
        try:
            for at, step in _train_targets(sorted(steps), len(train), train_targets):
                negatives = sampler.sample(user, seen, train_negatives, f"train:{at}")
                user_rows += _group_rows("train", user, step, steps[step], train[at], negatives, at)
            for item, split in events:
                if split in ("valid", "test"):
                    negatives = sampler.sample(user, seen, eval_negatives, split)
                    user_rows += _group_rows(split, user, last, steps[last], item, negatives)
        except ValueError:  # the catalog holds fewer unseen items than negatives needed
            skipped["too_few_unseen_items"] += 1
            continue
        rows += user_rows
    return pa.Table.from_pylist(rows, schema=SAMPLES), skipped


def build(config: PipelineConfig, run: RunDir) -> dict[str, Any]:
    """Write ``samples/`` from the dataset and the user summaries."""
    run.require("user_summaries")
    items, sequences = read_dataset(run)
    summaries = run.read_table("user_summaries")
    cfg = config.samples
    table, skipped = build_samples(
        sequences,
        summaries,
        items["item_id"].to_pylist(),
        cfg.train_negatives,
        cfg.eval_negatives,
        cfg.seed,
        cfg.train_targets,
    )
    if table.num_rows == 0:
        raise DataError(
            run.output_path("user_summaries"),
            f"no samples: every user was skipped ({dict(skipped)}). With "
            f"{items.num_rows} items, a user needs {cfg.eval_negatives} unseen items for "
            "each candidate list: lower samples.eval_negatives or add items",
        )
    if not pc.any(pc.equal(table["split"], "train")).as_py():
        longest = max((len(t) for t in train_histories(sequences).values()), default=0)
        raise DataError(
            run.output_path("user_summaries"),
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
    with run.stage_output(STAGE, fingerprint=run.build_fingerprint(STAGE)) as out:
        out.write_table(table, "samples.parquet")
        out.metadata.update(summary)
    return summary
