"""The embedded default dataset: synthetic multimodal items and users, deterministic by seed.

Generator ``synthetic-v2`` (``GENERATOR_VERSION``; it enters the dataset's fingerprint).
Every item has latent attributes and a popularity:

- its **genre** (one of 8) is named in its title and text;
- its **colour** and **pattern** appear only in its image (the text never names them);
- its **popularity** is long-tailed within its genre: the genre's items in a seeded
  order get Zipf weights ``1 / rank ** ZIPF_EXPONENT``, the same for every user.

Each user has a **current genre** and a liked colour. A pick comes from the current genre
with probability ``CURRENT_GENRE_SHARE`` and from the whole catalogue otherwise (so the
current genre takes about 70% of picks); within either pool an unseen item is chosen
with weight ``popularity * exp(COLOUR_WEIGHT * liked colour)``. A share
``SWITCH_PROBABILITY`` of users switch their current genre once, in the second half of
their history and at least ``SWITCH_MARGIN`` items before its end, so the most recent
items carry what the first ones do not. When the current genre has no unseen item left,
the pick comes from the whole catalogue (the demo's catalogue is large enough that no
user runs out before the held-out item).

``bench/demo_signal.py --ceilings`` measures what the test lists allow on this world.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from msr_ray.config import SyntheticConfig
from msr_ray.data.images import encode_png
from msr_ray.data.readers.common import RawDataset, Row, build_dataset

GENERATOR_VERSION = "synthetic-v2"
# sha256 of what each version generates at the test's small size
# (tests/data/test_synthetic.py): a test fails when the output changes under an old version.
GENERATED_SHA256 = {
    "synthetic-v2": "3757135023fa622bf883bdf2bbd255329ea6f16d8b12fc89ecc57938d036d8ad",
}
GENRES = [
    "adventure", "comedy", "cooking", "music", "science", "sports", "gardening", "fashion",
]  # fmt: skip
COLOURS = {
    "red": (205, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 200),
    "yellow": (230, 200, 40),
    "purple": (130, 50, 170),
    "orange": (235, 125, 30),
}
SHAPES = ["circle", "square", "triangle", "diamond"]
PATTERNS = ["plain", "stripes", "dots"]
GENRE_WORDS = {
    "adventure": ["Quest", "Voyage", "Expedition", "Journey", "Trail"],
    "comedy": ["Laughs", "Pranks", "Jokes", "Antics", "Giggles"],
    "cooking": ["Recipes", "Kitchen", "Feast", "Flavours", "Bakery"],
    "music": ["Melodies", "Rhythms", "Concert", "Ballads", "Beats"],
    "science": ["Experiments", "Discoveries", "Atoms", "Galaxies", "Theories"],
    "sports": ["Champions", "Match", "Victory", "Sprint", "League"],
    "gardening": ["Roses", "Orchard", "Seedlings", "Blossoms", "Harvest"],
    "fashion": ["Runway", "Couture", "Wardrobe", "Styles", "Catwalk"],
}
ADJECTIVES = ["Great", "Hidden", "Little", "Wild", "Secret", "Golden", "Last", "Grand"]
# Probability that a pick comes from the user's current genre (else: the whole catalogue).
CURRENT_GENRE_SHARE = 0.65
# Within a pool, an item's weight is popularity * exp(COLOUR_WEIGHT * [liked colour]).
COLOUR_WEIGHT = 1.6
ZIPF_EXPONENT = 1.0
SWITCH_PROBABILITY = 0.35
# A switch happens at least this many items before the end of the history.
SWITCH_MARGIN = 4


@dataclass(frozen=True)
class SyntheticItem:
    item_id: str
    genre: str
    colour: str
    shape: str
    pattern: str
    title: str
    text: str
    popularity: float


def make_items(config: SyntheticConfig) -> list[SyntheticItem]:
    """Items with latent attributes; title/text name the genre and shape, never the colour."""
    rng = np.random.default_rng([config.seed, 1])
    colours = list(COLOURS)
    genre_of = [GENRES[index % len(GENRES)] for index in range(config.num_items)]
    popularity = np.zeros(config.num_items)
    for genre in GENRES:
        members = [i for i, g in enumerate(genre_of) if g == genre]
        ranks = rng.permutation(len(members))
        popularity[members] = 1.0 / (ranks + 1.0) ** ZIPF_EXPONENT
    items = []
    for index, genre in enumerate(genre_of):
        colour = colours[int(rng.integers(len(colours)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        title = (
            f"{ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]} "
            f"{GENRE_WORDS[genre][int(rng.integers(5))]} {index}"
        )
        article = "An" if genre[0] in "aeiou" else "A"
        text = f"{article} {genre} video whose cover shows a {shape}."
        items.append(
            SyntheticItem(
                f"i{index}", genre, colour, shape, pattern, title, text, float(popularity[index])
            )
        )
    return items


def draw_item_image(item: SyntheticItem, size: int, seed: int) -> Image.Image:
    """The item's cover: its colour as background, its pattern, its shape in the middle."""
    rng = np.random.default_rng([seed, 2, int(item.item_id[1:])])
    base = np.array(COLOURS[item.colour], dtype=np.int16)
    colour = tuple(int(c) for c in np.clip(base + rng.integers(-15, 16, 3), 0, 255))
    img = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(img)
    shade = tuple(int(c * 0.7) for c in colour)
    step = max(4, size // 8)
    if item.pattern == "stripes":
        for x in range(0, size, step):
            draw.rectangle([x, 0, x + step // 3, size], fill=shade)
    elif item.pattern == "dots":
        for x in range(step // 2, size, step):
            for y in range(step // 2, size, step):
                draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=shade)
    lo, hi, mid = size * 0.3, size * 0.7, size / 2
    box = [lo, lo, hi, hi]
    fill = (245, 245, 245)
    if item.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif item.shape == "square":
        draw.rectangle(box, fill=fill)
    elif item.shape == "triangle":
        draw.polygon([(mid, lo), (hi, hi), (lo, hi)], fill=fill)
    else:
        draw.polygon([(mid, lo), (hi, mid), (mid, hi), (lo, mid)], fill=fill)
    return img


@dataclass(frozen=True)
class SyntheticUser:
    """A user's latent tastes: the current genre before and after the switch, the colour."""

    user_id: str
    length: int
    genre: str
    colour: str
    switch_at: int  # position of the first pick of ``new_genre``; ``length`` = no switch
    new_genre: str

    def genre_at(self, position: int) -> str:
        """The current genre when the pick at ``position`` is made."""
        return self.new_genre if position >= self.switch_at else self.genre


def make_users(config: SyntheticConfig) -> list[SyntheticUser]:
    """Every user's latent tastes (drawn before any pick, so they do not depend on items)."""
    rng = np.random.default_rng([config.seed, 3])
    colours = list(COLOURS)
    users = []
    for u in range(config.num_users):
        genre = int(rng.integers(len(GENRES)))
        colour = colours[int(rng.integers(len(colours)))]
        length = min(
            int(rng.integers(config.min_history, config.max_history + 1)), config.num_items
        )
        new_genre = int((genre + 1 + rng.integers(len(GENRES) - 1)) % len(GENRES))
        switch_at = length
        first, last = (length + 1) // 2, length - SWITCH_MARGIN
        if rng.random() < SWITCH_PROBABILITY and first <= last:
            switch_at = int(rng.integers(first, last + 1))
        users.append(
            SyntheticUser(f"u{u}", length, GENRES[genre], colour, switch_at, GENRES[new_genre])
        )
    return users


def make_sequences(config: SyntheticConfig, items: list[SyntheticItem]) -> Iterator[dict]:
    """Each user's chronological interactions (user_id, item_id, timestamp)."""
    rng = np.random.default_rng([config.seed, 4])
    genre_of = np.array([it.genre for it in items])
    colour_of = np.array([it.colour for it in items])
    popularity = np.array([it.popularity for it in items])
    for u, user in enumerate(make_users(config)):
        appeal = popularity * np.exp(COLOUR_WEIGHT * (colour_of == user.colour))
        seen = np.zeros(len(items), dtype=bool)
        start = 1_600_000_000 + u * 1000
        for step in range(user.length):
            weights = np.where(seen, 0.0, appeal)
            in_genre = np.where(genre_of == user.genre_at(step), weights, 0.0)
            from_genre = rng.random() < CURRENT_GENRE_SHARE
            if from_genre and in_genre.sum() > 0:
                weights = in_genre
            choice = int(rng.choice(len(items), p=weights / weights.sum()))
            seen[choice] = True
            yield {
                "user_id": user.user_id,
                "item_id": items[choice].item_id,
                "timestamp": start + step * 60,
            }


def generate(config: SyntheticConfig, max_image_side: int = 336) -> RawDataset:
    """The synthetic dataset as a reader would return it (images inline as PNG bytes)."""
    items = make_items(config)

    def item_rows() -> Iterator[Row]:
        for line, item in enumerate(items, start=1):
            image = encode_png(draw_item_image(item, config.image_size, config.seed))
            yield (
                "<synthetic>",
                line,
                {
                    "item_id": item.item_id,
                    "title": item.title,
                    "text": item.text,
                    "images": [image],
                },
            )

    def interaction_rows() -> Iterator[Row]:
        for line, row in enumerate(make_sequences(config, items), start=1):
            yield "<synthetic>", line, row

    return build_dataset(item_rows(), interaction_rows(), ".", max_image_side)
