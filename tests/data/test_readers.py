import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from msr_ray.data.readers import READERS
from msr_ray.data.schemas import INTERACTIONS, ITEMS, DataError
from tests.conftest import shared_dataset


def _jpeg(path, colour=(200, 10, 10)):
    Image.new("RGB", (20, 30), colour).save(path, format="JPEG")


def _quarantined(dataset):
    return sorted((r["table"], r["reason"]) for r in dataset.quarantine.rows)


def test_csv_reader_quarantines_every_broken_row_kind(tmp_path):
    (tmp_path / "img").mkdir()
    _jpeg(tmp_path / "img" / "a.jpg")
    _jpeg(tmp_path / "img" / "b.jpg")
    (tmp_path / "img" / "corrupt.jpg").write_bytes(b"not an image at all")
    good = io.BytesIO()
    Image.new("RGB", (40, 40), "blue").save(good, format="JPEG")
    (tmp_path / "img" / "truncated.jpg").write_bytes(good.getvalue()[:200])
    items = (
        b"item_id,title,text,image\n"
        b"a,Alpha,first,img/a.jpg|img/b.jpg\n"
        b"b,Beta,,img/missing.jpg\n"
        b"c,Gamma,third,img/corrupt.jpg\n"
        b"d,,empty title,\n"
        b",NoId,x,\n"
        b"a,Again,duplicate,\n"
        b"e,Epsilon,fine,img/truncated.jpg\n"
    ) + b"f,Bad \xff utf8,x,\n"
    (tmp_path / "items.csv").write_bytes(items)
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp\n"
        "u1,a,10\n"
        "u1,b,11\n"
        "u1,zzz,12\n"
        "u1,c,-5\n"
        "u1,c,soon\n"
        ",a,13\n"
        "u2,e,14\n"
    )
    data = READERS["csv"](str(tmp_path))
    assert data.input_rows == {"items": 8, "interactions": 7}
    assert sorted(data.items["item_id"].to_pylist()) == ["a", "b", "c", "e"]
    a = data.items.filter(pa.compute.equal(data.items["item_id"], "a")).to_pylist()[0]
    assert [p.rsplit("/", 1)[1] for p in a["image_paths"]] == ["a.jpg", "b.jpg"]
    assert data.items_without_image == 3  # b (missing), c (corrupt), e (truncated)
    assert _quarantined(data) == sorted(
        [
            ("images", "missing_image"),
            ("images", "corrupt_image"),
            ("images", "truncated_image"),
            ("items", "empty_title"),
            ("items", "missing_id"),
            ("items", "duplicate_item"),
            ("items", "invalid_utf8"),
            ("interactions", "unknown_item"),
            ("interactions", "bad_timestamp"),
            ("interactions", "bad_timestamp"),
            ("interactions", "missing_id"),
        ]
    )
    rows = {r["reason"]: r for r in data.quarantine.rows}
    assert rows["unknown_item"]["row"] == 4 and rows["unknown_item"]["column"] == "item_id"
    assert rows["empty_title"]["file"].endswith("items.csv")
    assert data.interactions.num_rows == 3
    assert data.items.schema == ITEMS and data.interactions.schema == INTERACTIONS


