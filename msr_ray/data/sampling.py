"""Training pairs, candidate lists, and which users and items a sampled run reads (no Ray).

Per user with summaries, training groups (positive = a train item, ``train_negatives``
seeded negatives), each holding the latest summary that precedes its target: with
``train_targets: boundaries`` one group per summary step s (target = the item at
position s), with ``every-item`` one per train position p from the first summary step
on (summary = the one at the largest step <= p). Valid (second-to-last item) and test (last item)
each get ``eval_negatives`` negatives and the summary of the whole train history. A row's
``position`` is its target's index in the user's sequence: the items before it are the
history the recommender may show (``recommender.recent_items``). Every
negative is an item the user never interacted with, drawn with a seed per (user, purpose)
from the whole catalogue.

The sampled protocol (``samples.eval_users`` / ``train_users``) keeps the dataset whole and
samples only who is evaluated and who trains: both are prefixes of one seeded order of the
users. Only those users are summarized, and only the items they read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from msr_ray.config import PipelineConfig, SamplesConfig
from msr_ray.data.histories import (
    boundaries,
    summaries_by_user,
    summary_start,
    train_histories,
    user_sequences,
)
from msr_ray.data.negatives import NegativeSampler, stable_seed
from msr_ray.data.schemas import SAMPLES


@dataclass(frozen=True)
class UserSample:
    """The users evaluated and the users trained on; None means every user."""

    eval_users: frozenset[str] | None = None
    train_users: frozenset[str] | None = None

    @property
    def is_sampled(self) -> bool:
        return self.eval_users is not None or self.train_users is not None

    def evaluates(self, user: str) -> bool:
        return self.eval_users is None or user in self.eval_users

    def trains(self, user: str) -> bool:
        return self.train_users is None or user in self.train_users

    def summarizes(self, user: str) -> bool:
        """Whether the user's summaries are read (by a training pair or a candidate list)."""
        return self.evaluates(user) or self.trains(user)


def sample_users(users: Iterable[str], cfg: SamplesConfig) -> UserSample:
    """The seeded evaluation and training users of ``samples`` (every user when unset)."""
    if cfg.eval_users is None and cfg.train_users is None:
        return UserSample()
    ordered = sorted(set(users))
    rng = np.random.default_rng(stable_seed("users", cfg.user_seed))
    ranked = [ordered[int(i)] for i in rng.permutation(len(ordered))]
    evaluated = None if cfg.eval_users is None else frozenset(ranked[: cfg.eval_users])
    trained = evaluated if cfg.train_users is None else frozenset(ranked[: cfg.train_users])
    return UserSample(evaluated, trained)


def reads_a_selection(config: PipelineConfig) -> bool:
    """Whether the summaries read only some users or items: a user sample or a history
    window is set."""
    cfg = config.samples
    return (
        cfg.eval_users is not None
        or cfg.train_users is not None
        or config.users.history_window is not None
    )


def run_sample(config: PipelineConfig, sequences: pa.Table) -> UserSample:
    """The user sample of a run's config over its dataset."""
    return sample_users(sequences["user_id"].unique().to_pylist(), config.samples)


def _group_rows(
    split, user, step, summary, positive, negatives, position, at=None
) -> list[dict[str, Any]]:
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
            "position": position,
        }
        for item in [positive, *negatives]
    ]


def _train_targets(steps: list[int], history: int, mode: str) -> list[tuple[int, int]]:
    """(target position, summary step) pairs of one user's training groups."""
    # NOTE: the reference implementation trains on the item right after each block
    # boundary (``boundaries``); ``every-item`` trains on every later item too, with the
    # last summary before it: 2.4x the rows from the same summaries.
    if mode == "boundaries":
        return [(s, s) for s in steps if s < history]
    first = steps[0] if steps else history
    return [(p, max(s for s in steps if s <= p)) for p in range(first, history)]


