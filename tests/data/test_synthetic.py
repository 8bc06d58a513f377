import hashlib
from collections import Counter

import numpy as np

from msr_ray.config import SyntheticConfig
from msr_ray.data.images import load_image
from msr_ray.data.synthetic import (
    COLOURS,
    GENERATED_SHA256,
    GENERATOR_VERSION,
    GENRES,
    SWITCH_MARGIN,
    draw_item_image,
    generate,
    make_items,
    make_sequences,
    make_users,
)
from msr_ray.data.synthetic_signal import CEILINGS, ceilings, genres_named


def test_generator_is_deterministic():
    config = SyntheticConfig(num_users=10, num_items=30)
    a, b = generate(config), generate(config)
    assert a.items.equals(b.items) and a.interactions.equals(b.interactions)
    c = generate(SyntheticConfig(num_users=10, num_items=30, seed=1))
    assert not a.interactions.equals(c.interactions)


def test_colour_only_in_pixels_never_in_text():
    config = SyntheticConfig(num_users=5, num_items=24)
    data = generate(config)
    latent = {it.item_id: it for it in make_items(config)}
    palette = {name: np.array(rgb) for name, rgb in COLOURS.items()}
    for row in data.items.to_pylist():
        words = (row["title"] + " " + row["text"]).lower()
        assert not any(colour in words for colour in COLOURS)
        pixels = np.asarray(load_image(row["image_bytes"][0])).reshape(-1, 3)
        background = np.array(Counter(map(tuple, pixels)).most_common(1)[0][0])
        nearest = min(palette, key=lambda n: np.abs(palette[n] - background).sum())
        assert nearest == latent[row["item_id"]].colour


def test_image_attribute_predicts_choice_where_text_cannot():
    """Users pick items of their liked colour (pixels only) twice as often as chance."""
    config = SyntheticConfig(num_users=300, num_items=120, min_history=10, max_history=14)
    items = {it.item_id: it for it in make_items(config)}
    users = {u.user_id: u for u in make_users(config)}
    picks = [
        items[row["item_id"]].colour == users[row["user_id"]].colour
        for row in make_sequences(config, list(items.values()))
    ]
    assert np.mean(picks) > 2 / len(COLOURS)  # chance is 1/6
    # The text carries genre, never colour: colour is independent of genre by construction.
    genre_colour = Counter((it.genre, it.colour) for it in items.values())
    assert len({c for (g, c) in genre_colour if g == GENRES[0]}) > 1


def _world(config: SyntheticConfig):
    items = {it.item_id: it for it in make_items(config)}
    users = {u.user_id: u for u in make_users(config)}
    sequences: dict[str, list[str]] = {}
    for row in make_sequences(config, list(items.values())):
        sequences.setdefault(row["user_id"], []).append(row["item_id"])
    return items, users, sequences


DEMO = SyntheticConfig(num_users=50, num_items=128, min_history=8, max_history=11)


def test_demo_world_behaves_like_a_catalogue():
    """8 genres, a current genre taking at most 75% of picks, a quarter of users switching
    late, and no user out of their genre's items before the held-out one."""
    for seed in (0, 1, 2):
        items, users, sequences = _world(DEMO.model_copy(update={"seed": seed}))
        assert len({it.genre for it in items.values()}) == len(GENRES) >= 8
        in_current = [
            items[i].genre == users[u].genre_at(p)
            for u, seq in sequences.items()
            for p, i in enumerate(seq)
        ]
        assert 0.6 < np.mean(in_current) <= 0.75
        switched = [u for u in users.values() if u.switch_at < u.length]
        assert len(switched) >= 0.25 * len(users)
        for user in switched:
            assert user.length / 2 <= user.switch_at <= user.length - SWITCH_MARGIN
            assert user.new_genre != user.genre
        for u, seq in sequences.items():
            current = users[u].genre_at(len(seq) - 1)
            left = [i for i, it in items.items() if it.genre == current and i not in seq[:-1]]
            assert len(left) >= 3


def test_popularity_is_long_tailed_within_each_genre():
    items, _, sequences = _world(DEMO)
    counts = Counter(i for seq in sequences.values() for i in seq)
    for genre in GENRES:
        members = sorted(
            (it for it in items.values() if it.genre == genre), key=lambda it: -it.popularity
        )
        assert members[0].popularity == 1.0 and members[-1].popularity < 0.1
        head = sum(counts[it.item_id] for it in members[:3])
        tail = sum(counts[it.item_id] for it in members[-3:])
        assert head > 2 * max(tail, 1)


def test_demo_ceilings_lie_where_learning_can_show():
    """A perfect reader of the current genre plus popularity reaches 0.80-0.93, above the
    whole history's genre counts, above popularity alone, above chance."""
    for seed in (0, 1, 2):
        result = ceilings(DEMO.model_copy(update={"seed": seed}))
        perfect, history, popularity = (np.mean(result[name]) for name in CEILINGS)
        assert 0.80 <= perfect <= 0.93
        assert perfect > history > 0.6 and perfect > popularity > 0.5


def test_a_summary_names_a_genre_by_its_stem():
    assert genres_named("Enjoys comedic sketches and scientific shows.") == {"comedy", "science"}
    assert genres_named("Likes cooks and sport.") == {"cooking", "sports"}
    assert genres_named("The user likes videos.") == set()


def _generated_digest() -> str:
    config = SyntheticConfig(num_users=6, num_items=24, min_history=8, max_history=11)
    items = make_items(config)
    digest = hashlib.sha256(repr(items).encode())
    digest.update(repr(list(make_sequences(config, items))).encode())
    for item in items:
        digest.update(draw_item_image(item, 32, config.seed).tobytes())
    return digest.hexdigest()


def test_a_changed_generator_gets_a_new_version():
    """GENERATOR_VERSION enters the dataset's fingerprint (a new one rebuilds the demo's
    dataset), so what the generator makes may change only with it: bump the version,
    then record the new digest in ``synthetic.GENERATED_SHA256``."""
    digest = _generated_digest()
    assert GENERATED_SHA256.get(GENERATOR_VERSION) == digest, (
        f"the generator's output changed under {GENERATOR_VERSION!r}: bump "
        f"GENERATOR_VERSION and record {digest!r} for it in GENERATED_SHA256"
    )
