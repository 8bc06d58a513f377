"""What the test lists of a synthetic run allow, and what the trained recommender follows.

    .venv/bin/python bench/demo_signal.py [--run-dir runs/demo]

For a run on the embedded synthetic dataset (``make demo``), with the items' latent genre
known from the generator, prints per-user test AUCs of rankers that read the signal the
method has: the user's train-history genre counts (what a perfect preference summary
could give) and whether the final preference summary names the candidate's genre (what
the actual summaries give); how often the summaries name the majority genre; and what
the recommender's scores (``scores/mllm-msr``) follow: the summary's genre, or how often
an item was a training positive (item popularity).

    .venv/bin/python bench/demo_signal.py --ceilings

needs no run: for several synthetic sizes and seeds, straight from the generator, the test
AUC (and the lower end of its 95% interval) of three rankers that read the history
perfectly: the majority genre of the whole training history and the majority colour of
its last block, weighted as the generator weighs them (what a perfect image-reading
summary could carry), the genre counts of the whole training history (a perfect text
summary), and the majority genre of the first block only (what a summary that names one
genre carries). A recommender that reads only the text
pipeline's summaries cannot do better than the second, and in practice does no better
than the third. Leave-last-out and 20 uniform unseen negatives as in ``samples``; the
k-core is not applied.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import numpy as np

from msr_ray.config import SyntheticConfig, parse_config
from msr_ray.data.synthetic import (
    COLOUR_WEIGHT,
    GENRE_WEIGHT,
    GENRES,
    make_items,
    make_sequences,
)
from msr_ray.rundir import RunDir


def _auc(scored: list[tuple[float, int]]) -> float:
    positives = [s for s, label in scored if label]
    negatives = [s for s, label in scored if not label]
    return float(
        np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives])
    )


# (users, items, min_history, max_history): the demo's size, the generator's default, and
# larger catalogues with shorter histories (less depletion of the preferred genre).
CEILING_SIZES = [(50, 80, 8, 11), (60, 80, 8, 14), (80, 120, 6, 8), (100, 150, 5, 7)]
CEILING_SEEDS = 8
BLOCK_SIZE = 3


def _interval_low(aucs: list[float]) -> float:
    return float(np.mean(aucs) - 1.96 * np.std(aucs) / np.sqrt(len(aucs)))


def _ceilings(users: int, items: int, low: int, high: int, seed: int) -> list[list[float]]:
    """Per-user test AUCs of the three rankers (genre + colour, history genres, first block)."""
    config = SyntheticConfig(
        num_users=users, num_items=items, min_history=low, max_history=high, seed=seed
    )
    catalogue = make_items(config)
    genre = {it.item_id: it.genre for it in catalogue}
    colour = {it.item_id: it.colour for it in catalogue}
    sequences: dict[str, list[str]] = defaultdict(list)
    for row in make_sequences(config, catalogue):
        sequences[row["user_id"]].append(row["item_id"])
    rng = np.random.default_rng([seed, 7])
    aucs: list[list[float]] = [[], [], []]
    for sequence in sequences.values():
        train, target = sequence[:-2], sequence[-1]
        unseen = sorted(set(genre) - set(sequence))
        negatives = list(rng.choice(unseen, size=min(20, len(unseen)), replace=False))
        counts = Counter(genre[i] for i in train)
        first = Counter(genre[i] for i in train[:BLOCK_SIZE]).most_common(1)[0][0]
        # The generator's score, with the preferences read from the history (the colour
        # from the last block, so drift is followed).
        liked_genre = counts.most_common(1)[0][0]
        liked_colour = Counter(colour[i] for i in train[-BLOCK_SIZE:]).most_common(1)[0][0]

        candidates = [target, *negatives]
        labels = [1] + [0] * len(negatives)
        rankers = [
            [
                GENRE_WEIGHT * (genre[i] == liked_genre)
                + COLOUR_WEIGHT * (colour[i] == liked_colour)
                for i in candidates
            ],
            [counts[genre[i]] for i in candidates],
            [float(genre[i] == first) for i in candidates],
        ]
        for n, scores in enumerate(rankers):
            aucs[n].append(_auc(list(zip(scores, labels, strict=True))))
    return aucs


def print_ceilings() -> None:
    """The ceilings table (see the module docstring)."""
    print(
        f"test AUC (95% interval's lower end), mean over seeds 0..{CEILING_SEEDS - 1}; "
        "a demo passes when the lower end is above 0.5"
    )
    print("users items history | genre + recent colour | history genres | first block's genre")
    for users, items, low, high in CEILING_SIZES:
        runs = [_ceilings(users, items, low, high, seed) for seed in range(CEILING_SEEDS)]
        cells = []
        for n in range(3):
            means = [np.mean(r[n]) for r in runs]
            lows = [_interval_low(r[n]) for r in runs]
            cells.append(f"{np.mean(means):.3f} ({np.mean(lows):.3f})")
        print(f"{users:5d} {items:5d} {low:3d}-{high:<3d}   | " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument(
        "--ceilings", action="store_true", help="print the generator's ceilings; needs no run"
    )
    args = parser.parse_args()
    if args.ceilings:
        print_ceilings()
        return
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
