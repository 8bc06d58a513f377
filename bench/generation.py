"""Output tokens/s of batched generation vs one-by-one calls, embedded LLM, same prompts.

.venv/bin/python bench/generation.py [--prompts 16] [--max-new-tokens 128]

``--smoke`` runs the same code on the tiny LLM with 3 prompts (the test suite runs it).
"""

from __future__ import annotations

import argparse
import time

from msr_ray.config import ModelSpec
from msr_ray.models import prompts
from msr_ray.models.generation import ChatRequest, generate
from msr_ray.models.loading import load_model

TITLES = ["Toy Story", "Heat", "Fargo", "Casino", "Babe", "Clueless", "Sabrina", "Nixon"]


def _requests(n: int) -> list[ChatRequest]:
    out = []
    for k in range(n):
        block = [
            prompts.HistoryItem(TITLES[(k + j) % len(TITLES)], f"A film numbered {k + j}.")
            for j in range(3)
        ]
        out.append(ChatRequest(prompts.user_block_prompt("movie", str(k), block, None)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--smoke", action="store_true", help="tiny LLM, 3 prompts")
    args = parser.parse_args()
    if args.smoke:
        args.prompts, args.max_new_tokens = 3, 4
    model = "tiny" if args.smoke else "embedded"
    spec = ModelSpec(name=model, max_new_tokens=args.max_new_tokens)
    loaded = load_model(spec, "llm")
    requests = _requests(args.prompts)
    generate(loaded, requests[:2], spec)  # warm-up

    start = time.perf_counter()
    single = [generate(loaded, [r], spec)[0] for r in requests]
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = generate(loaded, requests, spec)
    batched_s = time.perf_counter() - start

    single_tokens = sum(g.generated_tokens for g in single)
    batched_tokens = sum(g.generated_tokens for g in batched)
    same = sum(a.text == b.text for a, b in zip(single, batched, strict=True))
    print(f"{model} LLM, prompts={args.prompts} max_new_tokens={args.max_new_tokens} threads=1")
    print(
        f"one-by-one: {single_tokens} tokens in {single_s:.2f}s = {single_tokens / single_s:.1f} tok/s"
    )
    print(
        f"batched:    {batched_tokens} tokens in {batched_s:.2f}s = {batched_tokens / batched_s:.1f} tok/s"
    )
    print(
        f"ratio: {(batched_tokens / batched_s) / (single_tokens / single_s):.2f}x "
        f"(identical outputs: {same}/{len(requests)})"
    )


if __name__ == "__main__":
    main()
