"""Stage `summarize-users`: recurrent preference summaries in stateful, hash-partitioned shards.

N ``UserShard`` actors each own the users routed to them by crc32(user_id) % N. A
shard loads the LLM once and advances in lockstep: every round, each of its users
with a pending block goes into one batched generate call (at most
``max_batch_size``). A (user, step) summary counts only once its Parquet part is
written under ``_parts/user_summaries/``; a restarted shard (``max_restarts=-1``)
reloads its state from those parts, and the retried round continues where it was.
``update`` / ``get`` serve online updates of one user's summary.

``users.mode: direct`` is the non-recurrent ablation: the summary at each boundary
reads the whole prefix in one prompt, with no previous summary, so it has the same
(user, step) rows, and so the same training pairs, as the recurrent mode.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from msr_ray.config import PipelineConfig
from msr_ray.data.histories import (
    block_start,
    boundaries,
    next_boundary,
    shard_of,
    train_histories,
)
from msr_ray.data.preprocess import dedupe
from msr_ray.models import prompts
from msr_ray.rundir import RunDir

STAGE = "user_summaries"
SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("step", pa.int32()),
        ("summary", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
        ("mode", pa.string()),
        ("block_size", pa.int32()),
        ("prompt_tokens", pa.int64()),
        ("generated_tokens", pa.int64()),
    ]
)


class UserInputError(ValueError):
    """A user whose history cannot be summarized (empty, or naming an unknown item)."""

    def __init__(self, user_id: str, reason: str, message: str):
        super().__init__(f"user {user_id}: {message}")
        self.user_id, self.reason = user_id, reason


@dataclass
class UserState:
    """What a shard knows of one user: the history and the summary at each step done."""

    history: list[str]
    summaries: dict[int, str] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return max(self.summaries, default=0)


def check_history(user_id: str, history: list[str], catalog: dict[str, Any]) -> None:
    """Raise UserInputError for an empty history or an item the catalog does not know."""
    if not history:
        raise UserInputError(user_id, "empty_history", "history is empty: nothing to summarize")
    unknown = [item for item in history if item not in catalog]
    if unknown:
        raise UserInputError(user_id, "unknown_item", f"unknown item ids {unknown[:5]}")


class UserShard:
    """Owns the users routed to one shard; summarizes them block by block, in lockstep."""

    def __init__(
        self, shard: int, num_shards: int, config: PipelineConfig, parts_key: str = "unkeyed"
    ):
        """Load the LLM, read this shard's users from the run, and restore their state.

        Everything comes from the run directory (no object-store arguments), so a
        restarted shard rebuilds itself from durable storage alone. ``parts_key`` names
        the parts of this build (the stage's fingerprint): parts of other builds are not
        read.
        """
        from msr_ray.models.loading import load_model

        self.shard, self.num_shards = shard, num_shards
        self.spec, self.cfg, self.domain = config.llm, config.users, config.domain
        self.run = RunDir(config.run_dir)
        self.parts_key = parts_key
        plan = plan_users(config, self.run)
        self.catalog = plan.catalog
        self.users = {
            user: UserState(list(history))
            for user, history in plan.histories.items()
            if shard_of(user, num_shards) == shard
        }
        self.loaded = load_model(self.spec, "llm")
        self._reload()

    def _reload(self) -> None:
        """Restore every persisted summary of this shard's users (after a restart too)."""
        mine = self.run.read_parts(STAGE, self.parts_key)
        if mine is None:
            return
        for row in mine.select(["user_id", "step", "summary"]).to_pylist():
            if shard_of(row["user_id"], self.num_shards) != self.shard:
                continue
            state = self.users.setdefault(row["user_id"], UserState([]))
            state.summaries.setdefault(row["step"], row["summary"])

    def _ready_steps(self, state: UserState) -> list[int]:
        """Steps that can be summarized now.

        Recurrent: the next boundary, once the summary it continues exists. Direct: every
        boundary not done, since each one reads the whole prefix and nothing before it.
        """
        if self.cfg.mode == "direct":
            done = state.summaries
            return [s for s in boundaries(len(state.history), self.cfg.block_size) if s not in done]
        step = next_boundary(len(state.history), self.cfg.block_size, state.summaries)
        return [] if step is None else [step]

    def _pending(self) -> list[tuple[str, int]]:
        """(user, step) for every block that can be summarized now, earliest steps first."""
        pending = [
            (user, step) for user, state in self.users.items() for step in self._ready_steps(state)
        ]
        return sorted(pending, key=lambda p: (p[1], p[0]))

    def _request(self, user: str, step: int):
        from msr_ray.models.generation import ChatRequest

        state = self.users[user]
        if self.cfg.mode == "direct":
            prefix = [self.catalog[item] for item in state.history[:step]]
            return ChatRequest(prompts.user_direct_prompt(self.domain, user, prefix))
        start = block_start(step, self.cfg.block_size)
        block = [self.catalog[item] for item in state.history[start:step]]
        previous = state.summaries.get(start) if start else None
        messages = prompts.user_block_prompt(self.domain, user, block, previous, start + 1)
        return ChatRequest(messages)

    def _advance(self, work: list[tuple[str, int]]) -> dict[str, int]:
        """One batched generate call for ``work``; persist, then count the summaries."""
        from msr_ray.models.generation import generate

        answers = generate(self.loaded, [self._request(u, s) for u, s in work], self.spec)
        rows = [
            {
                "user_id": user,
                "step": step,
                "summary": answer.text,
                "model": self.spec.name,
                "prompt_version": prompts.PROMPT_VERSION,
                "mode": self.cfg.mode,
                "block_size": self.cfg.block_size,
                "prompt_tokens": answer.prompt_tokens,
                "generated_tokens": answer.generated_tokens,
            }
            for (user, step), answer in zip(work, answers, strict=True)
        ]
        self.run.append_part(pa.Table.from_pylist(rows, schema=SCHEMA), STAGE, self.parts_key)
        for row in rows:
            self.users[row["user_id"]].summaries[row["step"]] = row["summary"]
        return {
            "summaries": len(rows),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
            "generated_tokens": sum(r["generated_tokens"] for r in rows),
        }

    def step(self) -> dict[str, int]:
        """One lockstep round: every pending user (up to max_batch_size) in one generate call."""
        work = self._pending()[: self.cfg.max_batch_size]
        stats = self._advance(work) if work else {"summaries": 0}
        stats.update(
            pending=len(self._pending()), generate_calls=int(bool(work)), batch_size=len(work)
        )
        return stats

    def get(self, user_id: str) -> dict[str, Any] | None:
        """The user's current summary and the number of history items it covers."""
        state = self.users.get(user_id)
        if state is None or not state.summaries:
            return None
        return {"user_id": user_id, "step": state.step, "summary": state.summaries[state.step]}

    def update(self, user_id: str, new_items: list[str]) -> dict[str, Any]:
        """Append new interactions to a user's history and advance the summary over them."""
        if not new_items:
            raise UserInputError(user_id, "empty_history", "no new items given")
        state = self.users.setdefault(user_id, UserState([]))
        check_history(user_id, state.history + list(new_items), self.catalog)
        state.history.extend(new_items)
        while steps := self._ready_steps(state):
            self._advance([(user_id, step) for step in steps])
        return self.get(user_id)


def _catalog(run: RunDir) -> dict[str, prompts.HistoryItem]:
    """item_id -> (title, item summary); the item's own text stands in for an empty summary."""
    items = run.read_table("dataset", "items.parquet").select(["item_id", "title", "text"])
    run.require("item_summaries", "summarize-items")
    summaries = run.read_table("item_summaries").select(["item_id", "summary"])
    described = dict(
        zip(summaries["item_id"].to_pylist(), summaries["summary"].to_pylist(), strict=True)
    )
    return {
        item: prompts.HistoryItem(title, described.get(item) or text)
        for item, title, text in zip(
            *(items[c].to_pylist() for c in items.column_names), strict=True
        )
    }


class UserSummarizer:
    """Driver side: starts the shards, runs lockstep rounds, and adds up their counts."""

    def __init__(self, config: PipelineConfig, parts_key: str):
        import ray

        cfg = config.users
        actor = ray.remote(UserShard).options(
            num_cpus=cfg.resources.num_cpus,
            num_gpus=cfg.resources.num_gpus,
            max_restarts=-1,
            max_task_retries=-1,
        )
        self.shards = [
            actor.remote(i, cfg.num_shards, config, parts_key) for i in range(cfg.num_shards)
        ]
        self.totals: Counter[str] = Counter()

    def round(self) -> int:
        """Advance every shard by one round; return how many blocks are still pending."""
        import ray

        results = ray.get([shard.step.remote() for shard in self.shards])
        for result in results:
            self.totals.update({k: v for k, v in result.items() if k != "pending"})
        return sum(r["pending"] for r in results)


@dataclass
class UserPlan:
    """The users to summarize, the (user, step) rows expected, and the users refused."""

    histories: dict[str, list[str]]
    catalog: dict[str, prompts.HistoryItem]
    expected: set[tuple[str, int]]
    errors: Counter[str]
    examples: dict[str, str]


def plan_users(config: PipelineConfig, run: RunDir) -> UserPlan:
    """Read the dataset and item summaries; check every history; list the expected rows."""
    from msr_ray.tables import read_dataset

    _, sequences = read_dataset(run)
    catalog = _catalog(run)
    histories, errors, examples = {}, Counter(), {}
    for user, history in train_histories(sequences).items():
        try:
            check_history(user, history, catalog)
        except UserInputError as exc:
            errors[exc.reason] += 1
            examples.setdefault(exc.reason, str(exc))
            continue
        histories[user] = history
    expected = {
        (user, step)
        for user, history in histories.items()
        for step in boundaries(len(history), config.users.block_size)
    }
    return UserPlan(histories, catalog, expected, errors, examples)


def persisted(run: RunDir, key: str) -> pa.Table:
    """Every persisted summary of the build ``key``, one row per (user, step)."""
    parts = run.read_parts(STAGE, key)
    if parts is None:
        return SCHEMA.empty_table()
    return dedupe(parts, ("user_id", "step"))


def _keys(table: pa.Table) -> set[tuple[str, int]]:
    return set(zip(table["user_id"].to_pylist(), table["step"].to_pylist(), strict=True))


def run(config: PipelineConfig, run: RunDir) -> dict[str, Any]:
    """Summarize every user's history at every block boundary; seal when all are done."""
    from tqdm import tqdm

    cfg = config.users
    plan = plan_users(config, run)
    key = run.parts_key(STAGE)
    done_before = len(_keys(persisted(run, key)) & plan.expected)
    start = time.perf_counter()
    summarizer = UserSummarizer(config, key)
    with tqdm(
        total=len(plan.expected), initial=done_before, desc="summarize-users", unit="block"
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
        "num_shards": cfg.num_shards,
    }
    with run.stage_output(STAGE) as out:
        out.write_table(
            table.sort_by([("user_id", "ascending"), ("step", "ascending")]), "summaries.parquet"
        )
        out.metadata.update(summary)
    return summary
