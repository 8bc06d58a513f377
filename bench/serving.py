"""Served recommender: cross-request batching on vs off, on the same requests, in one run.

    .venv/bin/python bench/serving.py --run-dir runs/demo      # any run with a trained adapter

Deploys the run's recommender twice on one replica - ``max_batch_requests`` 1, then 8 -
sends the same ``--requests`` concurrent requests (each a test user's first
``--candidates`` test candidates) through a deployment handle, and prints requests/s of
both, the ratio, and whether both gave the same rankings.
"""

from __future__ import annotations

import argparse
import time

from ray import serve

from msr_ray.cluster import init_ray
from msr_ray.config import ServeConfig
from msr_ray.rundir import RunDir
from msr_ray.serving.app import Recommender


def payloads(run: RunDir, count: int, candidates: int) -> list[dict]:
    """Requests built from the run's test candidate lists, cycling over users."""
    scores = run.read_table("scores", "mllm-msr").to_pylist()
    groups: dict[str, list[dict]] = {}
    for row in scores:
        if row["split"] == "test":
            groups.setdefault(row["group"], []).append(row)
    lists = [rows[:candidates] for rows in groups.values()]
    return [
        {"user_id": rows[0]["user_id"], "candidates": [r["item_id"] for r in rows]}
        for rows in (lists[n % len(lists)] for n in range(count))
    ]


def measure(run_dir: str, batch: int, requests: list[dict]) -> tuple[float, list[list[str]]]:
    """Requests/s of one deployment answering every request concurrently; its rankings."""
    settings = ServeConfig(run_dir=run_dir, max_batch_requests=batch, batch_wait_s=0.05)
    app = Recommender.options(num_replicas=1, ray_actor_options={"num_cpus": 1}).bind(
        settings.model_dump()
    )
    handle = serve.run(app, name=f"bench-{batch}", route_prefix=None)
    handle.recommend.remote(requests[0]).result()  # warm up: model loaded, first forward done
    start = time.perf_counter()
    answers = [r.result() for r in [handle.recommend.remote(p) for p in requests]]
    seconds = time.perf_counter() - start
    serve.delete(f"bench-{batch}")
    return len(requests) / seconds, [[r["item_id"] for r in a["ranking"]] for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=5)
    args = parser.parse_args()
    run = RunDir(args.run_dir)
    run.require("eval", "evaluate")
    requests = payloads(run, args.requests, args.candidates)
    init_ray()
    one, one_rankings = measure(run.root, 1, requests)
    batched, batched_rankings = measure(run.root, 8, requests)
    serve.shutdown()
    same = sum(a == b for a, b in zip(one_rankings, batched_rankings, strict=True))
    print(f"{len(requests)} concurrent requests x {args.candidates} candidates, 1 replica")
    print(f"batch 1: {one:.2f} requests/s; batch 8: {batched:.2f} requests/s")
    print(f"ratio: {batched / one:.2f}x; identical rankings: {same}/{len(requests)}")


if __name__ == "__main__":
    main()