def _cap_groups(rows: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    """Keep the rows of a seeded sample of at most ``limit`` training groups."""
    groups = sorted({r["group"] for r in rows if r["split"] == "train"})
    if limit is None or len(groups) <= limit:
        return rows
    rng = np.random.default_rng(stable_seed(seed, "train-groups"))
    kept = {groups[int(i)] for i in rng.choice(len(groups), size=limit, replace=False)}
    return [r for r in rows if r["split"] != "train" or r["group"] in kept]


def build_samples(
    sequences: pa.Table,
    summaries: pa.Table | None,
    item_ids: list[str],
    cfg: SamplesConfig,
    sample: UserSample | None = None,
) -> tuple[pa.Table, Counter]:
    """The samples table and the count of users left out (and why).

    Without summaries (baselines only), every evaluated user gets valid/test lists and no
    pairs. ``sample`` (default: the one ``cfg`` draws) says who is evaluated and trained.
    """
    sampler = NegativeSampler(item_ids, cfg.seed)
    sequences_by_user = user_sequences(sequences)
    sample = sample_users(sequences_by_user, cfg) if sample is None else sample
    baselines_only = summaries is None
    by_user = {} if baselines_only else summaries_by_user(summaries)
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    for user, events in sequences_by_user.items():
        if not sample.summarizes(user):
            skipped["not_sampled"] += 1
            continue
        train = [item for item, split in events if split == "train"]
        steps = {len(train): ""} if baselines_only else by_user.get(user)
        if not steps:
            skipped["no_user_summary"] += 1
            continue
        seen = {item for item, _ in events}
        last = max(steps)
        user_rows = []
        try:
            targets = _train_targets(sorted(steps), len(train), cfg.train_targets)
            for at, step in targets if sample.trains(user) and not baselines_only else []:
                negatives = sampler.sample(user, seen, cfg.train_negatives, f"train:{at}")
                user_rows += _group_rows(
                    "train", user, step, steps[step], train[at], negatives, at, at
                )
            for position, (item, split) in enumerate(events) if sample.evaluates(user) else []:
                if split in ("valid", "test"):
                    negatives = sampler.sample(user, seen, cfg.eval_negatives, split)
                    user_rows += _group_rows(
                        split, user, last, steps[last], item, negatives, position
                    )
        except ValueError:  # the catalog holds fewer unseen items than negatives needed
            skipped["too_few_unseen_items"] += 1
            continue
        rows += user_rows
    rows = _cap_groups(rows, cfg.max_train_groups, cfg.seed)
    return pa.Table.from_pylist(rows, schema=SAMPLES), skipped


def planned_summaries(config: PipelineConfig, sequences: pa.Table) -> pa.Table:
    """The (user, step) rows `summarize-users` writes, with empty summaries: which
    training pairs and candidate lists a run will have, before any summary exists."""
    sample = run_sample(config, sequences)
    cfg = config.users
    rows = [
        {"user_id": user, "step": step, "summary": ""}
        for user, history in train_histories(sequences).items()
        if sample.summarizes(user)
        for step in boundaries(
            len(history), cfg.block_size, summary_start(len(history), cfg.history_window)
        )
    ]
    schema = pa.schema([("user_id", pa.string()), ("step", pa.int64()), ("summary", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def items_read(config: PipelineConfig, sequences: pa.Table, item_ids: list[str]) -> set[str] | None:
    """The items whose summaries a run reads, or None for every item.

    Without a user sample or a history window every item is read. Otherwise: the items
    in the summarized users' history windows and, when the recommender shows candidates'
    summaries, every candidate of the run's training pairs and candidate lists.
    """
    if not reads_a_selection(config):
        return None
    sample = run_sample(config, sequences)
    window = config.users.history_window
    read: set[str] = set()
    for user, history in train_histories(sequences).items():
        if sample.summarizes(user):
            read.update(history[summary_start(len(history), window) :])
    if config.recommender.candidate_description:
        planned = planned_summaries(config, sequences)
        table, _ = build_samples(sequences, planned, item_ids, config.samples, sample)
        read.update(table["item_id"].to_pylist())
    return read
