"""`msr-ray report`: one HTML page (with its PNGs) that opens offline from ``<run>/report/``.

Sections appear for whatever the run holds: dataset statistics (prepare summary), the
metrics of every scored model with 95% CIs and a bar chart, on a synthetic run the share
of the generator's latent signal each stage kept (``msr_ray.data.synthetic_signal``),
training loss curves, and user cards (history thumbnails, preference summary, top-ranked
candidates with scores).
"""

from __future__ import annotations

import html
import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from msr_ray.config import parse_config  # noqa: E402
from msr_ray.data import synthetic_signal  # noqa: E402
from msr_ray.data.histories import latest_summaries, train_histories  # noqa: E402
from msr_ray.data.images import ImageError, encode_png, item_image  # noqa: E402
from msr_ray.evaluation.full_catalogue import (  # noqa: E402
    FULL_CATALOGUE_FILE,
    describe_difference,
)
from msr_ray.run.registry import (  # noqa: E402
    BASELINES_OUTPUT,
    DATASET_OUTPUT,
    EVAL_OUTPUT,
    ITEM_SUMMARIES_OUTPUT,
    REPORT_OUTPUT,
    SAMPLES_OUTPUT,
    SCORES_OUTPUT,
    USER_SUMMARIES_OUTPUT,
)
from msr_ray.run.rundir import RunDir, StageOutput  # noqa: E402

CHART_METRICS = ("auc", "hr@5", "ndcg@5", "mrr@5")
THUMBNAIL = 72


def collect_metrics(run: RunDir) -> dict[str, dict]:
    """model -> split -> metrics, from eval/metrics.json and baselines/*/metrics.json."""
    results: dict[str, dict] = {}
    if run.is_complete(EVAL_OUTPUT):
        results.update(run.read_json(EVAL_OUTPUT, "metrics.json"))
    for name in run.list_dirs(BASELINES_OUTPUT):
        if run.is_complete(f"{BASELINES_OUTPUT}/{name}"):
            results.update(run.read_json(BASELINES_OUTPUT, name, "metrics.json"))
    return results


def collect_full_catalogue(run: RunDir) -> dict[str, Any] | None:
    """``eval/full_catalogue.json`` (``evaluate.full_catalogue``), or None when the run's
    evaluation has none."""
    if run.is_complete(EVAL_OUTPUT) and FULL_CATALOGUE_FILE in run.completion(EVAL_OUTPUT)["files"]:
        return run.read_json(EVAL_OUTPUT, FULL_CATALOGUE_FILE)
    return None


def _png(out: StageOutput, name: str, data: bytes) -> str:
    out.write_bytes(data, f"img/{name}")
    return f"img/{name}"


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _metrics_row(model: str, metrics: dict[str, Any], names: list[str]) -> str:
    cells = "".join(
        f"<td>{m['mean']:.3f}<br><small>[{m['ci_low']:.3f}, {m['ci_high']:.3f}]</small></td>"
        if m
        else "<td>–</td>"
        for m in (metrics.get(n) for n in names)
    )
    return f"<tr><th>{html.escape(model)}</th>{cells}</tr>"


def _full_catalogue_note(full: dict[str, Any]) -> str:
    retriever, n = html.escape(full["retriever"]), full["n"]
    return (
        f"<p id='full-catalogue'>The {retriever} rows rank each test user's held-out item "
        "against every item the user has not interacted with: the retriever alone, and "
        f"MLLM-MSR reranking its top {n} (a hit only when the retriever proposed the item). "
        f"{html.escape(describe_difference(full))}.</p>"
    )


def model_colours(results: dict[str, dict]) -> dict[str, Any]:
    """One chart colour per model, the same in every split's chart (models in ``results``'
    order, which is ``collect_metrics``': MLLM-MSR first, then the baselines)."""
    palette = plt.get_cmap("tab10").colors
    return {model: palette[n % len(palette)] for n, model in enumerate(results)}


def _not_scored_note(split: str, missing: list[str]) -> str:
    """Which models scored on another split have no row in ``split``, and why."""
    names = ", ".join(html.escape(m) for m in missing)
    return (
        f"<p class='not-scored'>Not scored on the {split} split: {names}. The evaluate "
        f"stage scores the splits its <code>evaluate.splits</code> lists; the baselines "
        f"score every split.</p>"
    )


