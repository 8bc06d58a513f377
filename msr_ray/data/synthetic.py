"""The embedded default dataset: synthetic multimodal items and users, deterministic by seed.

Every item has latent attributes. Its **genre** appears in its title and text;
its **colour** and **pattern** appear only in its image (the text never names
them). Each user prefers one genre and one colour, and with some probability
switches colour preference half-way through the history (taste drift). Users
choose unseen items with probability rising with genre and colour matches, so
both modalities carry signal, and the colour (image only) carries signal that
the text does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from msr_ray.config import SyntheticConfig
from msr_ray.data.images import encode_png
from msr_ray.data.readers.common import RawDataset, Row, build_dataset

GENRES = ["adventure", "comedy", "cooking", "music", "science", "sports"]
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
}
ADJECTIVES = ["Great", "Hidden", "Little", "Wild", "Secret", "Golden", "Last", "Grand"]
# Scores added for a genre and for a colour match; choice ~ exp(score).
GENRE_WEIGHT = 1.6
COLOUR_WEIGHT = 1.6
DRIFT_PROBABILITY = 0.3


@dataclass(frozen=True)
class SyntheticItem:
    item_id: str
    genre: str
    colour: str
    shape: str
    pattern: str
    title: str
    text: str


def make_items(config: SyntheticConfig) -> list[SyntheticItem]:
    """Items with latent attributes; title/text name the genre and shape, never the colour."""
    rng = np.random.default_rng([config.seed, 1])
    colours = list(COLOURS)
    items = []
    for index in range(config.num_items):
        genre = GENRES[index % len(GENRES)]
        colour = colours[int(rng.integers(len(colours)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        title = (
            f"{ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]} "
            f"{GENRE_WORDS[genre][int(rng.integers(5))]} {index}"
        )
        text = f"A {genre} video whose cover shows a {shape}."
        items.append(SyntheticItem(f"i{index}", genre, colour, shape, pattern, title, text))
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


def make_sequences(config: SyntheticConfig, items: list[SyntheticItem]) -> Iterator[dict]:
    """Each user's chronological interactions (user_id, item_id, timestamp)."""
    rng = np.random.default_rng([config.seed, 3])
    colours = list(COLOURS)
    genre_of = np.array([GENRES.index(it.genre) for it in items])
    colour_of = np.array([colours.index(it.colour) for it in items])
    for u in range(config.num_users):
        genre = int(rng.integers(len(GENRES)))
        colour = int(rng.integers(len(colours)))
        length = int(rng.integers(config.min_history, config.max_history + 1))
        length = min(length, len(items))
        drift_at = length // 2 if rng.random() < DRIFT_PROBABILITY else length
        new_colour = int((colour + 1 + rng.integers(len(colours) - 1)) % len(colours))
        seen = np.zeros(len(items), dtype=bool)
        start = 1_600_000_000 + u * 1000
        for step in range(length):
            liked_colour = new_colour if step >= drift_at else colour
            score = GENRE_WEIGHT * (genre_of == genre) + COLOUR_WEIGHT * (colour_of == liked_colour)
            weights = np.where(seen, 0.0, np.exp(score))
            choice = int(rng.choice(len(items), p=weights / weights.sum()))
            seen[choice] = True
            yield {
                "user_id": f"u{u}",
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
