"""The recurrent preference step, shared by `summarize-users` and online profile updates.

A user's summary at boundary s covers history items [p, s) and carries forward the
summary at p (see ``data/histories.py``). ``PreferenceSummarizer`` turns (user, state,
step) work into summary rows with one batched generate call; the batch stage and the
served profile store both call it, so an online update equals a recomputation.
No Ray here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from msr_ray.config import PipelineConfig
from msr_ray.data.histories import block_start, boundaries, next_boundary
from msr_ray.models import prompts


class UserInputError(ValueError):
    """A user whose history cannot be summarized (empty, or naming an unknown item)."""

    def __init__(self, user_id: str, reason: str, message: str):
        super().__init__(f"user {user_id}: {message}")
        self.user_id, self.reason = user_id, reason


@dataclass
class UserState:
    """What is known of one user: the history, the summary at each step done, and the
    first item the summaries read (``users.history_window``)."""

    history: list[str]
    summaries: dict[int, str] = field(default_factory=dict)
    first: int = 0

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


class PreferenceSummarizer:
    """The LLM and prompts of `summarize-users`: which steps are ready, and their summaries."""

    def __init__(self, config: PipelineConfig, catalog: dict[str, prompts.HistoryItem]):
        from msr_ray.models.loading import load_model

        self.spec, self.cfg, self.domain = config.llm, config.users, config.domain
        self.catalog = catalog
        self.loaded = load_model(self.spec, "llm")

    def ready_steps(self, state: UserState) -> list[int]:
        """Steps that can be summarized now.

        Recurrent: the next boundary, once the summary it continues exists. Direct: every
        boundary not done, since each one reads the whole prefix and nothing before it.
        """
        if self.cfg.mode == "direct":
            done = state.summaries
            steps = boundaries(len(state.history), self.cfg.block_size, state.first)
            return [s for s in steps if s not in done]
        step = next_boundary(len(state.history), self.cfg.block_size, state.summaries, state.first)
        return [] if step is None else [step]

    def request(self, user: str, state: UserState, step: int):
        """The chat request that writes ``user``'s summary at ``step``."""
        from msr_ray.models.generation import ChatRequest

        if self.cfg.mode == "direct":
            prefix = [self.catalog[item] for item in state.history[state.first : step]]
            return ChatRequest(
                prompts.user_direct_prompt(
                    self.domain, user, prefix, self.cfg.prompt, self.cfg.item_words
                )
            )
        start = block_start(step, self.cfg.block_size, state.first)
        block = [self.catalog[item] for item in state.history[start:step]]
        previous = state.summaries.get(start) if start > state.first else None
        messages = prompts.user_block_prompt(
            self.domain,
            user,
            block,
            previous,
            start - state.first + 1,
            self.cfg.prompt,
            self.cfg.item_words,
        )
        return ChatRequest(messages)

    def summarize(self, work: list[tuple[str, UserState, int]]) -> list[dict[str, Any]]:
        """One batched generate call: a ``USER_SUMMARIES`` row per (user, state, step).

        The states are not changed: callers persist the rows first, then ``apply`` them.
        """
        from msr_ray.models.generation import generate

        answers = generate(
            self.loaded, [self.request(u, state, s) for u, state, s in work], self.spec
        )
        return [
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
            for (user, _, step), answer in zip(work, answers, strict=True)
        ]


def apply(states: dict[str, UserState], rows: list[dict[str, Any]]) -> None:
    """Record persisted summary rows in the users' states."""
    for row in rows:
        states[row["user_id"]].summaries[row["step"]] = row["summary"]
