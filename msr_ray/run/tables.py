"""Readers and builders of inter-stage tables that more than one stage or tool uses."""

from __future__ import annotations

import pyarrow as pa

from msr_ray.data.schemas import ITEMS, SCORES, SEQUENCES, validate_table
from msr_ray.run.registry import DATASET_OUTPUT
from msr_ray.run.rundir import RunDir


def read_dataset(run: RunDir) -> tuple[pa.Table, pa.Table]:
    """The run's prepared items and sequences, checked against their schemas."""
    run.require(DATASET_OUTPUT)
    items = run.read_table(DATASET_OUTPUT, "items.parquet")
    sequences = run.read_table(DATASET_OUTPUT, "sequences.parquet")
    validate_table(items, ITEMS, run.output_path(DATASET_OUTPUT, "items.parquet"))
    validate_table(sequences, SEQUENCES, run.output_path(DATASET_OUTPUT, "sequences.parquet"))
    return items, sequences


def scores_table(rows: list[dict], scores: list[float], model: str) -> pa.Table:
    """The scores layout every model writes: candidate columns, its score, the model name."""
    keys = ("split", "user_id", "item_id", "label", "group")
    return pa.Table.from_pylist(
        [
            {**{k: r[k] for k in keys}, "score": s, "model": model}
            for r, s in zip(rows, scores, strict=True)
        ],
        schema=SCORES,
    )
