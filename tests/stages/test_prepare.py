"""`prepare` reads the items posted online to the run back as the dataset's items (no Ray)."""

import pyarrow as pa
import pytest

from msr_ray.method import item_summaries
from msr_ray.run import provenance
from msr_ray.run.online_items import posted_digest
from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import RunDir
from msr_ray.serving.items import ItemStore, NewItem
from msr_ray.serving.requests import RequestError
from tests.stages.conftest import tiny_config


class _Summarizer:
    """Stands in for the MLLM's ``ItemSummarizer``: the store's writes are the real ones."""

    def __init__(self, *args):
        pass

    def __call__(self, batch: pa.Table) -> pa.Table:
        titles = batch["title"].to_pylist()
        return pa.table(
            {
                "summary": [f"about {t}" for t in titles],
                "error": pa.nulls(len(titles), pa.string()),
                "model": ["m"] * len(titles),
                "prompt_version": ["p"] * len(titles),
            }
        )


def _source(folder) -> None:
    """8 items, each read by 4 users (7 interactions a user)."""
    folder.mkdir()
    items = "".join(f"i{n},Title {n},Text {n}\n" for n in range(8))
    (folder / "items.csv").write_text("item_id,title,text\n" + items)
    lines = "".join(f"u{u},i{(u + k) % 8},{k}\n" for u in range(4) for k in range(7))
    (folder / "interactions.csv").write_text("user_id,item_id,timestamp\n" + lines)


def test_a_rebuild_reads_the_posted_items_back_and_the_source_wins(tmp_path, png, monkeypatch):
    monkeypatch.setattr(item_summaries, "ItemSummarizer", _Summarizer)
    source = tmp_path / "data"
    _source(source)
    config = tiny_config(
        tmp_path / "run",
        "prepare.source=csv",
        f"prepare.path={source}",
        "prepare.min_user_interactions=3",
        "prepare.min_item_interactions=2",  # posted items have no interactions at all
    )
    run = RunDir(config.run_dir)
    first = run_stage("prepare", config)
    assert first["items_kept"] == 8 and first["input_rows"]["posted_items"] == 0
    assert posted_digest(run) is None
    before = provenance.fingerprint("dataset", config, run)

    store = ItemStore(run, config)
    red = store.post(NewItem("new-red", "A red clip", "Red and small.", png, "png"))
    store.post(NewItem("new-plain", "A plain clip", "No picture."))
    after_two = provenance.fingerprint("dataset", config, run)
    assert after_two != before
    assert provenance.state("dataset", config, run) == "stale"  # `msr-ray status` says so
    later = store.post(NewItem("new-later", "Posted title", "Posted text."))
    assert provenance.fingerprint("dataset", config, run) not in (before, after_two)

    # The source now holds new-later too, with interactions of its own.
    with open(source / "items.csv", "a") as f:
        f.write("new-later,Source title,Source text\n")
    with open(source / "interactions.csv", "a") as f:
        f.write("".join(f"u{u},new-later,{10 + u}\n" for u in range(3)))

    rebuilt = run_stage("prepare", config)
    assert rebuilt["skipped"] is False
    assert provenance.state("dataset", config, run) == "current"
    items = {r["item_id"]: r for r in run.read_table("dataset", "items.parquet").to_pylist()}
    assert list(items)[-2:] == ["new-red", "new-plain"]  # after the source's, in posting order
    assert {k: items["new-red"][k] for k in ("title", "text", "image_paths", "image_bytes")} == {
        "title": "A red clip",
        "text": "Red and small.",
        "image_paths": [],
        "image_bytes": [png],
    }
    assert (items["new-plain"]["text"], items["new-plain"]["image_bytes"]) == ("No picture.", [])
    assert (items["new-later"]["title"], items["new-later"]["text"]) == (
        "Source title",
        "Source text",
    )
    sequences = run.read_table("dataset", "sequences.parquet")["item_id"].to_pylist()
    assert "new-red" not in sequences and "new-plain" not in sequences

    # Every posted record is accounted for: two added, one quarantined.
    assert rebuilt["input_rows"] == {"items": 9, "interactions": 31, "posted_items": 3}
    assert rebuilt["posted_items_kept"] == 2 and rebuilt["items_kept"] == 9 + 2
    assert rebuilt["items_valid"] == 9
    assert rebuilt["quarantined"]["posted_items"] == {"id_in_source": 1}
    assert rebuilt["items_without_image"] == 9 + 1  # the source's, and new-plain
    quarantine = run.read_table("dataset", "quarantine.parquet").to_pylist()
    assert quarantine == [
        {
            "table": "posted_items",
            "file": later["stored_at"],
            "row": 1,
            "column": "item_id",
            "reason": "id_in_source",
            "value": "new-later",
        }
    ]
    assert red["stored_at"].endswith("online_items/items/00000000.json")

    # A restarted store sees the rebuilt items as the run's: no second post of either.
    restarted = ItemStore(RunDir(run.root), config)
    assert {"new-red", "new-plain"} <= restarted.dataset_ids
    with pytest.raises(RequestError, match="already exists"):
        restarted.post(NewItem("new-plain", "Again", ""))
