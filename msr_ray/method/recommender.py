"""The recommender: its candidate rows, prompts, loading with the adapter merged, and scoring.

Train validation, `evaluate` and serving all score through ``Recommender``, so the three
see the same prompt, the same tokens and the same P(yes). A candidate row holds the
user's preference ``summary``, the candidate's ``title``, ``image_paths`` /
``image_bytes``, when ``recommender.candidate_description`` is on its item summary as
``description``, and when ``recommender.recent_items`` > 0 the user's most recent items
before the target as ``recent`` (lines of ``prompts.recent_item_line``). Rows of one
user share the prompt's prefix, which ``score`` computes once per distinct prefix and
reuses for every candidate.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.config import PipelineConfig, RecommenderConfig, parse_config
from msr_ray.data.histories import user_sequences
from msr_ray.data.images import ImageError, item_image
from msr_ray.models import prompts
from msr_ray.models.loading import BUILT_IN_NAMES, LoadedModel, load_model
from msr_ray.models.scoring import SplitPrompt, score_shared, split_prompt
from msr_ray.run.registry import STAGES_BY_COMMAND
from msr_ray.run.rundir import RunDir

TRAIN_STAGE = STAGES_BY_COMMAND["train"].output
ADAPTER = "adapter"
# The config a trained adapter was trained with, saved next to it in ``train/``.
CONFIG_FILE = "config.yaml"
ITEM_COLUMNS = ["item_id", "title", "image_paths", "image_bytes"]


def shows_candidate_image(config: PipelineConfig) -> bool:
    """Whether candidates are shown with their image (``recommender.candidate_image``):
    ``auto`` shows them unless the MLLM is a built-in one, whose vision tower has no
    pretrained weights."""
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


def item_descriptions(run: RunDir) -> dict[str, str]:
    """Each item's summary (from summarize-items), shown as the candidate's description
    and beside the recent items."""
    run.require("item_summaries")
    table = run.read_table("item_summaries")
    return dict(zip(table["item_id"].to_pylist(), table["summary"].to_pylist(), strict=True))


def candidate_rows(
    run: RunDir,
    config: PipelineConfig,
    splits: tuple[str, ...],
    samples: pa.Table | None = None,
) -> pa.Table:
    """Samples of the given splits joined with their items (and item summaries when shown),
    and the user's recent items when the recommender shows them.

    ``samples`` replaces the run's samples table (a bench's rebuilt one).
    """
    settings = config.recommender
    samples = run.read_table("samples") if samples is None else samples
    samples = samples.filter(pc.is_in(samples["split"], value_set=pa.array(list(splits))))
    items = run.read_table("dataset", "items.parquet", columns=ITEM_COLUMNS)
    text = item_descriptions(run) if settings.reads_item_summaries else {}
    if settings.candidate_description:
        descriptions = [text.get(item) for item in items["item_id"].to_pylist()]
        items = items.append_column("description", pa.array(descriptions, pa.string()))
    if settings.recent_items:
        samples = samples.append_column("recent", recent_column(run, settings, samples, text))
    position = {item: n for n, item in enumerate(items["item_id"].to_pylist())}
    missing = [i for i in set(samples["item_id"].to_pylist()) if i not in position]
    if missing:
        raise RuntimeError(f"samples name items missing from the dataset: {missing[:5]}")
    rows = pa.array([position[i] for i in samples["item_id"].to_pylist()], pa.int64())
    joined = items.drop_columns(["item_id"]).take(rows)
    for name in joined.column_names:
        samples = samples.append_column(name, joined[name])
    return samples


def recent_lines(
    history: Sequence[str],
    titles: dict[str, str],
    descriptions: dict[str, str],
    settings: RecommenderConfig,
) -> list[str]:
    """The prompt lines of the last ``recent_items`` items of ``history`` (oldest first)."""
    last = history[max(0, len(history) - settings.recent_items) :] if settings.recent_items else []
    return [
        prompts.recent_item_line(titles.get(i) or "", descriptions.get(i), settings.recent_words)
        for i in last
    ]


def recent_column(
    run: RunDir, settings: RecommenderConfig, samples: pa.Table, descriptions: dict[str, str]
) -> pa.Array:
    """Each sample's recent-item lines: the items before its target in the user's sequence."""
    if "position" not in samples.column_names:
        raise RuntimeError(
            "recommender.recent_items needs the samples' target positions, which this run's "
            "samples predate: rebuild them (msr-ray build-samples --force)"
        )
    sequences = user_sequences(run.read_table("dataset", "sequences.parquet"))
    items = run.read_table("dataset", "items.parquet", columns=["item_id", "title"])
    titles = dict(zip(items["item_id"].to_pylist(), items["title"].to_pylist(), strict=True))
    lines = [
        recent_lines(
            [item for item, _ in sequences[user][:position]], titles, descriptions, settings
        )
        for user, position in zip(
            samples["user_id"].to_pylist(), samples["position"].to_pylist(), strict=True
        )
    ]
    return pa.array(lines, pa.list_(pa.string()))


def trained_config(run: RunDir, overrides: Sequence[str] = ()) -> PipelineConfig:
    """The config the run's adapter was trained with (``overrides`` applied on top)."""
    run.require(TRAIN_STAGE)
    return parse_config(
        run.read_text(TRAIN_STAGE, CONFIG_FILE),
        run.output_path(TRAIN_STAGE, CONFIG_FILE),
        list(overrides),
    )


def adapter_dir(run: RunDir) -> str:
    """Local path of the trained adapter (runs on remote filesystems are copied locally)."""
    run.require(TRAIN_STAGE)
    if run.local:
        return run.output_path(TRAIN_STAGE, ADAPTER)
    return run.copy_dir(TRAIN_STAGE, ADAPTER, to=tempfile.mkdtemp(prefix="msr-ray-adapter-"))
