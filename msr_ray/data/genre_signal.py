"""What genre signal survives each stage on a dataset whose item texts list genres (no Ray).

MovieLens items carry ``Genres: Comedy, Romance.`` in their text. Real data has no latent
truth, but its genres give one to check: a scorer that ranks a user's candidates by how
much of their genres the user's history window holds shows the signal the window offers;
the same scorer reading the genres an item summary or a user summary *names* shows what
survives summarization. Each is an AUC on the run's own candidate lists.
"""

from __future__ import annotations

import re
from collections import Counter

import pyarrow as pa

# Words that name a MovieLens genre in free text (word starts, matched case-insensitively).
GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "action": ("action",),
    "adventure": ("adventur",),
    "animation": ("animat", "cartoon"),
    "children's": ("child", "kid", "family"),
    "comedy": ("comed", "comic", "funny", "humor", "humour"),
    "crime": ("crime", "criminal", "gangster"),
    "documentary": ("documentar",),
    "drama": ("drama",),
    "fantasy": ("fantas",),
    "film-noir": ("noir",),
    "horror": ("horror", "scary"),
    "musical": ("musical",),
    "mystery": ("myster",),
    "romance": ("romanc", "romantic"),
    "sci-fi": ("sci-fi", "science fiction", "sci fi", "science-fiction"),
    "thriller": ("thrill", "suspense"),
    "war": ("war", "wars", "wartime", "military"),
    "western": ("western", "cowboy"),
}
_PATTERNS = {
    genre: re.compile(
        r"\b(" + "|".join(re.escape(w) + ("\\b" if genre == "war" else "") for w in words) + ")",
        re.IGNORECASE,
    )
    for genre, words in GENRE_WORDS.items()
}
_LISTED = re.compile(r"Genres:\s*([^.]*)")


def listed_genres(text: str) -> frozenset[str]:
    """The genres an item's text lists after ``Genres:`` (lower case)."""
    found = _LISTED.search(text or "")
    if not found:
        return frozenset()
    return frozenset(g.strip().lower() for g in found.group(1).split(",") if g.strip())


def named_genres(text: str) -> frozenset[str]:
    """The genres free text names (``GENRE_WORDS``)."""
    return frozenset(g for g, pattern in _PATTERNS.items() if pattern.search(text or ""))


def item_genres(items: pa.Table) -> dict[str, frozenset[str]]:
    """item_id -> its listed genres."""
    return {
        item: listed_genres(text)
        for item, text in zip(items["item_id"].to_pylist(), items["text"].to_pylist(), strict=True)
    }


def profile(items: list[str], genres: dict[str, frozenset[str]]) -> Counter[str]:
    """How often each genre occurs among ``items``."""
    return Counter(g for item in items for g in genres.get(item, ()))


def genre_scores(
    candidates: pa.Table, profiles: dict[str, Counter[str]], genres: dict[str, frozenset[str]]
) -> pa.Table:
    """A scores table: each candidate scored by the sum of its genres' weights in its user's
    profile (columns split, group, label, score)."""
    scores = [
        float(sum(profiles.get(user, Counter())[g] for g in genres.get(item, ())))
        for user, item in zip(
            candidates["user_id"].to_pylist(), candidates["item_id"].to_pylist(), strict=True
        )
    ]
    return candidates.select(["split", "group", "label"]).append_column(
        "score", pa.array(scores, pa.float64())
    )


def naming_share(texts: dict[str, str], genres: dict[str, frozenset[str]]) -> float:
    """The share of texts (by item) that name at least one of their item's listed genres."""
    keyed = [(k, t) for k, t in texts.items() if genres.get(k)]
    if not keyed:
        return float("nan")
    return sum(bool(named_genres(t) & genres[k]) for k, t in keyed) / len(keyed)
