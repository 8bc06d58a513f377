"""What the method's stages read from a run directory: the recommender's candidate rows,
the item texts the summarizers and prompts show, and the trained adapter with its config.

The method itself (``msr_ray.method``) takes these as plain values and never opens a run.
A candidate row holds the user's preference ``summary``, the candidate's ``title``,
``image_paths`` / ``image_bytes``, when ``recommender.candidate_description`` is on its
item summary as ``description``, and when ``recommender.recent_items`` > 0 the user's most
recent items before the target as ``recent`` (lines of ``prompts.recent_item_line``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.config import PipelineConfig, RecommenderConfig, parse_config
from msr_ray.data.histories import user_sequences
from msr_ray.models import prompts
from msr_ray.run.registry import (
    DATASET_OUTPUT,
    EVAL_OUTPUT,
    ITEM_SUMMARIES_OUTPUT,
    SAMPLES_OUTPUT,
    TRAIN_OUTPUT,
)
from msr_ray.run.rundir import RunDir

ADAPTER = "adapter"
# The config a trained adapter was trained with, saved next to it in ``train/``.
CONFIG_FILE = "config.yaml"
ITEM_COLUMNS = ["item_id", "title", "image_paths", "image_bytes"]


def item_descriptions(run: RunDir) -> dict[str, str]:
    """Each item's summary (from summarize-items), shown as the candidate's description
    and beside the recent items."""
    run.require(ITEM_SUMMARIES_OUTPUT)
    table = run.read_table(ITEM_SUMMARIES_OUTPUT)
    return dict(zip(table["item_id"].to_pylist(), table["summary"].to_pylist(), strict=True))


def history_catalog(run: RunDir) -> dict[str, prompts.HistoryItem]:
    """item_id -> (title, item summary, text) for the preference summarizer; the item's
    own text stands in for an empty summary."""
    items = run.read_table(DATASET_OUTPUT, "items.parquet", columns=["item_id", "title", "text"])
    described = item_descriptions(run)
    return {
        item: prompts.HistoryItem(title, described.get(item) or text, text)
        for item, title, text in zip(
            *(items[c].to_pylist() for c in items.column_names), strict=True
        )
    }


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
    samples = run.read_table(SAMPLES_OUTPUT) if samples is None else samples
    samples = samples.filter(pc.is_in(samples["split"], value_set=pa.array(list(splits))))
    items = run.read_table(DATASET_OUTPUT, "items.parquet", columns=ITEM_COLUMNS)
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


def recent_column(
    run: RunDir, settings: RecommenderConfig, samples: pa.Table, descriptions: dict[str, str]
) -> pa.Array:
    """Each sample's recent-item lines: the items before its target in the user's sequence."""
    if "position" not in samples.column_names:
        raise RuntimeError(
            "recommender.recent_items needs the samples' target positions, which this run's "
            "samples predate: rebuild them (msr-ray build-samples --force)"
        )
    sequences = user_sequences(run.read_table(DATASET_OUTPUT, "sequences.parquet"))
    items = run.read_table(DATASET_OUTPUT, "items.parquet", columns=["item_id", "title"])
    titles = dict(zip(items["item_id"].to_pylist(), items["title"].to_pylist(), strict=True))
    lines = [
        prompts.recent_item_lines(
            [item for item, _ in sequences[user][:position]],
            titles,
            descriptions,
            settings.recent_items,
            settings.recent_words,
        )
        for user, position in zip(
            samples["user_id"].to_pylist(), samples["position"].to_pylist(), strict=True
        )
    ]
    return pa.array(lines, pa.list_(pa.string()))


def trained_config(run: RunDir, overrides: Sequence[str] = ()) -> PipelineConfig:
    """The config the run's adapter was trained with (``overrides`` applied on top)."""
    run.require(TRAIN_OUTPUT)
    return parse_config(
        run.read_text(TRAIN_OUTPUT, CONFIG_FILE),
        run.output_path(TRAIN_OUTPUT, CONFIG_FILE),
        list(overrides),
    )


def adapter_dir(run: RunDir) -> str:
    """Local path of the trained adapter (runs on remote filesystems are copied locally)."""
    run.require(TRAIN_OUTPUT)
    if run.local:
        return run.output_path(TRAIN_OUTPUT, ADAPTER)
    return run.copy_dir(TRAIN_OUTPUT, ADAPTER, to=tempfile.mkdtemp(prefix="msr-ray-adapter-"))


def export_sources(run: RunDir) -> dict[str, Any]:
    """What an export records it was built from: the train stage's completion record, the
    dataset's (empty when absent) and the evaluate metrics (empty when not evaluated)."""
    return {
        "train": run.completion(TRAIN_OUTPUT),
        "dataset": run.completion(DATASET_OUTPUT) if run.is_complete(DATASET_OUTPUT) else {},
        "metrics": (
            run.read_json(EVAL_OUTPUT, "metrics.json") if run.is_complete(EVAL_OUTPUT) else {}
        ),
    }
