"""User-summary variants on a synthetic run, side by side: which keep the current genre.

    .venv/bin/python bench/summaries.py --run-dir runs/demo \
        --variant default= --variant sampled=llm.do_sample=true,llm.temperature=0.6

Reads the run's dataset and item summaries (``make demo`` makes both) and, for each
variant (a name and comma-separated config overrides of the run's config), runs the
recurrent preference summarizer of ``summarize-users`` in this process (no Ray, batches
of ``users.max_batch_size``) over every user's training history. Prints, per variant, the
share of final summaries that name the user's current genre, that name only wrong genres,
the share of switchers' final summaries that name the new genre, the mean summary length,
and the seconds it took (``msr_ray.data.synthetic_signal``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from msr_ray.config import parse_config, with_overrides
from msr_ray.data.histories import train_histories
from msr_ray.data.schemas import USER_SUMMARIES
from msr_ray.data.synthetic_signal import survival
from msr_ray.method.preferences import PreferenceSummarizer, UserState, apply
from msr_ray.run.method_inputs import history_catalog
from msr_ray.run.rundir import RunDir


def summarize_all(summarizer: PreferenceSummarizer, histories: dict[str, list[str]]) -> list[dict]:
    """Every user's summaries, round by round as the shards advance, in batches."""
    states = {user: UserState(history) for user, history in histories.items() if history}
    rows: list[dict] = []
    batch = summarizer.cfg.max_batch_size
    while True:
        work = [(u, s, step) for u, s in states.items() for step in summarizer.ready_steps(s)]
        if not work:
            return rows
        for start in range(0, len(work), batch):
            done = summarizer.summarize(work[start : start + batch])
            apply(states, done)
            rows += done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--variant", action="append", default=[], help="NAME=k=v,k=v")
    parser.add_argument("--show", type=int, default=3, help="final summaries printed per variant")
    args = parser.parse_args()
    run = RunDir(args.run_dir)
    base = parse_config(run.read_text("config.yaml"), run.path("config.yaml"))
    sequences = run.read_table("dataset", "sequences.parquet")
    histories = train_histories(sequences)
    catalog = history_catalog(run)
    print(f"{len(histories)} users, block size {base.users.block_size}")
    for variant in args.variant or ["default="]:
        name, _, overrides = variant.partition("=")
        config = with_overrides(base, [o for o in overrides.split(",") if o])
        start = time.perf_counter()
        rows = summarize_all(PreferenceSummarizer(config, catalog), histories)
        seconds = time.perf_counter() - start
        table = pa.Table.from_pylist(rows, schema=USER_SUMMARIES)
        figures = survival(config.prepare.synthetic, sequences, user_summaries=table)
        finals: dict[str, tuple[int, str]] = {}
        for row in rows:
            if row["step"] >= finals.get(row["user_id"], (0, ""))[0]:
                finals[row["user_id"]] = (row["step"], row["summary"])
        words = np.mean([len(s.split()) for _, s in finals.values()])
        print(
            f"{name:12s} current {figures['users_naming_current']:.2f}  only wrong "
            f"{figures['users_naming_only_wrong']:.2f}  switchers' new "
            f"{figures.get('switchers_naming_new', 0):.2f} ({figures['switchers']})  "
            f"{words:.0f} words  {seconds:.0f} s"
        )
        for user in sorted(finals)[: args.show]:
            print(f"    {user}: {finals[user][1][:300]!r}")


if __name__ == "__main__":
    main()
