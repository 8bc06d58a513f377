"""Image references that point outside the dataset, at non-files, at huge files or at
unexpected formats are quarantined with a reason, never opened or read whole."""

import os
import signal

import pytest
from PIL import Image

from msr_ray.data.images import MAX_IMAGE_BYTES, ImageError, load_image
from msr_ray.data.readers import READERS


@pytest.fixture
def alarm():
    """Fail instead of hanging (a FIFO opened for reading blocks forever)."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading an image hung"))
    signal.alarm(20)
    yield
    signal.alarm(0)


def test_hostile_image_references_are_quarantined(tmp_path, alarm):
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(data / "img" / "ok.jpg")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "outside.jpg")
    os.symlink(tmp_path / "outside.jpg", data / "img" / "link.jpg")
    os.mkfifo(data / "img" / "fifo.jpg")
    with open(data / "img" / "huge.jpg", "wb") as f:
        f.truncate(2**30)  # 1 GiB, sparse: rejected by its size before any read
    Image.new("RGB", (8, 8), "red").save(data / "img" / "scan.jpg", format="TIFF")
    rows = {
        "ok": "img/ok.jpg",
        "parent": "../outside.jpg",
        "deep": "img/../../outside.jpg",
        "absolute": "/etc/passwd",
        "link": "img/link.jpg",
        "fifo": "img/fifo.jpg",
        "huge": "img/huge.jpg",
        "url": "s3://bucket/x.jpg",
        "tiff": "img/scan.jpg",
        "folder": "img",
    }
    lines = "".join(f"{item},Title {item},,{path}\n" for item, path in rows.items())
    (data / "items.csv").write_text("item_id,title,text,image\n" + lines)
    (data / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,ok,1\n")
    dataset = READERS["csv"](str(data))
    reasons = {r["value"]: r["reason"] for r in dataset.quarantine.rows if r["table"] == "images"}
    assert reasons == {
        "../outside.jpg": "image_outside_dataset",
        "img/../../outside.jpg": "image_outside_dataset",
        "/etc/passwd": "image_outside_dataset",
        "img/link.jpg": "image_outside_dataset",
        "img/fifo.jpg": "not_a_file",
        "img/huge.jpg": "image_too_large",
        "s3://bucket/x.jpg": "image_outside_dataset",
        "img/scan.jpg": "corrupt_image",
        "img": "not_a_file",
    }
    items = {r["item_id"]: r for r in dataset.items.to_pylist()}
    assert len(items) == len(rows)  # every item is kept, without its bad image
    assert items["ok"]["image_paths"] == [str((data / "img" / "ok.jpg").resolve())]
    assert all(not items[i]["image_paths"] for i in rows if i != "ok")


def test_oversized_image_bytes_are_refused_before_decoding():
    with pytest.raises(ImageError) as err:
        load_image(b"\xff\xd8" + b"\0" * MAX_IMAGE_BYTES, 64)
    assert err.value.reason == "image_too_large"
