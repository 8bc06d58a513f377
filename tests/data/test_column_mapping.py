"""A real export with its own column names and ISO dates goes through prepare."""

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from msr_ray.cli import main
from msr_ray.run.rundir import RunDir


def _retail(folder, date_format="%Y-%m-%d"):
    """Articles and transactions shaped like a fashion retailer's export (H&M style)."""
    import datetime

    rng = random.Random(0)
    folder.mkdir()
    articles = ["article_id,prod_name,product_type_name,detail_desc"]
    for n in range(12):
        articles.append(f'{100 + n},Item {n},Trousers,"Soft, stretchy item {n}"')
    (folder / "items.csv").write_text("\n".join(articles) + "\n")
    transactions = ["t_dat,customer_id,article_id,price,sales_channel_id"]
    start = datetime.date(2020, 9, 1)
    for c in range(8):
        for k in range(8):
            day = start + datetime.timedelta(days=k)
            article = 100 + (c + k * 5) % 12
            transactions.append(f"{day.strftime(date_format)},cust{c},{article},0.05,2")
    rng.shuffle(transactions[1:])
    (folder / "interactions.csv").write_text("\n".join(transactions) + "\n")


MAPPING = [
    "--set",
    "prepare.columns={user_id: customer_id, item_id: article_id, timestamp: t_dat, title: prod_name}",
    "--set",
    "prepare.text_columns=[product_type_name, detail_desc]",
    "--set",
    "prepare.min_item_interactions=2",
]


def _prepare(source, run_dir) -> list[str]:
    """`msr-ray prepare` arguments for a CSV source folder."""
    return ["prepare", "--source", "csv", "--path", str(source), "--run-dir", str(run_dir)]


def test_a_retail_export_prepares_with_column_mapping_and_iso_dates(tmp_path):
    _retail(tmp_path / "retail")
    run_dir = tmp_path / "run"
    args = _prepare(tmp_path / "retail", run_dir)
    result = CliRunner().invoke(main, [*args, *MAPPING])
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summaries" / "dataset.json").read_text())
    assert summary["users"] == 8 and summary["quarantined"]["interactions"] == {}
    run = RunDir(str(run_dir))
    items = {r["item_id"]: r for r in run.read_table("dataset", "items.parquet").to_pylist()}
    assert items["100"]["title"] == "Item 0"
    assert items["100"]["text"] == "Trousers. Soft, stretchy item 0"
    sequences = run.read_table("dataset", "sequences.parquet").to_pylist()
    first = min((r for r in sequences if r["user_id"] == "cust0"), key=lambda r: r["position"])
    assert first["timestamp"] == 1598918400  # 2020-09-01 as epoch seconds
    assert first["item_id"] == "100"


def test_unmapped_columns_name_the_real_cause(tmp_path):
    _retail(tmp_path / "retail")
    args = _prepare(tmp_path / "retail", tmp_path / "run")
    missing = CliRunner().invoke(main, args)
    assert (
        missing.exit_code == 1
        and "missing column" in missing.output
        and "item_id" in missing.output
    )
    bad_dates = tmp_path / "bad"
    _retail(bad_dates, date_format="%d/%m/%Y")
    result = CliRunner().invoke(main, [*_prepare(bad_dates, tmp_path / "run"), *MAPPING])
    assert result.exit_code == 1
    assert "64 of 64 interaction rows were rejected: bad_timestamp x64" in result.output
    assert "column 'timestamp': '01/09/2020'" in result.output
    assert "timestamp format" in result.output


def test_parquet_timestamp_columns_and_mapping(tmp_path):
    import datetime

    pq.write_table(pa.table({"sku": ["a", "b"], "name": ["A", "B"]}), tmp_path / "items.parquet")
    when = [datetime.datetime(2021, 1, 1, 12), datetime.datetime(2021, 1, 2, 12)]
    pq.write_table(
        pa.table(
            {"buyer": ["u", "u"], "sku": ["a", "b"], "at": pa.array(when, pa.timestamp("ms"))}
        ),
        tmp_path / "interactions.parquet",
    )
    from msr_ray.data.readers.generic import read_generic

    dataset = read_generic(
        str(tmp_path),
        columns={"user_id": "buyer", "item_id": "sku", "timestamp": "at", "title": "name"},
    )
    assert dataset.interactions["timestamp"].to_pylist() == [1609502400, 1609588800]
    with pytest.raises(Exception, match="missing column"):
        read_generic(str(tmp_path))
