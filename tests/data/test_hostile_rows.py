"""Hostile row values are quarantined with a reason or read correctly; none crashes prepare."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from msr_ray.data.readers import READERS
from msr_ray.data.readers.common import parse_timestamp


def _reasons(dataset, table):
    return sorted(r["reason"] for r in dataset.quarantine.rows if r["table"] == table)


def test_timestamps_that_are_not_int64_numbers_are_quarantined(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title\na,Alpha\n")
    bad = ["²", "٣", "1" + "0" * 23, "1e300", "Infinity", "-1", "1.5", "", "0x10"]
    lines = "".join(f"u1,a,{value}\n" for value in bad)
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp\n" + lines + "u1,a,9223372036854775807\nu1,a,7\n"
    )
    dataset = READERS["csv"](str(tmp_path))
    assert _reasons(dataset, "interactions") == ["bad_timestamp"] * len(bad)
    assert sorted(dataset.interactions["timestamp"].to_pylist()) == [7, 2**63 - 1]
    for value in (float("inf"), float("nan"), 1e300, 2.0**63, True, -3):
        assert parse_timestamp(value) is None
    assert parse_timestamp(12.0) == 12 and parse_timestamp(2**63 - 1) == 2**63 - 1


def test_a_parquet_id_zero_is_an_id(tmp_path):
    pq.write_table(
        pa.table({"item_id": [0, 1], "title": ["Zero", "One"]}), tmp_path / "items.parquet"
    )
    pq.write_table(
        pa.table({"user_id": [0, 0], "item_id": [0, 1], "timestamp": [1.0, float("inf")]}),
        tmp_path / "interactions.parquet",
    )
    dataset = READERS["parquet"](str(tmp_path))
    assert sorted(dataset.items["item_id"].to_pylist()) == ["0", "1"]
    assert dataset.interactions.to_pylist() == [{"user_id": "0", "item_id": "0", "timestamp": 1}]
    assert _reasons(dataset, "interactions") == ["bad_timestamp"]


def test_a_broken_csv_row_never_swallows_the_rows_after_it(tmp_path):
    huge = "x" * 1_000_000
    (tmp_path / "items.csv").write_text(
        "item_id,title\n"
        'a,"Alpha, quoted"\n'
        f"b,{huge}\n"
        "c,Gamma\n"
        'd,"never closed\n'
        "e,Epsilon\n"
        'f,"multi\nline"\n'
        "g,Gee\n"
    )
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,a,1\n")
    dataset = READERS["csv"](str(tmp_path))
    items = dataset.items.to_pylist()
    titles = {r["item_id"]: r["title"] for r in items}
    assert titles == {
        "a": "Alpha, quoted",
        "c": "Gamma",
        "e": "Epsilon",
        "f": "multi\nline",
        "g": "Gee",
    }
    bad = {r["row"]: r["reason"] for r in dataset.quarantine.rows if r["table"] == "items"}
    assert bad == {3: "malformed_row", 5: "malformed_row"}


def test_a_csv_with_a_byte_order_mark_reads(tmp_path):
    (tmp_path / "items.csv").write_bytes("\ufeffitem_id,title\na,Alpha\n".encode())
    (tmp_path / "interactions.csv").write_bytes("\ufeffuser_id,item_id,timestamp\nu,a,1\n".encode())
    dataset = READERS["csv"](str(tmp_path))
    assert dataset.items["item_id"].to_pylist() == ["a"]
    assert dataset.interactions.num_rows == 1


def test_deeply_nested_json_is_quarantined(tmp_path):
    meta = {"parent_asin": "B1", "title": "Bottle", "features": [], "description": []}
    (tmp_path / "meta_Baby.jsonl").write_text(json.dumps(meta) + "\n")
    deep = "[" * 100_000 + "]" * 100_000
    review = {"user_id": "U1", "parent_asin": "B1", "timestamp": 1600000000000, "rating": 5}
    (tmp_path / "Baby.jsonl").write_text(deep + "\n" + json.dumps(review) + "\n")
    dataset = READERS["amazon"](str(tmp_path))
    assert dataset.interactions.num_rows == 1
    assert _reasons(dataset, "interactions") == ["bad_json"]


UGLY_BUT_VALID = ["a b?c#d%2F&+'\"<x>", "ünï ☃ 🎬", "é", "-1", "1e3"]
BAD_IDS = ["a/b", "..", ".", "../../etc", "a\\b", "u\u200b1", "x\u202eevil", "tab\there", "x" * 300]


def test_ids_are_normalised_and_ugly_ones_quarantined_as_bad_id(tmp_path):
    ids = UGLY_BUT_VALID + BAD_IDS
    items = [{"item_id": f"i{n}", "title": f"T{n}"} for n in range(3)]
    items += [{"item_id": "x/y", "title": "slashed"}]
    pq.write_table(pa.Table.from_pylist(items), tmp_path / "items.parquet")
    rows = [{"user_id": u, "item_id": "i0", "timestamp": 1} for u in ids]
    rows += [{"user_id": "e\u0301", "item_id": "i1", "timestamp": 2}]  # é, decomposed
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "interactions.parquet")
    dataset = READERS["parquet"](str(tmp_path))
    assert sorted(set(dataset.interactions["user_id"].to_pylist())) == sorted(UGLY_BUT_VALID)
    users = dataset.interactions["user_id"].to_pylist()
    assert users.count("é") == 2  # one user: NFC makes both spellings the same id
    bad = [r for r in dataset.quarantine.rows if r["reason"] == "bad_id"]
    assert len(bad) == len(BAD_IDS) + 1 and dataset.items.num_rows == 3
    shown = {r["value"] for r in bad}
    assert (
        "'u\\u200b1': holds U+200B (Cf)" in shown and "'a/b': holds the path character '/'" in shown
    )
