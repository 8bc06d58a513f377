"""Items/s of the summarize-items stage (actor pool of 2, batched) vs a naive loop (batch 1).

Same 200 MovieLens-1M items (with their real posters), same embedded MLLM, one run:

    .venv/bin/python bench/items.py [--dataset ../shared/datasets/movielens-1m] [--items 200]

``--smoke`` runs the same code on the tiny MLLM with 4 items (the test suite runs it).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from msr_ray.config import load_config
from msr_ray.data.readers import READERS
from msr_ray.method.item_summaries import plan_item
from msr_ray.models.generation import generate
from msr_ray.models.loading import load_model
from msr_ray.run.cluster import init_ray
from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import RunDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="../shared/datasets/movielens-1m")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="tiny MLLM, 4 items")
    args = parser.parse_args()
    if args.smoke:
        args.items, args.max_new_tokens, args.batch_size = 4, 4, 2

    raw = READERS["movielens"](args.dataset)
    items = raw.items.sort_by("item_id").slice(0, args.items)
    run_dir = tempfile.mkdtemp(prefix="msr-bench-items-")
    config = load_config(
        None,
        [
            f"run_dir={run_dir}",
            "domain=movie",
            "items.mode=fused",
            f"mllm.max_new_tokens={args.max_new_tokens}",
            f"items.batch_size={args.batch_size}",
            "items.min_actors=2",
            "items.max_actors=2",
            "items.resources.num_cpus=1",
            *(["mllm.name=tiny"] if args.smoke else []),
        ],
    )
    with RunDir(run_dir).stage_output("dataset") as out:
        out.write_table(items, "items.parquet")

    loaded = load_model(config.mllm, "mllm")
    start = time.perf_counter()
    naive_tokens = 0
    for row in items.to_pylist():
        plan = plan_item(row, "fused", "text-only", "movie", config.prepare.max_image_side)
        naive_tokens += generate(loaded, [plan.request], config.mllm)[0].generated_tokens
    naive_s = time.perf_counter() - start
    del loaded

    init_ray(num_cpus=2)
    start = time.perf_counter()
    summary = run_stage("summarize-items", config)
    stage_s = time.perf_counter() - start

    n = items.num_rows
    print(
        f"{config.mllm.name} MLLM, items={n} max_new_tokens={args.max_new_tokens} batch_size={args.batch_size}"
    )
    print(
        f"naive loop (1 process, batch 1): {n / naive_s:.3f} items/s ({naive_s:.1f}s, "
        f"{naive_tokens / naive_s:.1f} generated tok/s)"
    )
    print(
        f"stage (2 actors, batched):       {n / stage_s:.3f} items/s ({stage_s:.1f}s incl. "
        f"actor start-up, {summary['generated_tokens_per_s']} generated tok/s)"
    )
    print(f"ratio: {(n / stage_s) / (n / naive_s):.2f}x")


if __name__ == "__main__":
    main()
