"""Stage `summarize-users`: recurrent preference summaries in stateful, hash-partitioned shards.

N ``UserShard`` actors each own the users routed to them by crc32(user_id) % N. A
shard loads the LLM once and advances in lockstep: every round, each of its users
with a pending block goes into one batched generate call (at most
``max_batch_size``). A (user, step) summary counts only once its Parquet part is
written under ``_parts/user_summaries/``; a restarted shard (``max_restarts=-1``)
reloads its state from those parts, and the retried round continues where it was.
The recurrent step itself lives in ``msr_ray.method.preferences``, which online profile
updates in serving call too.

``users.mode: direct`` is the non-recurrent ablation: the summary at each boundary
reads the whole prefix in one prompt, with no previous summary, so it has the same
(user, step) rows, and so the same training pairs, as the recurrent mode.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from msr_ray.config import PipelineConfig
from msr_ray.data.histories import boundaries, shard_of, summary_start, train_histories
from msr_ray.data.preprocess import dedupe
from msr_ray.data.sampling import run_sample
from msr_ray.data.schemas import USER_SUMMARIES
from msr_ray.method.preferences import (
    PreferenceSummarizer,
    UserInputError,
    UserState,
    apply,
    check_history,
)
from msr_ray.models import prompts
from msr_ray.run.method_inputs import history_catalog
from msr_ray.run.provenance import BuildContext
from msr_ray.run.registry import COMMAND_OF_OUTPUT, USER_SUMMARIES_OUTPUT
from msr_ray.run.rundir import RunDir


class UserShard:
    """Owns the users routed to one shard; summarizes them block by block, in lockstep."""

    def __init__(self, shard: int, num_shards: int, config: PipelineConfig, parts_key: str):
        """Load the LLM, read this shard's users from the run, and restore their state.

        Everything comes from the run directory (no object-store arguments), so a
        restarted shard rebuilds itself from durable storage alone. ``parts_key`` names
        the parts of this build (the stage's fingerprint): parts of other builds are not
        read.
        """
        self.shard, self.num_shards = shard, num_shards
        self.run = RunDir(config.run_dir)
        self.parts_key = parts_key
        plan = plan_users(config, self.run)
        self.users = {
            user: UserState(list(history), first=plan.first[user])
            for user, history in plan.histories.items()
            if shard_of(user, num_shards) == shard
        }
        self.summarizer = PreferenceSummarizer(config, plan.catalog)
        self._reload()

    def _reload(self) -> None:
        """Restore every persisted summary of this shard's users (after a restart too)."""
        mine = self.run.read_parts(USER_SUMMARIES_OUTPUT, self.parts_key)
        if mine is None:
            return
        for row in mine.select(["user_id", "step", "summary"]).to_pylist():
            if shard_of(row["user_id"], self.num_shards) != self.shard:
                continue
            state = self.users.get(row["user_id"])
            if state is not None:  # a part of this build holds only planned users
                state.summaries.setdefault(row["step"], row["summary"])

    def _pending(self) -> list[tuple[str, int]]:
        """(user, step) for every block that can be summarized now, earliest steps first."""
        pending = [
            (user, step)
            for user, state in self.users.items()
            for step in self.summarizer.ready_steps(state)
        ]
        return sorted(pending, key=lambda p: (p[1], p[0]))

    def advance_round(self) -> dict[str, int]:
        """One lockstep round: every pending user (up to max_batch_size) in one generate call;
        the summaries are persisted before they count."""
        work = self._pending()[: self.summarizer.cfg.max_batch_size]
        stats: dict[str, int] = {"summaries": 0}
        if work:
            rows = self.summarizer.summarize([(u, self.users[u], s) for u, s in work])
            self.run.append_part(
                pa.Table.from_pylist(rows, schema=USER_SUMMARIES),
                USER_SUMMARIES_OUTPUT,
                self.parts_key,
            )
            apply(self.users, rows)
            stats = {
                "summaries": len(rows),
                "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
                "generated_tokens": sum(r["generated_tokens"] for r in rows),
            }
        stats.update(
            pending=len(self._pending()), generate_calls=int(bool(work)), batch_size=len(work)
        )
        return stats


class UserSummarizer:
    """Driver side: starts the shards, runs lockstep rounds, and adds up their counts."""

    def __init__(self, config: PipelineConfig, parts_key: str):
        import ray

        cfg = config.users
        # Spread over the nodes: losing one node restarts only the shards it held.
        actor = ray.remote(UserShard).options(
            num_cpus=cfg.resources.num_cpus,
            num_gpus=cfg.resources.num_gpus,
            max_restarts=-1,
            max_task_retries=-1,
            scheduling_strategy="SPREAD",
        )
        self.shards = [
            actor.remote(i, cfg.num_shards, config, parts_key) for i in range(cfg.num_shards)
        ]
        self.totals: Counter[str] = Counter()

    def round(self) -> int:
        """Advance every shard by one round; return how many blocks are still pending."""
        import ray

        results = ray.get([shard.advance_round.remote() for shard in self.shards])
        for result in results:
            self.totals.update({k: v for k, v in result.items() if k != "pending"})
        return sum(r["pending"] for r in results)


@dataclass
class UserPlan:
    """The users to summarize (with the first item each one's summaries read), the
    (user, step) rows expected, the users refused, and how many were not sampled."""

    histories: dict[str, list[str]]
    first: dict[str, int]
    catalog: dict[str, prompts.HistoryItem]
    expected: set[tuple[str, int]]
    errors: Counter[str]
    examples: dict[str, str]
    not_sampled: int


def plan_users(config: PipelineConfig, run: RunDir) -> UserPlan:
    """Read the dataset and item summaries; check every sampled user's history window;
    list the expected rows."""
    from msr_ray.run.tables import read_dataset

    _, sequences = read_dataset(run)
    catalog = history_catalog(run)
    sample = run_sample(config, sequences)
    cfg = config.users
    histories, first, errors, examples = {}, {}, Counter(), {}
    not_sampled = 0
    for user, history in train_histories(sequences).items():
        if not sample.summarizes(user):
            not_sampled += 1
            continue
        start = summary_start(len(history), cfg.history_window)
        try:
            check_history(user, history[start:], catalog)
        except UserInputError as exc:
            errors[exc.reason] += 1
            examples.setdefault(exc.reason, str(exc))
            continue
        histories[user], first[user] = history, start
    expected = {
        (user, step)
        for user, history in histories.items()
        for step in boundaries(len(history), cfg.block_size, first[user])
    }
    return UserPlan(histories, first, catalog, expected, errors, examples, not_sampled)


def persisted(run: RunDir, key: str) -> pa.Table:
    """Every persisted summary of the build ``key``, one row per (user, step)."""
    parts = run.read_parts(USER_SUMMARIES_OUTPUT, key)
    if parts is None:
        return USER_SUMMARIES.empty_table()
    return dedupe(parts, ("user_id", "step"))


def _keys(table: pa.Table) -> set[tuple[str, int]]:
    return set(zip(table["user_id"].to_pylist(), table["step"].to_pylist(), strict=True))


def build(context: BuildContext) -> dict[str, Any]:
    """Summarize every user's history at every block boundary; seal when all are done."""
    config, run = context.config, context.run
    from tqdm import tqdm

    cfg = config.users
    plan = plan_users(config, run)
    key = context.parts_key
    done_before = len(_keys(persisted(run, key)) & plan.expected)
    start = time.perf_counter()
    summarizer = UserSummarizer(config, key)
    with tqdm(
        total=len(plan.expected),
        initial=done_before,
        desc=COMMAND_OF_OUTPUT[USER_SUMMARIES_OUTPUT],
        unit="block",
    ) as bar:
        pending = True
        while pending:
            before = summarizer.totals["summaries"]
            pending = summarizer.round()
            bar.update(summarizer.totals["summaries"] - before)
    seconds = time.perf_counter() - start
    table = persisted(run, key)
    missing = plan.expected - _keys(table)
    if missing:
        raise RuntimeError(f"{len(missing)} user summaries missing after the run")
    totals = summarizer.totals
    calls = totals["generate_calls"]
    summary = {
        "users": len(plan.histories),
        "users_not_sampled": plan.not_sampled,
        "users_failed": dict(plan.errors),
        "error_examples": plan.examples,
        "summaries": len(plan.expected),
        "summaries_now": totals["summaries"],
        "skipped_already_done": done_before,
        "generate_calls": calls,
        "mean_batch_size": round(totals["batch_size"] / calls, 3) if calls else 0,
        "users_per_s": round(len(plan.histories) / seconds, 3) if seconds else None,
        "generated_tokens_per_s": round(totals["generated_tokens"] / seconds, 3)
        if seconds
        else None,
        "mode": cfg.mode,
        "block_size": cfg.block_size,
        "history_window": cfg.history_window,
        "num_shards": cfg.num_shards,
    }
    with run.stage_output(USER_SUMMARIES_OUTPUT, fingerprint=context.fingerprint) as out:
        out.write_table(
            table.sort_by([("user_id", "ascending"), ("step", "ascending")]), "summaries.parquet"
        )
        out.metadata.update(summary)
    return summary
