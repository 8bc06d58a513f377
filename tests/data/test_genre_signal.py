from collections import Counter

import pyarrow as pa
import pytest

from msr_ray.data.genre_signal import (
    genre_scores,
    listed_genres,
    named_genres,
    naming_share,
    profile,
)
from msr_ray.evaluation.metrics import evaluate_scores


def test_listed_and_named_genres():
    assert listed_genres("Genres: Animation, Children's, Comedy.") == {
        "animation",
        "children's",
        "comedy",
    }
    assert listed_genres("A film.") == frozenset()
    text = "The user enjoys romantic comedies and science fiction, not award-winning dramas."
    assert named_genres(text) == {"romance", "comedy", "sci-fi", "drama"}  # "award" is not war
    assert named_genres("A war film about the Star Wars fans") == {"war"}


def test_genre_scores_rank_by_the_users_profile():
    genres = {"a": frozenset({"comedy"}), "b": frozenset({"horror"}), "c": frozenset({"drama"})}
    candidates = pa.table(
        {
            "split": ["test"] * 3,
            "user_id": ["u"] * 3,
            "item_id": ["a", "b", "c"],
            "label": [1, 0, 0],
            "group": ["g"] * 3,
        }
    )
    scores = genre_scores(candidates, {"u": profile(["a", "a", "c"], genres)}, genres)
    assert scores["score"].to_pylist() == [2.0, 0.0, 1.0]
    assert evaluate_scores(scores, (1,), 0)["test"]["auc"]["mean"] == 1.0
    assert genre_scores(candidates, {}, genres)["score"].to_pylist() == [0.0, 0.0, 0.0]
    assert profile(["a", "zzz"], genres) == Counter({"comedy": 1})
    share = naming_share({"a": "A funny film.", "b": "A calm film.", "x": "?"}, genres)
    assert share == pytest.approx(0.5)
