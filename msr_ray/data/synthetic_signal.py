"""What each stage of a run on the synthetic dataset kept of its latent truth (no Ray).

The generator knows every item's genre and popularity and every user's current genre
(``msr_ray.data.synthetic``), so a run on it can be checked stage by stage:

- ``ceilings``: straight from the generator, the per-user test AUC of rankers that read
  the history perfectly, which bound what any model can reach on these test lists;
- ``survival``: how many item summaries name their item's genre, how many final user
  summaries name the user's current genre (or only wrong ones), and what the trained
  recommender's scores follow: genre match or item popularity.

A summary *names* a genre when a word starting with the genre's stem occurs in it
(``comedic`` names comedy, ``scientific`` science).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from msr_ray.config import SyntheticConfig
from msr_ray.data.histories import latest_summaries, train_histories, user_sequences
from msr_ray.data.synthetic import (
    CURRENT_GENRE_SHARE,
    GENRES,
    SyntheticItem,
    SyntheticUser,
    make_items,
    make_sequences,
    make_users,
)

GENRE_STEMS = {
    "adventure": "adventur",
    "comedy": "comed",
    "cooking": "cook",
    "music": "music",
    "science": "scien",
    "sports": "sport",
    "gardening": "garden",
    "fashion": "fashion",
}
assert set(GENRE_STEMS) == set(GENRES)
_NAMED = {genre: re.compile(rf"\b{stem}", re.IGNORECASE) for genre, stem in GENRE_STEMS.items()}
CEILINGS = ("current genre + popularity", "history genre counts", "popularity")
# Targets the summaries must reach (issue: the demo must show MLLM-MSR learning).
ITEM_TARGET, USER_TARGET = 0.9, 0.7
# The recent items the demo's recommender shows beside the summary (recommender.recent_items).
RECENT_WINDOW = 3


def genres_named(text: str) -> set[str]:
    """The genres a text names (see the module docstring)."""
    return {genre for genre, pattern in _NAMED.items() if pattern.search(text or "")}


def auc(scores: list[float], labels: list[int]) -> float:
    """AUC of one candidate list (ties count half); 0.5 when a class is missing."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return 0.5
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives]
    return float(np.mean(wins))


@dataclass(frozen=True)
class _World:
    items: dict[str, SyntheticItem]
    users: dict[str, SyntheticUser]
    sequences: dict[str, list[str]]  # the generator's full sequences

    @classmethod
    def of(cls, config: SyntheticConfig) -> _World:
        catalogue = make_items(config)
        sequences: dict[str, list[str]] = defaultdict(list)
        for row in make_sequences(config, catalogue):
            sequences[row["user_id"]].append(row["item_id"])
        return cls(
            {it.item_id: it for it in catalogue},
            {u.user_id: u for u in make_users(config)},
            dict(sequences),
        )

    def current_genre(self, user_id: str, item_id: str) -> str:
        """The user's current genre when they picked ``item_id``."""
        return self.users[user_id].genre_at(self.sequences[user_id].index(item_id))


def ceilings(config: SyntheticConfig, negatives: int = 20) -> dict[str, list[float]]:
    """Per-user test AUCs of the ``CEILINGS`` rankers on generator-made test lists.

    Leave-last-out with ``negatives`` uniform unseen negatives per user, as in
    ``build-samples`` (the k-core is not applied). The rankers: the generator's own
    probability of a pick given the user's current genre and the items' popularity (a
    perfect reader of the recent history); the genre counts of the whole training
    history; the items' training-interaction counts (what the Popularity baseline reads).
    """
    world = _World.of(config)
    counts = Counter(i for seq in world.sequences.values() for i in seq[:-2])
    by_genre: dict[str, float] = defaultdict(float)
    for item in world.items.values():
        by_genre[item.genre] += item.popularity
    total = sum(by_genre.values())
    rng = np.random.default_rng([config.seed, 7])
    result: dict[str, list[float]] = {name: [] for name in CEILINGS}
    for user_id, sequence in world.sequences.items():
        if len(sequence) < 3:
            continue
        train, target = sequence[:-2], sequence[-1]
        unseen = sorted(set(world.items) - set(sequence))
        if not unseen:
            continue
        drawn = rng.choice(unseen, size=min(negatives, len(unseen)), replace=False)
        candidates, labels = [target, *drawn], [1] + [0] * len(drawn)
        current = world.users[user_id].genre_at(len(sequence) - 1)
        history = Counter(world.items[i].genre for i in train)

        def chance(item: SyntheticItem, genre: str = current) -> float:
            share = CURRENT_GENRE_SHARE * (item.genre == genre) / by_genre[genre]
            return item.popularity * (share + (1 - CURRENT_GENRE_SHARE) / total)

        rankers = (
            [chance(world.items[i]) for i in candidates],
            [history[world.items[i].genre] for i in candidates],
            [counts[i] for i in candidates],
        )
        for name, scores in zip(CEILINGS, rankers, strict=True):
            result[name].append(auc([float(s) for s in scores], labels))
    return result


