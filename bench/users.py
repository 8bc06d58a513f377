"""Users/s of lockstep batched shards vs per-user sequential generate calls.

Both arms run the `summarize-users` stage through the pipeline: one shard with
``users.max_batch_size=1`` (a generate call per user block) against ``--shards`` shards
that batch every ready user of a round into one call.

Same embedded LLM, the same 100 MovieLens-1M users with 9-item histories (3 blocks of 3),
item descriptions from the genres; one run:

    .venv/bin/python bench/users.py [--dataset ../shared/datasets/movielens-1m] [--users 100]

``--smoke`` runs the same code on the tiny LLM with 4 users (the test suite runs it).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.config import load_config
from msr_ray.data.schemas import ITEM_SUMMARIES, SEQUENCES
from msr_ray.run.cluster import init_ray
from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import RunDir

HISTORY = 9


def _write_subset(source: RunDir, target: RunDir, users: int) -> int:
    items, sequences = (
        source.read_table("dataset", f) for f in ("items.parquet", "sequences.parquet")
    )
    chosen = sorted(set(sequences["user_id"].to_pylist()), key=int)[:users]
    seq = sequences.filter(pc.is_in(sequences["user_id"], value_set=pa.array(chosen)))
    rows = []
    for user in chosen:
        mine = [r for r in seq.filter(pc.equal(seq["user_id"], user)).to_pylist()]
        for pos, row in enumerate(mine[:HISTORY] + mine[-2:]):
            split = "train" if pos < HISTORY else ("valid" if pos == HISTORY else "test")
            rows.append({**row, "position": pos, "split": split})
    summaries = [
        {
            "item_id": r["item_id"],
            "summary": f"A movie. {r['text']}",
            "error": None,
            "model": "genres",
            "prompt_version": "bench",
            "prompt_tokens": 0,
            "generated_tokens": 0,
        }
        for r in items.select(["item_id", "text"]).to_pylist()
    ]
    with target.stage_output("dataset") as out:
        out.write_table(items, "items.parquet")
        out.write_table(pa.Table.from_pylist(rows, schema=SEQUENCES), "sequences.parquet")
    with target.stage_output("item_summaries") as out:
        out.write_table(pa.Table.from_pylist(summaries, schema=ITEM_SUMMARIES))
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="../shared/datasets/movielens-1m")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="tiny LLM, 4 users")
    args = parser.parse_args()
    if args.smoke:
        args.users, args.max_new_tokens = 4, 4

    base = tempfile.mkdtemp(prefix="msr-bench-users-")
    common = [
        f"llm.max_new_tokens={args.max_new_tokens}",
        "domain=movie",
        "prepare.source=movielens",
        f"prepare.path={args.dataset}",
        *(["llm.name=tiny"] if args.smoke else []),
    ]
    source = load_config(None, [f"run_dir={base}/source", *common])
    run_stage("prepare", source)
    sequential = load_config(
        None,
        [f"run_dir={base}/sequential", *common, "users.num_shards=1", "users.max_batch_size=1"],
    )
    lockstep = load_config(
        None,
        [
            f"run_dir={base}/lockstep",
            *common,
            f"users.num_shards={args.shards}",
            f"users.max_batch_size={args.max_batch_size}",
        ],
    )
    n = _write_subset(RunDir(source.run_dir), RunDir(sequential.run_dir), args.users)
    _write_subset(RunDir(source.run_dir), RunDir(lockstep.run_dir), args.users)

    init_ray(num_cpus=2)
    start = time.perf_counter()
    one_by_one = run_stage("summarize-users", sequential)
    sequential_s = time.perf_counter() - start
    start = time.perf_counter()
    summary = run_stage("summarize-users", lockstep)
    lockstep_s = time.perf_counter() - start

    print(f"users={n} history={HISTORY} block_size=3 max_new_tokens={args.max_new_tokens}")
    print(
        f"sequential (1 shard, one generate call per user block, "
        f"{one_by_one['generate_calls']} calls): {n / sequential_s:.3f} users/s "
        f"({sequential_s:.1f}s incl. shard start-up)"
    )
    print(
        f"lockstep ({args.shards} shards, {summary['generate_calls']} calls, mean batch "
        f"{summary['mean_batch_size']}): {n / lockstep_s:.3f} users/s ({lockstep_s:.1f}s incl. "
        "shard start-up)"
    )
    print(f"ratio: {(n / lockstep_s) / (n / sequential_s):.2f}x")


if __name__ == "__main__":
    main()
