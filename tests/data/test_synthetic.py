from collections import Counter

import numpy as np

from msr_ray.config import SyntheticConfig
from msr_ray.data.images import load_image
from msr_ray.data.synthetic import COLOURS, GENRES, generate, make_items, make_sequences


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
    """The next item's colour (pixels only) follows the user's history above chance."""
    config = SyntheticConfig(num_users=300, num_items=120, min_history=10, max_history=14)
    items = {it.item_id: it for it in make_items(config)}
    histories: dict[str, list] = {}
    for row in make_sequences(config, list(items.values())):
        histories.setdefault(row["user_id"], []).append(items[row["item_id"]])
    hits = 0
    for seq in histories.values():
        top_colour = Counter(it.colour for it in seq[:-1]).most_common(1)[0][0]
        hits += seq[-1].colour == top_colour
    accuracy = hits / len(histories)
    assert accuracy > 2 / len(COLOURS)  # chance is 1/6
    # The text carries genre, never colour: colour is independent of genre by construction.
    genre_colour = Counter((it.genre, it.colour) for it in items.values())
    assert len({c for (g, c) in genre_colour if g == GENRES[0]}) > 1