def test_missing_column_is_structural_error_naming_file_and_column(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,name\n1,x\n")
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\n")
    with pytest.raises(DataError) as err:
        READERS["csv"](str(tmp_path))
    assert "items.csv" in str(err.value) and "'title'" in str(err.value)


def test_parquet_reader_takes_image_bytes_and_lists(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buf, format="PNG")
    _jpeg(tmp_path / "p.jpg")
    pq.write_table(
        pa.table(
            {
                "item_id": ["x", "y", "z"],
                "title": ["X", "Y", "Z"],
                "image": pa.array([[buf.getvalue()], [b"garbage"], []], pa.list_(pa.binary())),
            }
        ),
        tmp_path / "items.parquet",
    )
    pq.write_table(
        pa.table({"user_id": ["u", "u"], "item_id": ["x", "y"], "timestamp": [1, 2]}),
        tmp_path / "interactions.parquet",
    )
    data = READERS["parquet"](str(tmp_path))
    by_id = {r["item_id"]: r for r in data.items.to_pylist()}
    assert by_id["x"]["image_bytes"] == [buf.getvalue()]
    assert by_id["y"]["image_bytes"] == []
    assert _quarantined(data) == [("images", "corrupt_image")]
    assert data.interactions.num_rows == 2


def test_movielens_original_layout(tmp_path):
    (tmp_path / "posters").mkdir()
    _jpeg(tmp_path / "posters" / "1.jpg")
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Comedy\n2::Café (2000)::Drama\n".encode("latin-1")
    )
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978300761\n2::3::4::1\n")
    data = READERS["movielens"](str(tmp_path))
    items = {r["item_id"]: r for r in data.items.to_pylist()}
    assert items["2"]["title"] == "Café (2000)"
    assert items["1"]["text"] == "Genres: Animation, Comedy."
    assert len(items["1"]["image_paths"]) == 1 and items["2"]["image_paths"] == []
    assert data.interactions.num_rows == 2
    assert _quarantined(data) == [("interactions", "unknown_item")]


def test_movielens_shared_dataset_exact_counts():
    path = shared_dataset("movielens-1m")
    data = READERS["movielens"](str(path))
    assert data.items.num_rows == 3416
    assert data.interactions.num_rows == 999_611
    assert len(set(data.interactions["user_id"].to_pylist())) == 6040
    with_poster = sum(1 for p in data.items["image_paths"].to_pylist() if p)
    assert with_poster == 3412
    assert len(data.quarantine) == 0


def test_microlens_with_and_without_covers(tmp_path):
    (tmp_path / "pairs.tsv").write_text("1\t10 11 12\n2\t12 10 99\n")
    (tmp_path / "titles.csv").write_text("item,title\n10,Ten\n11,Eleven\n12,Twelve\n")
    data = READERS["microlens"](str(tmp_path))
    assert data.items_without_image == 3
    assert data.interactions.to_pylist()[:3] == [
        {"user_id": "1", "item_id": "10", "timestamp": 0},
        {"user_id": "1", "item_id": "11", "timestamp": 1},
        {"user_id": "1", "item_id": "12", "timestamp": 2},
    ]
    assert _quarantined(data) == [("interactions", "unknown_item")]
    (tmp_path / "covers").mkdir()
    _jpeg(tmp_path / "covers" / "10.jpg")
    assert READERS["microlens"](str(tmp_path)).items_without_image == 2


def test_microlens_shared_dataset_reads():
    path = shared_dataset("microlens-50k")
    data = READERS["microlens"](str(path))
    assert data.items.num_rows == 19_220
    assert data.interactions.num_rows == 359_708
    assert data.items_without_image == 19_220


def test_amazon_jsonl(tmp_path):
    (tmp_path / "images").mkdir()
    _jpeg(tmp_path / "images" / "B1.jpg")
    meta = [
        {"parent_asin": "B1", "title": "Bottle", "features": ["BPA free"], "description": ["Nice"]},
        {"parent_asin": "B2", "title": "Rattle", "features": [], "description": []},
    ]
    reviews = [
        {"user_id": "U1", "parent_asin": "B1", "timestamp": 1600000000000, "rating": 5},
        {"user_id": "U1", "parent_asin": "B2", "timestamp": 1600000001000, "rating": 4},
        {"user_id": "U2", "parent_asin": "B9", "timestamp": 1600000002000, "rating": 1},
    ]
    (tmp_path / "meta_Baby.jsonl").write_text("\n".join(json.dumps(m) for m in meta) + "\n")
    (tmp_path / "Baby.jsonl").write_text(
        "\n".join(json.dumps(r) for r in reviews) + "\n{broken json\n"
    )
    data = READERS["amazon"](str(tmp_path))
    items = {r["item_id"]: r for r in data.items.to_pylist()}
    assert items["B1"]["text"] == "BPA free Nice"
    assert len(items["B1"]["image_paths"]) == 1 and items["B2"]["image_paths"] == []
    assert data.interactions.num_rows == 2
    assert data.input_rows == {"items": 2, "interactions": 4}
    assert _quarantined(data) == [("interactions", "bad_json"), ("interactions", "unknown_item")]
