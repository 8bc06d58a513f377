"""Candidates/s of recommender scoring: today's path against prefix-shared scoring.

.venv/bin/python bench/scoring.py [--users 6] [--candidates 21]

The embedded MLLM (base weights, 1 thread) scores the same 21-candidate lists of
synthetic items (image + title) three ways, measured side by side in one run:
  paper-full:    the paper's prompt order, every prompt run whole, fp32, 8 per batch
                 (how train validation, evaluate and serving scored before);
  shared-full:   the shared-prefix prompt order, every prompt run whole, fp32;
  shared-cached: the same prompts, each user's prefix computed once and its KV cache
                 expanded over the candidates, ``dtype: auto`` (bf16 only on a CPU that
                 computes it natively), 24 per batch (``Recommender.score``).
shared-full and shared-cached see identical token sequences: their per-user rankings
are compared, and so are their scores. ``--smoke`` runs the same code on the tiny MLLM with
2 users of 3 candidates (the test suite runs it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from msr_ray.config import ModelSpec, PipelineConfig, RecommenderConfig, SyntheticConfig
from msr_ray.data.images import encode_png
from msr_ray.data.synthetic import draw_item_image, make_items
from msr_ray.method.recommender import Recommender
from msr_ray.models.loading import load_model
from msr_ray.models.scoring import score_full

SUMMARY = (
    "The user appears to have a preference for {genre} videos with bright, colourful covers "
    "and simple shapes, especially light-hearted stories that are easy to follow and short "
    "enough to watch in one sitting."
)


def _rows(users: int, candidates: int) -> list[dict]:
    items = make_items(SyntheticConfig(num_items=80))
    rows = []
    for u in range(users):
        genre = items[u].genre
        for k in range(candidates):
            item = items[(u * 7 + k * 3) % len(items)]
            rows.append(
                {
                    "group": f"u{u}",
                    "summary": SUMMARY.format(genre=genre),
                    "title": item.title,
                    "image_paths": [],
                    "image_bytes": [encode_png(draw_item_image(item, 64, 0))],
                }
            )
    return rows


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _rankings(rows: list[dict], scores: list[float]) -> dict[str, list[int]]:
    by_group: dict[str, list[float]] = {}
    for row, score in zip(rows, scores, strict=True):
        by_group.setdefault(row["group"], []).append(score)
    return {g: list(np.argsort(-np.array(s), kind="stable")) for g, s in by_group.items()}


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--candidates", type=int, default=21)
    parser.add_argument("--smoke", action="store_true", help="tiny MLLM, 2 users x 3 candidates")
    args = parser.parse_args()
    if args.smoke:
        args.users, args.candidates = 2, 3
    model = "tiny" if args.smoke else "embedded"
    rows = _rows(args.users, args.candidates)
    fp32 = load_model(ModelSpec(name=model, dtype="float32"), "mllm")
    auto = load_model(ModelSpec(name=model), "mllm")
    paper = Recommender(
        fp32, PipelineConfig(domain="video", recommender=RecommenderConfig(prompt_order="paper"))
    )
    shared32 = Recommender(fp32, PipelineConfig(domain="video"))
    cached = Recommender(auto, PipelineConfig(domain="video"))
    cached.score(rows[:2])  # warm-up

    def whole(recommender: Recommender, batch: int) -> list[float]:
        prompts = recommender.prompts(rows)
        return [
            s
            for start in range(0, len(prompts), batch)
            for s in score_full(recommender.loaded, prompts[start : start + batch])
        ]

    _, paper_s = _timed(lambda: whole(paper, 8))
    full_scores, full_s = _timed(lambda: whole(shared32, 8))
    cached_scores, cached_s = _timed(lambda: cached.score(rows))

    n = len(rows)
    print(
        f"{model} MLLM, users={args.users} candidates/user={args.candidates} threads=1 "
        f"cached dtype={auto.dtype}"
    )
    for name, seconds in (
        ("paper-full", paper_s),
        ("shared-full", full_s),
        ("shared-cached", cached_s),
    ):
        print(f"{name:14s} {n} candidates in {seconds:6.2f}s = {n / seconds:6.2f} candidates/s")
    same = sum(
        a == b
        for a, b in zip(
            _rankings(rows, full_scores).values(),
            _rankings(rows, cached_scores).values(),
            strict=True,
        )
    )
    diff = max(abs(a - b) for a, b in zip(full_scores, cached_scores, strict=True))
    print(
        f"ratio shared-cached vs paper-full: {paper_s / cached_s:.2f}x; "
        f"vs shared-full: {full_s / cached_s:.2f}x"
    )
    print(
        f"shared-full vs shared-cached: identical rankings {same}/{args.users}, "
        f"max |score diff| {diff:.2e}, Spearman {_spearman(full_scores, cached_scores):.4f}"
    )


if __name__ == "__main__":
    main()