def _metrics_section(
    out: StageOutput, results: dict[str, dict], full: dict[str, Any] | None = None
) -> str:
    parts = ["<section id='metrics'><h2>Metrics</h2>"]
    colours = model_colours(results)
    for split in ("test", "valid"):
        models = [m for m in results if split in results[m]]
        if not models:
            continue
        missing = [m for m in results if split not in results[m]]
        names = [k for k in results[models[0]][split] if k != "groups"]
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        rows = [_metrics_row(model, results[model][split], names) for model in models]
        if full is not None and split == "test":
            rows += [
                _metrics_row(row, by_split[split], names)
                for row, by_split in full["metrics"].items()
            ]
        groups = results[models[0]][split]["groups"]
        parts.append(
            f"<h3>{split} ({groups} users; mean [95% CI])</h3>"
            f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"
        )
        if full is not None and split == "test":
            parts.append(_full_catalogue_note(full))
        if missing:
            parts.append(_not_scored_note(split, missing))
        fig, ax = plt.subplots(figsize=(7, 3.2))
        width = 0.8 / len(models)
        for n, model in enumerate(models):
            values = [results[model][split].get(k, {}).get("mean", 0) for k in CHART_METRICS]
            positions = [i + n * width for i in range(len(CHART_METRICS))]
            ax.bar(positions, values, width, label=model, color=colours[model])
        ax.set_xticks(
            [i + width * (len(models) - 1) / 2 for i in range(len(CHART_METRICS))], CHART_METRICS
        )
        ax.set_ylim(0, 1)
        ax.set_title(f"{split} split")
        ax.legend(fontsize=8)
        src = _png(out, f"metrics-{split}.png", _figure_png(fig))
        parts.append(f"<img class='chart' src='{src}' alt='metrics {split}'>")
    parts.append("</section>")
    return "".join(parts)


_SIGNAL_ROWS = (
    (
        "items_naming_genre",
        "item summaries that name their item's genre",
        "items",
        f"≥ {synthetic_signal.ITEM_TARGET:.0%}",
    ),
    (
        "users_naming_current",
        "final user summaries that name the current genre",
        "users",
        f"≥ {synthetic_signal.USER_TARGET:.0%}",
    ),
    ("users_naming_only_wrong", "final user summaries that name only other genres", "users", ""),
    ("switchers_naming_new", "switchers' final summaries that name the new genre", "switchers", ""),
)
_SCORE_ROWS = (
    ("test_auc", "the recommender's test AUC"),
    ("summary_genre_auc", "ranking by 'the final summary names the candidate's genre'"),
    (
        "recent_genre_auc",
        f"ranking by the genres of the {synthetic_signal.RECENT_WINDOW} items before the "
        "held-out one (what the prompt's recent items carry)",
    ),
    ("auc_by_genre_match", "how well its scores separate the current genre's candidates"),
    ("popularity_correlation", "correlation of its scores with training-positive counts"),
)


def synthetic_survival(run: RunDir) -> dict[str, float | int] | None:
    """The signal-survival figures of a run built from the synthetic dataset, else None."""
    if not (run.exists("config.yaml") and run.is_complete(DATASET_OUTPUT)):
        return None
    config = parse_config(run.read_text("config.yaml"), run.path("config.yaml"))
    if config.prepare.source != "synthetic":
        return None

    def table(stage: str, *parts: str):
        return run.read_table(stage, *parts) if run.is_complete(stage) else None

    return synthetic_signal.survival(
        config.prepare.synthetic,
        run.read_table(DATASET_OUTPUT, "sequences.parquet"),
        table(ITEM_SUMMARIES_OUTPUT),
        table(USER_SUMMARIES_OUTPUT),
        table(SAMPLES_OUTPUT),
        table(f"{SCORES_OUTPUT}/mllm-msr"),
    )


def _signal_section(figures: dict[str, float | int]) -> str:
    rows = []
    for key, label, count, target in _SIGNAL_ROWS:
        if key in figures:
            rows.append(
                f"<tr><td style='text-align:left'>{label}</td><td>{figures[key]:.0%}</td>"
                f"<td>{figures.get(count, '')}</td><td>{target}</td></tr>"
            )
    for key, label in _SCORE_ROWS:
        if key in figures:
            rows.append(
                f"<tr><td style='text-align:left'>{label}</td><td>{figures[key]:.3f}</td>"
                "<td></td><td></td></tr>"
            )
    return (
        "<section id='signal'><h2>Signal survival</h2><p>What each stage kept of the "
        "synthetic generator's latent truth (item genres, each user's current genre; "
        "<code>bench/demo_signal.py</code> prints the same).</p><table><tr><th>what</th><th>value</th>"
        f"<th>of</th><th>target</th></tr>{''.join(rows)}</table></section>"
    )


def _training_section(out: StageOutput, run: RunDir) -> str:
    curves: dict[int, list[float]] = {}
    for name in run.list_files("train_logs"):
        if name.endswith(".jsonl"):
            for line in run.read_text("train_logs", name).splitlines():
                row = json.loads(line)
                curves.setdefault(row["rank"], []).append(row["loss"])
    fig, ax = plt.subplots(figsize=(7, 3))
    for rank, losses in sorted(curves.items()):
        ax.plot(range(len(losses)), losses, label=f"worker {rank}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer tokens)")
    ax.legend(fontsize=8)
    src = _png(out, "loss.png", _figure_png(fig))
    return (
        f"<section id='training'><h2>Training</h2><img class='chart' src='{src}' "
        f"alt='loss curves'></section>"
    )


