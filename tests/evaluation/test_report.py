import json
from html.parser import HTMLParser
from pathlib import Path

from msr_ray.config import load_config
from msr_ray.evaluation.baselines.runner import run_baseline
from msr_ray.evaluation.report import build_report
from tests.evaluation.test_baselines import _cyclic_run


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])


def test_report_has_every_section_with_existing_images(tmp_path):
    run = _cyclic_run(tmp_path)
    config = load_config(
        None, [f"run_dir={tmp_path}", "baselines.epochs=2", "evaluate.bootstrap_samples=20"]
    )
    for model in ("pop", "gru4rec"):
        run_baseline(config, run, model)
    (tmp_path / "train_logs").mkdir()
    (tmp_path / "train_logs" / "epoch-000-rank-0.jsonl").write_text(
        "".join(json.dumps({"rank": 0, "loss": 1.0 / (s + 1)}) + "\n" for s in range(5))
    )
    result = build_report(run, max_users=3)
    page_path = Path(result["path"])
    assert page_path.parent.parent == tmp_path / "report"  # report/<version>/index.html
    assert result["sections"] == ["dataset", "metrics", "training", "users"]
    page = _Page()
    page.feed(page_path.read_text())
    assert page.sections == ["dataset", "metrics", "training", "users"]
    assert "img/metrics-test.png" in page.images and "img/loss.png" in page.images
    for src in page.images:
        assert (page_path.parent / src).stat().st_size > 0
    text = page_path.read_text()
    assert "popularity" in text and "gru4rec" in text and "user u0" in text


def test_report_of_a_bare_run_has_only_what_exists(tmp_path):
    from msr_ray.run.rundir import RunDir

    assert build_report(RunDir(str(tmp_path)))["sections"] == []


def test_report_of_a_synthetic_run_shows_what_each_stage_kept(tmp_path):
    import pyarrow as pa

    from msr_ray.data.schemas import ITEM_SUMMARIES
    from msr_ray.data.synthetic import make_items
    from msr_ray.run.pipeline import run_stage
    from msr_ray.run.rundir import RunDir

    config = load_config(
        None,
        [
            f"run_dir={tmp_path / 'run'}",
            "prepare.synthetic.num_users=10",
            "prepare.synthetic.num_items=32",
            "prepare.min_item_interactions=1",
        ],
    )
    run_stage("prepare", config)
    run = RunDir(config.run_dir)
    genre = {it.item_id: it.genre for it in make_items(config.prepare.synthetic)}
    items = run.read_table("dataset", "items.parquet")["item_id"].to_pylist()
    rows = [
        {
            "item_id": i,
            "summary": f"A {genre[i]} video.",
            "error": None,
            "model": "m",
            "prompt_version": "p",
            "prompt_tokens": 0,
            "generated_tokens": 0,
        }
        for i in items
    ]
    with run.stage_output("item_summaries") as out:
        out.write_table(pa.Table.from_pylist(rows, schema=ITEM_SUMMARIES))
    result = build_report(run)
    assert result["sections"] == ["dataset", "signal"]
    text = Path(result["path"]).read_text()
    assert "Signal survival" in text and "<td>100%</td>" in text


def test_every_chart_gives_a_model_its_colour_and_the_valid_split_says_who_is_missing(
    tmp_path, monkeypatch
):
    from matplotlib.axes import Axes

    from msr_ray.evaluation.report import _metrics_section
    from msr_ray.run.rundir import RunDir

    metric = {"mean": 0.6, "ci_low": 0.5, "ci_high": 0.7}
    both = {split: {"auc": metric, "groups": 4} for split in ("test", "valid")}
    results = {"mllm-msr": {"test": both["test"]}, "popularity": both, "gru4rec": both}
    drawn: list[tuple[str, tuple]] = []
    real_bar = Axes.bar

    def bar(self, *args, label=None, color=None, **kwargs):
        drawn.append((label, tuple(color)))
        return real_bar(self, *args, label=label, color=color, **kwargs)

    monkeypatch.setattr(Axes, "bar", bar)
    with RunDir(str(tmp_path)).stage_output("report") as out:
        page = _metrics_section(out, results)
    colours = dict(drawn)
    assert len(drawn) == 5 and len(set(colours.values())) == 3  # 3 bars test, 2 valid
    assert all(colours[label] == colour for label, colour in drawn)
    valid = page.split("<h3>valid", 1)[1]
    assert "Not scored on the valid split: mllm-msr." in valid
    assert "Not scored" not in page.split("<h3>valid", 1)[0]
