"""The item summarizer: one MLLM request per item row (image, fused or text prompt), and the
Ray Data callable class that generates a batch of them with one result per row (a summary,
a text-only fallback, or an error) in the ``item_summaries`` schema (no Ray)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from msr_ray.config import ItemsConfig, ModelSpec
from msr_ray.data.images import ImageError, item_image
from msr_ray.data.schemas import ITEM_SUMMARIES
from msr_ray.models import prompts
from msr_ray.models.generation import ChatRequest, Generated, generate
from msr_ray.models.loading import load_model


@dataclass
class ItemPlan:
    """What to ask the MLLM for one item: a request (or none) and the error, if any."""

    request: ChatRequest | None
    error: str | None


def plan_item(
    row: dict[str, Any], mode: str, on_error: str, domain: str, max_image_side: int
) -> ItemPlan:
    """Build the request for one item row; a bad image or text becomes an error + fallback."""
    title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
    error = None
    if mode != "text":
        try:
            image = item_image(
                row.get("image_paths") or [], row.get("image_bytes") or [], max_image_side
            )
        except ImageError as exc:
            error = f"{exc.reason}: {exc}"
        else:
            messages = (
                prompts.item_image_prompt(domain)
                if mode == "image"
                else prompts.item_fused_prompt(domain, title, text)
            )
            return ItemPlan(ChatRequest(messages, [image]), None)
        if on_error == "skip":
            return ItemPlan(None, error)
    if not title and not text:
        return ItemPlan(None, error or "empty_text: item has neither title nor text")
    return ItemPlan(ChatRequest(prompts.item_text_prompt(domain, title, text)), error)


@dataclass(frozen=True)
class GenerationFailed:
    """A request whose generation raised, even when asked alone: the reason its row records."""

    reason: str


def outcome(error: str | None, prompt_tokens: int) -> str:
    """What happened to one item's row: ``summary`` (as asked), ``fallback`` (an error, and
    a text-only summary generated instead) or ``error`` (nothing generated)."""
    if error is None:
        return "summary"
    return "fallback" if prompt_tokens else "error"


class ItemSummarizer:
    """Ray Data callable class: loads the MLLM once per actor, summarizes a batch per call."""

    def __init__(self, spec: ModelSpec, cfg: ItemsConfig, domain: str, max_image_side: int):
        self.spec, self.cfg, self.domain, self.max_side = spec, cfg, domain, max_image_side
        self.loaded = load_model(spec, "mllm")

    def _one_by_one(self, requests: list[ChatRequest]) -> list[Generated | GenerationFailed]:
        """Each request generated alone: its answer, or why it failed."""
        results: list[Generated | GenerationFailed] = []
        for request in requests:
            try:
                results.append(generate(self.loaded, [request], self.spec)[0])
            except Exception as exc:
                reason = f"generation_failed: {type(exc).__name__}: {exc}"[:500]
                results.append(GenerationFailed(reason))
        return results

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        plans = [
            plan_item(r, self.cfg.mode, self.cfg.on_error, self.domain, self.max_side) for r in rows
        ]
        asked = [p.request for p in plans if p.request is not None]
        try:
            answers = iter(generate(self.loaded, asked, self.spec))
        except Exception:  # one bad request fails the batched call: retry them one by one
            answers = iter(self._one_by_one(asked))
        out = []
        for row, plan in zip(rows, plans, strict=True):
            answer = next(answers) if plan.request is not None else None
            error = plan.error
            if isinstance(answer, GenerationFailed):
                answer, error = None, answer.reason
            out.append(
                {
                    "item_id": row["item_id"],
                    "summary": answer.text if answer else "",
                    "error": error,
                    "model": self.spec.name,
                    "prompt_version": prompts.PROMPT_VERSION,
                    "prompt_tokens": answer.prompt_tokens if answer else 0,
                    "generated_tokens": answer.generated_tokens if answer else 0,
                }
            )
        return pa.Table.from_pylist(out, schema=ITEM_SUMMARIES)
