"""Items posted online (ItemStore and its checks, no Ray): durable, summarized by the
`summarize-items` code, reloaded equal after a restart, rankable and usable in events."""

import base64
import io
import zlib

import pyarrow as pa
import pytest
from PIL import Image

from msr_ray.data import images
from msr_ray.data.images import encode_png
from msr_ray.data.schemas import ITEMS
from msr_ray.method.item_summaries import ItemSummarizer
from msr_ray.run.online_items import read_posted
from msr_ray.run.rundir import RunDir
from msr_ray.serving.catalog import ServingCatalog
from msr_ray.serving.items import (
    ItemStore,
    NewItem,
    history_item,
    newest_items,
    parse_item,
)
from msr_ray.serving.profiles import ProfileStore
from msr_ray.serving.requests import RecommendRequest, RequestError
from tests.serving.test_profiles import HISTORY, summarized


def _png(color=(200, 30, 30), size=(32, 32)) -> bytes:
    return encode_png(Image.new("RGB", size, color))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_posted_item_is_summarized_stored_reloaded_and_usable(tmp_path):
    config, run, _ = summarized(tmp_path / "served", {"u": HISTORY[:7]})
    store = ItemStore(run, config)
    item = parse_item({"item_id": "new 1", "title": "A red clip", "image_base64": _b64(_png())})
    assert (item.image_format, item.text) == ("png", "")

    record = store.post(item)
    # The summary is the one `summarize-items` gives the same row.
    stage = ItemSummarizer(config.mllm, config.items, config.domain, config.items.max_image_side)
    offline = stage(pa.Table.from_pylist([item.row()], schema=ITEMS)).to_pylist()[0]
    assert record["summary"] == offline["summary"] and record["summary"]
    assert record["error"] is None and record["model"] == config.mllm.name
    assert run.list_files("online_items", "items") == ["00000000.json"]
    assert run.read_bytes("online_items", "images", "00000000.png") == item.image
    assert record["stored_at"] == run.uri_of("online_items", "items", "00000000.json")
    text_only = store.post(NewItem("new-2", "A blue clip", "Blue things."))
    assert text_only["seq"] == 1 and text_only["image_bytes"] == []

    for taken in ("new 1", "i3"):  # posted before, or in the dataset
        with pytest.raises(RequestError, match="already exists") as conflict:
            store.post(NewItem(taken, "Again", ""))
        assert (conflict.value.status, conflict.value.reason) == (409, "item_exists")
    assert len(store.posted) == 2 and len(run.list_files("online_items", "items")) == 2

    restarted = ItemStore(RunDir(run.root), config)  # a new replica: only the run dir
    assert restarted.posted == store.posted == read_posted(run)
    with pytest.raises(RequestError, match="already exists"):
        restarted.post(NewItem("new-2", "Again", ""))
    assert restarted.since(1) == [text_only]

    catalog = ServingCatalog.from_run(RunDir(run.root), config.recommender)
    assert catalog.posted == store.posted
    request = RecommendRequest("u", ("new 1", "i9"))
    catalog.check_candidates(request)  # rankable as a candidate
    rows = catalog.candidate_rows(request, "Likes red.", [])
    assert rows[0]["image_bytes"] == [item.image] and rows[0]["description"] == record["summary"]
    described = catalog.describe("new 1")
    assert described["online"] and described["summary"] == record["summary"]
    assert described["has_image"] and catalog.describe("new-2")["text"] == "Blue things."

    profiles = ProfileStore(run, config)  # events may name a posted item
    with pytest.raises(RequestError, match="unknown item"):
        profiles.append("u", ("new 1",), None)
    profiles.add_item("new 1", history_item(record))
    assert profiles.append("u", ("new 1",), "e1")["online_items"] == ["new 1"]


def _bomb() -> bytes:
    """A valid PNG header claiming 9000 x 9000 pixels (over MAX_PIXELS), with no pixels."""
    png = _png(size=(1, 1))
    ihdr = b"IHDR" + (9000).to_bytes(4, "big") * 2 + png[24:29]
    return png[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + png[33:]


@pytest.mark.parametrize(
    "payload, status, reason",
    [
        ([], 400, "malformed"),
        ({"item_id": "a", "title": "t", "price": 3}, 400, "malformed"),
        ({"item_id": "a/b", "title": "t"}, 400, "bad_id"),
        ({"item_id": " a", "title": "t"}, 400, "bad_id"),
        ({"item_id": "a\u200bb", "title": "t"}, 400, "bad_id"),
        ({"item_id": "x" * 257, "title": "t"}, 400, "bad_id"),
        ({"item_id": 7, "title": "t"}, 400, "malformed"),
        ({"item_id": "a", "title": "  "}, 400, "empty_title"),
        ({"item_id": "a", "title": "t", "text": "w" * 1001}, 400, "too_long"),
        ({"item_id": "a", "title": "t", "image_base64": "not base64!"}, 400, "corrupt_image"),
        (
            {"item_id": "a", "title": "t", "image_base64": _b64(b"\x89PNG junk")},
            400,
            "corrupt_image",
        ),
        ({"item_id": "a", "title": "t", "image_base64": _b64(_png()[:60])}, 400, "truncated_image"),
        ({"item_id": "a", "title": "t", "image_base64": _b64(_bomb())}, 413, "image_too_large"),
    ],
)
def test_bad_items_are_refused_with_a_status_and_reason(payload, status, reason):
    with pytest.raises(RequestError) as refused:
        parse_item(payload)
    assert (refused.value.status, refused.value.reason) == (status, reason)


def test_an_image_over_the_byte_limit_is_413_before_it_is_decoded(monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 20)
    with pytest.raises(RequestError, match="bytes") as refused:
        parse_item({"item_id": "a", "title": "t", "image_base64": _b64(_png())})
    assert (refused.value.status, refused.value.reason) == (413, "image_too_large")


def test_an_image_in_another_format_is_refused():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="TIFF")
    with pytest.raises(RequestError, match="not an image in one of") as refused:
        parse_item({"item_id": "a", "title": "t", "image_base64": _b64(buffer.getvalue())})
    assert refused.value.reason == "corrupt_image"


def test_newest_items_are_newest_first_and_leave_out_the_history():
    posted = [{"item_id": f"n{k}"} for k in range(6)]
    assert newest_items(posted, 3, set()) == ["n5", "n4", "n3"]
    assert newest_items(posted, 3, {"n5", "n3"}) == ["n4", "n2", "n1"]
    assert newest_items(posted, 10, {"n0"}) == ["n5", "n4", "n3", "n2", "n1"]
    assert newest_items(posted, 0, set()) == [] and newest_items([], 5, set()) == []