def survival(
    config: SyntheticConfig,
    sequences: pa.Table,
    item_summaries: pa.Table | None = None,
    user_summaries: pa.Table | None = None,
    samples: pa.Table | None = None,
    scores: pa.Table | None = None,
) -> dict[str, float | int]:
    """Shares of the latent signal that each stage of a synthetic run kept.

    ``sequences`` is the run's ``dataset/sequences.parquet``; the other tables are the
    stages' outputs (any may be missing). Keys: ``items``, ``items_naming_genre``;
    ``users``, ``users_naming_current``, ``users_naming_only_wrong``, ``switchers``,
    ``switchers_naming_new``; and, with test scores, ``test_auc``,
    ``auc_by_genre_match`` (how well the scores separate candidates of the user's
    current genre from the others), ``popularity_correlation`` (of the scores with the
    candidates' counts as training positives), ``summary_genre_auc`` (ranking by
    "the final summary names the candidate's genre") and ``recent_genre_auc`` (ranking by
    how many of the ``RECENT_WINDOW`` items before the held-out one share the candidate's
    genre, training-positive counts breaking ties: what the recent items shown in the
    prompt carry).
    """
    world = _World.of(config)
    report: dict[str, float | int] = {}
    if item_summaries is not None and item_summaries.num_rows:
        named = [
            world.items[i].genre in genres_named(s)
            for i, s in zip(
                item_summaries["item_id"].to_pylist(),
                item_summaries["summary"].to_pylist(),
                strict=True,
            )
        ]
        report["items"] = len(named)
        report["items_naming_genre"] = float(np.mean(named))
    histories = train_histories(sequences)
    current = {u: world.current_genre(u, h[-1]) for u, h in histories.items() if h}
    finals: dict[str, set[str]] = {}
    if user_summaries is not None and user_summaries.num_rows:
        finals = {u: genres_named(s) for u, (_, s) in latest_summaries(user_summaries).items()}
        users = [u for u in finals if u in current]
        switched = [u for u in users if world.users[u].switch_at < len(world.sequences[u])]
        report["users"] = len(users)
        report["users_naming_current"] = float(np.mean([current[u] in finals[u] for u in users]))
        report["users_naming_only_wrong"] = float(
            np.mean([bool(finals[u]) and current[u] not in finals[u] for u in users])
        )
        report["switchers"] = len(switched)
        if switched:
            report["switchers_naming_new"] = float(
                np.mean([world.users[u].new_genre in finals[u] for u in switched])
            )
    if samples is not None and scores is not None and scores.num_rows:
        recent = {
            user: [item for item, _ in events[:-1]][-RECENT_WINDOW:]
            for user, events in user_sequences(sequences).items()
        }
        report.update(_scores_follow(world, current, finals, recent, samples, scores))
    return report


def _scores_follow(
    world: _World,
    current: dict[str, str],
    finals: dict[str, set[str]],
    recent: dict[str, list[str]],
    samples: pa.Table,
    scores: pa.Table,
) -> dict[str, float]:
    positives = Counter(
        item
        for item, split, label in zip(
            samples["item_id"].to_pylist(),
            samples["split"].to_pylist(),
            samples["label"].to_pylist(),
            strict=True,
        )
        if split == "train" and label
    )
    lists: dict[str, list[dict]] = defaultdict(list)
    for row in scores.to_pylist():
        if row["split"] == "test":
            lists[row["group"]].append(row)
    most = max(positives.values(), default=0) + 1
    model, by_match, by_summary, by_recent, flat_scores, flat_counts = [], [], [], [], [], []
    for rows in lists.values():
        user = rows[0]["user_id"]
        values = [r["score"] for r in rows]
        model.append(auc(values, [r["label"] for r in rows]))
        genres = [world.items[r["item_id"]].genre for r in rows]
        matches = [int(g == current.get(user)) for g in genres]
        if 0 < sum(matches) < len(matches):
            by_match.append(auc(values, matches))
        named = finals.get(user, set())
        by_summary.append(auc([float(g in named) for g in genres], [r["label"] for r in rows]))
        shown = Counter(world.items[i].genre for i in recent.get(user, []))
        by_recent.append(
            auc(
                [
                    shown[g] + positives[r["item_id"]] / most
                    for g, r in zip(genres, rows, strict=True)
                ],
                [r["label"] for r in rows],
            )
        )
        flat_scores += values
        flat_counts += [positives[r["item_id"]] for r in rows]
    correlation = (
        float(np.corrcoef(flat_scores, flat_counts)[0, 1])
        if np.std(flat_scores) > 0 and np.std(flat_counts) > 0
        else 0.0
    )
    return {
        "test_auc": float(np.mean(model)),
        "auc_by_genre_match": float(np.mean(by_match)) if by_match else 0.5,
        "summary_genre_auc": float(np.mean(by_summary)),
        "recent_genre_auc": float(np.mean(by_recent)),
        "popularity_correlation": correlation,
    }
