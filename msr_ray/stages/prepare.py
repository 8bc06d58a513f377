"""Stage `prepare`: read a source, preprocess, and write the run's ``dataset/`` tables.

Output: ``dataset/items.parquet`` (items left after filtering, then the items posted
online to the run), ``dataset/sequences.parquet`` (interactions in time order with
position and split), ``dataset/quarantine.parquet`` (every rejected row with its reason).
The summary accounts for every input row.

Items posted online (``POST /items``, read by ``msr_ray.run.online_items``) are read back
as the dataset's items: checked by the readers' item rules (``build_dataset``), their
image bytes as posted, appended in posting order. They have no interactions, so the
k-core never sees them and they are all kept. A posted id the source also holds is
quarantined (table ``posted_items``, reason ``id_in_source``): the source's row wins.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.config import PrepareConfig
from msr_ray.data import synthetic
from msr_ray.data.ids import normalize_id
from msr_ray.data.preprocess import preprocess
from msr_ray.data.readers import READERS, RawDataset
from msr_ray.data.readers.common import build_dataset
from msr_ray.data.readers.generic import read_generic
from msr_ray.data.schemas import DataError
from msr_ray.run.online_items import read_posted
from msr_ray.run.provenance import BuildContext
from msr_ray.run.registry import DATASET_OUTPUT

# The quarantine's table of posted items that were not added.
POSTED_ITEMS = "posted_items"


def load_source(cfg: PrepareConfig) -> RawDataset:
    """Read the configured source into items, interactions and quarantine."""
    if cfg.source == "synthetic":
        return synthetic.generate(cfg.synthetic, cfg.max_image_side)
    if not cfg.path:
        raise DataError(f"source '{cfg.source}'", "needs a path (--path or prepare.path)")
    if cfg.source in ("csv", "parquet"):
        return read_generic(cfg.path, cfg.max_image_side, cfg.columns, cfg.text_columns)
    if cfg.columns or cfg.text_columns:
        raise DataError(
            f"source '{cfg.source}'",
            "prepare.columns and prepare.text_columns apply to csv and parquet sources only",
        )
    return READERS[cfg.source](cfg.path, cfg.max_image_side)


def posted_items(
    records: list[dict[str, Any]], raw: RawDataset, max_image_side: int
) -> tuple[pa.Table, int]:
    """The posted ``records`` as rows of the items table, and how many have no image.

    One whose id the source holds (a valid source item, kept by the k-core or not) is
    quarantined as ``id_in_source``; the others are checked as a source item is (a bad
    image is left out of its item, which is kept). Rejected items go to ``raw.quarantine``
    under table ``posted_items``, their images under ``images``, named by their record."""
    source_ids = set(raw.items["item_id"].to_pylist())
    rows = []
    for record in records:
        file, item_id = record["stored_at"], record["item_id"]
        if normalize_id(item_id) in source_ids:
            raw.quarantine.add(POSTED_ITEMS, file, 1, "item_id", "id_in_source", item_id)
            continue
        fields = {k: record[k] for k in ("item_id", "title", "text")}
        rows.append((file, 1, {**fields, "images": record["image_bytes"]}))
    posted = build_dataset(rows, [], "", max_image_side)
    for row in posted.quarantine.rows:
        table = POSTED_ITEMS if row["table"] == "items" else row["table"]
        raw.quarantine.add(
            table, row["file"], row["row"], row["column"], row["reason"], row["value"]
        )
    return posted.items, posted.items_without_image


def build(context: BuildContext) -> dict[str, Any]:
    """Build the dataset tables and return the prepare summary."""
    config, run = context.config, context.run
    cfg = config.prepare
    raw = load_source(cfg)
    read = raw.input_rows.get("interactions", 0)
    rejected = sum(raw.quarantine.counts("interactions").values())
    if read and rejected > read / 2:
        raise DataError(
            f"source '{cfg.source}' at {cfg.path}",
            f"{rejected} of {read} interaction rows were rejected: "
            f"{raw.quarantine.describe('interactions')}. Check prepare.columns (the "
            "source's column for user_id, item_id, timestamp) and the timestamp format "
            "(integers, ISO dates or datetimes)",
        )
    sequences, funnel = preprocess(
        raw.interactions,
        cfg.min_user_interactions,
        cfg.min_item_interactions,
        cfg.max_history,
        cfg.max_users,
        cfg.sample_seed,
    )
    if sequences.num_rows == 0:
        raise DataError(
            f"source '{cfg.source}'",
            f"no interactions left after filtering (funnel: {funnel.steps}); lower "
            "prepare.min_user_interactions / min_item_interactions or add data"
            + (
                f". Rejected interaction rows: {raw.quarantine.describe('interactions')}"
                if rejected
                else ""
            ),
        )
    source_items = raw.items.filter(pc.is_in(raw.items["item_id"], value_set=sequences["item_id"]))
    records = read_posted(run)
    posted, posted_without_image = posted_items(records, raw, cfg.max_image_side)
    items = pa.concat_tables([source_items, posted])
    splits = sequences.group_by("split").aggregate([([], "count_all")]).to_pylist()
    summary = {
        "source": cfg.source,
        "path": cfg.path,
        "input_rows": {**raw.input_rows, POSTED_ITEMS: len(records)},
        "quarantined": {
            table: raw.quarantine.counts(table)
            for table in ("items", "interactions", "images", POSTED_ITEMS)
        },
        "funnel": funnel.steps,
        "items_valid": raw.items.num_rows,
        "items_kept": items.num_rows,
        "posted_items_kept": posted.num_rows,
        "items_without_image": raw.items_without_image + posted_without_image,
        "users": pc.count_distinct(sequences["user_id"]).as_py(),
        "interactions_by_split": {row["split"]: row["count_all"] for row in splits},
    }
    with run.stage_output(DATASET_OUTPUT, fingerprint=context.fingerprint) as out:
        out.write_table(items, "items.parquet")
        out.write_table(sequences, "sequences.parquet")
        out.write_table(raw.quarantine.to_table(), "quarantine.parquet")
        out.metadata.update(summary)
    return summary
