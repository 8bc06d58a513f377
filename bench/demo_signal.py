"""What the test lists of a synthetic run allow, and what the trained recommender follows.

    .venv/bin/python bench/demo_signal.py [--run-dir runs/demo]

For a run on the embedded synthetic dataset (``make demo``), with the items' latent genre
known from the generator, prints per-user test AUCs of rankers that read the signal the
method has: the user's train-history genre counts (what a perfect preference summary
could give) and whether the final preference summary names the candidate's genre (what
the actual summaries give); how often the summaries name the majority genre; and what
the recommender's scores (``scores/mllm-msr``) follow: the summary's genre, or how often
an item was a training positive (item popularity).
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import numpy as np

from msr_ray.config import parse_config
from msr_ray.data.synthetic import GENRES, make_items
from msr_ray.rundir import RunDir


def _auc(scored: list[tuple[float, int]]) -> float:
    positives = [s for s, label in scored if label]
    negatives = [s for s, label in scored if not label]
    return float(
        np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default="runs/demo")
    args = parser.parse_args()
    run = RunDir(args.run_dir)
    config = parse_config(run.read_text("config.yaml"), run.path("config.yaml"))
    genre = {it.item_id: it.genre for it in make_items(config.prepare.synthetic)}
    history: dict[str, list[str]] = defaultdict(list)
    sequences = run.read_table("dataset", "sequences.parquet").sort_by("position").to_pylist()
    for row in sequences:
        if row["split"] == "train":
            history[row["user_id"]].append(genre[row["item_id"]])
    samples = run.read_table("samples").to_pylist()
    positives = Counter(r["item_id"] for r in samples if r["split"] == "train" and r["label"])
    lists: dict[str, list[dict]] = defaultdict(list)
    for row in samples:
        if row["split"] == "test":
            lists[row["group"]].append(row)
    scores = {}
    if run.is_complete("scores/mllm-msr"):
        for r in run.read_table("scores", "mllm-msr").to_pylist():
            scores[(r["group"], r["item_id"])] = r["score"]

    by_history, by_summary, names_majority, model, model_vs_genre = [], [], 0, [], []
    for group, rows in lists.items():
        counts = Counter(history[rows[0]["user_id"]])
        named = {g for g in GENRES if g in rows[0]["summary"].lower()}
        names_majority += counts.most_common(1)[0][0] in named
        by_history.append(_auc([(counts[genre[r["item_id"]]], r["label"]) for r in rows]))
        by_summary.append(_auc([(genre[r["item_id"]] in named, r["label"]) for r in rows]))
        if scores:
            model.append(_auc([(scores[(group, r["item_id"])], r["label"]) for r in rows]))
            matches = [genre[r["item_id"]] in named for r in rows]
            if any(matches) and not all(matches):
                model_vs_genre.append(
                    _auc(
                        [
                            (scores[(group, r["item_id"])], m)
                            for r, m in zip(rows, matches, strict=True)
                        ]
                    )
                )
    print(f"test lists: {len(lists)} users, 21 candidates each")
    print(f"ranked by the user's train-history genre counts:   AUC {np.mean(by_history):.3f}")
    print(f"ranked by 'the final summary names the genre':     AUC {np.mean(by_summary):.3f}")
    print(f"final summaries naming the user's majority genre:  {names_majority}/{len(lists)}")
    if scores:
        test = [r for rows in lists.values() for r in rows]
        score = np.array([scores[(r["group"], r["item_id"])] for r in test])
        popularity = np.array([positives[r["item_id"]] for r in test])
        labels = np.array([r["label"] for r in test])
        print(f"the recommender:                                   AUC {np.mean(model):.3f}")
        print(
            "its scores separate candidates whose genre the summary names: "
            f"AUC {np.mean(model_vs_genre):.3f} (0.5 = not at all)"
        )
        print(
            "correlation of its scores with the candidate's count as a training positive: "
            f"{np.corrcoef(score, popularity)[0, 1]:.2f}; that count averages "
            f"{popularity[labels == 1].mean():.2f} for test positives, "
            f"{popularity[labels == 0].mean():.2f} for negatives"
        )


if __name__ == "__main__":
    main()