def _dataset_section(summary: dict[str, Any]) -> str:
    funnel = "".join(
        f"<tr><td>{html.escape(s['step'])}</td><td>{s['interactions']}</td><td>{s['users']}</td>"
        f"<td>{s['items']}</td></tr>"
        for s in summary.get("funnel", [])
    )
    quarantined = html.escape(json.dumps(summary.get("quarantined", {})))
    return (
        "<section id='dataset'><h2>Dataset</h2>"
        f"<p>source: {html.escape(str(summary.get('source')))}; users: {summary.get('users')}; "
        f"items kept: {summary.get('items_kept')}; items without image: "
        f"{summary.get('items_without_image')}; quarantined rows: {quarantined}</p>"
        "<table><tr><th>step</th><th>interactions</th><th>users</th><th>items</th></tr>"
        f"{funnel}</table></section>"
    )


class _Thumbnails:
    """Item thumbnails written once into the report folder."""

    def __init__(self, out: StageOutput, items: dict[str, dict]):
        self.out, self.items, self.done = out, items, {}

    def tag(self, item_id: str, caption: str) -> str:
        if item_id not in self.done:
            row = self.items.get(item_id, {})
            try:
                image = item_image(
                    row.get("image_paths") or [], row.get("image_bytes") or [], THUMBNAIL
                )
                self.done[item_id] = _png(self.out, f"item-{len(self.done)}.png", encode_png(image))
            except ImageError:
                self.done[item_id] = None
        src = self.done[item_id]
        picture = f"<img src='{src}' alt=''>" if src else "<div class='noimg'>no image</div>"
        return f"<figure>{picture}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _user_cards(out: StageOutput, run: RunDir, model: str, limit: int) -> str:
    items = {r["item_id"]: r for r in run.read_table(DATASET_OUTPUT, "items.parquet").to_pylist()}
    histories = train_histories(run.read_table(DATASET_OUTPUT, "sequences.parquet"))
    scores = run.read_table(SCORES_OUTPUT, model)
    scores = scores.filter(pc.equal(scores["split"], "test"))
    summaries: dict[str, str] = {}
    if run.is_complete(USER_SUMMARIES_OUTPUT):
        latest = latest_summaries(run.read_table(USER_SUMMARIES_OUTPUT))
        summaries = {user: summary for user, (_, summary) in latest.items()}
    thumbs = _Thumbnails(out, items)
    cards = []
    for user in sorted(set(scores["user_id"].to_pylist()))[:limit]:
        history = histories.get(user, [])[-6:]
        ranked = (
            scores.filter(pc.equal(scores["user_id"], user))
            .sort_by([("score", "descending")])
            .to_pylist()[:5]
        )
        hist_html = "".join(thumbs.tag(i, items.get(i, {}).get("title", i)) for i in history)
        top_html = "".join(
            thumbs.tag(
                r["item_id"],
                f"{'★ ' if r['label'] else ''}{r['score']:.3f} "
                f"{items.get(r['item_id'], {}).get('title', '')}",
            )
            for r in ranked
        )
        summary = html.escape(summaries.get(user, "(no preference summary)"))
        cards.append(
            f"<div class='card'><h3>user {html.escape(user)}</h3>"
            f"<p class='summary'>{summary}</p><h4>recent history</h4>"
            f"<div class='row'>{hist_html}</div><h4>top-ranked candidates "
            f"({html.escape(model)}; ★ = the true next item)</h4>"
            f"<div class='row'>{top_html}</div></div>"
        )
    return f"<section id='users'><h2>Sample users</h2>{''.join(cards)}</section>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}figure{display:inline-block;
margin:4px;width:90px;font-size:11px;vertical-align:top}figure img{width:72px}
.noimg{width:72px;height:72px;background:#eee;font-size:10px}.card{border:1px solid #ddd;
padding:8px;margin:8px 0}.chart{max-width:100%}"""


def build_report(run: RunDir, max_users: int = 6) -> dict[str, Any]:
    """Write ``report/index.html`` and its images; return which sections it has."""
    results = collect_metrics(run)
    sections: list[str] = []
    with run.stage_output(REPORT_OUTPUT) as out:
        body = []
        if run.is_complete(DATASET_OUTPUT):
            body.append(_dataset_section(run.completion(DATASET_OUTPUT)))
            sections.append("dataset")
        if results:
            body.append(_metrics_section(out, results, collect_full_catalogue(run)))
            sections.append("metrics")
        figures = synthetic_survival(run)
        if figures:
            body.append(_signal_section(figures))
            sections.append("signal")
        if run.exists("train_logs"):
            body.append(_training_section(out, run))
            sections.append("training")
        model = next((m for m in results if run.is_complete(f"{SCORES_OUTPUT}/{m}")), None)
        if model and run.is_complete(DATASET_OUTPUT):
            body.append(_user_cards(out, run, model, max_users))
            sections.append("users")
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>msr-ray report"
            f"</title><style>{STYLE}</style></head><body><h1>msr-ray report</h1>"
            f"<p>run: {html.escape(run.root)}</p>{''.join(body)}</body></html>"
        )
        out.write_bytes(page.encode(), "index.html")
        out.metadata["sections"] = sections
    return {"path": run.output_path(REPORT_OUTPUT, "index.html"), "sections": sections}
