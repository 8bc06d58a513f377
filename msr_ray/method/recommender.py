"""The recommender: its prompts, loading with the adapter merged, and scoring.

Train validation, `evaluate` and serving all score through ``Recommender``, so the three
see the same prompt, the same tokens and the same P(yes). Candidate rows (what
``run.method_inputs.candidate_rows`` reads from a run, or serving builds from a request)
hold the user's preference ``summary``, the candidate's ``title``, ``image_paths`` /
``image_bytes``, and optionally ``description`` and ``recent``. Rows of one user share the
prompt's prefix, which ``score`` computes once per distinct prefix and reuses for every
candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from msr_ray.config import PipelineConfig, RecommenderConfig
from msr_ray.data.images import ImageError, item_image
from msr_ray.models import prompts
from msr_ray.models.loading import BUILT_IN_NAMES, LoadedModel, load_model
from msr_ray.models.scoring import SplitPrompt, score_shared, split_prompt


def shows_candidate_image(config: PipelineConfig) -> bool:
    """Whether candidates are shown with their image (``recommender.candidate_image``):
    ``auto`` shows them unless the MLLM is a built-in one, whose vision tower has no
    pretrained weights."""
    # NOTE: the paper always shows the candidate's image; the built-in vision towers are
    # random, and their image tokens only added noise to the recommender (0.590 against
    # 0.632 untrained, docs/method.md).
    setting = config.recommender.candidate_image
    if setting == "auto":
        return config.mllm.name not in BUILT_IN_NAMES
    return setting == "on"


def with_image_setting_resolved(config: PipelineConfig) -> PipelineConfig:
    """``config`` with ``recommender.candidate_image: auto`` replaced by what it means for
    this MLLM: the train stage saves this beside the adapter, so that evaluate, serving
    and an export loaded from another path see the prompt the model was trained on."""
    shown = "on" if shows_candidate_image(config) else "off"
    return config.model_copy(
        update={"recommender": config.recommender.model_copy(update={"candidate_image": shown})}
    )


def candidate_prompt(
    loaded: LoadedModel,
    row: dict[str, Any],
    settings: RecommenderConfig,
    domain: str,
    with_image: bool = True,
) -> SplitPrompt:
    """The split prompt of one candidate row (text-only without ``with_image`` or when its
    image is unusable)."""
    description = row.get("description") if settings.candidate_description else None
    if description:
        description = prompts.first_words(description, settings.description_words)
    recent = row.get("recent") or () if settings.recent_items else ()
    messages = prompts.recommend_prompt(
        domain, row["summary"], row["title"] or "", description, settings.prompt_order, recent
    )
    if not with_image:
        return split_prompt(loaded, prompts.strip_images(messages), [])
    try:
        image = item_image(
            row["image_paths"] or [], row["image_bytes"] or [], settings.max_image_side
        )
    except ImageError:
        return split_prompt(loaded, prompts.strip_images(messages), [])
    return split_prompt(loaded, messages, [image])


class Recommender:
    """A loaded recommender MLLM and the prompt settings it was trained with."""

    def __init__(self, loaded: LoadedModel, config: PipelineConfig):
        self.loaded = loaded
        self.settings = config.recommender
        self.domain = config.domain
        self.with_image = shows_candidate_image(config)

    @classmethod
    def load(cls, config: PipelineConfig, adapter: str | None) -> Recommender:
        """The base MLLM with the LoRA adapter at ``adapter`` merged in (None: the base)."""
        loaded = load_model(config.mllm, "mllm")
        if adapter:
            from peft import PeftModel

            loaded.model = PeftModel.from_pretrained(loaded.model, adapter).merge_and_unload()
            loaded.model.eval()
        return cls(loaded, config)

    def prompts(self, rows: Sequence[dict[str, Any]]) -> list[SplitPrompt]:
        """The split prompt of every candidate row."""
        return [
            candidate_prompt(self.loaded, r, self.settings, self.domain, self.with_image)
            for r in rows
        ]

    def score(self, rows: Sequence[dict[str, Any]]) -> list[float]:
        """P(yes) of every candidate row, in row order.

        Rows are grouped by their prefix (one user's summary) and scored in batches of
        up to ``batch_size`` candidates of one group; each batch computes the group's
        prefix once (so once per user for candidate lists up to ``batch_size``).
        """
        split = self.prompts(rows)
        groups: dict[str, list[int]] = {}
        for n, prompt in enumerate(split):
            groups.setdefault(prompt.prefix, []).append(n)
        scores = [0.0] * len(split)
        size = self.settings.batch_size
        for members in groups.values():
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                for n, score in zip(
                    chunk, score_shared(self.loaded, [split[n] for n in chunk]), strict=True
                ):
                    scores[n] = score
        return scores
