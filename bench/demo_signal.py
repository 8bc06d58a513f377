"""What the synthetic demo world allows, and what each stage of a run on it kept.

    .venv/bin/python bench/demo_signal.py --ceilings

needs no run: at the demo's size (``msr_ray/configs/demo.yaml``) and for 3 seeds, straight
from the generator, the test AUC (and the lower end of its 95% interval) of (a) a perfect
reader of the user's current genre plus the items' popularity, (b) the genre counts of the
whole training history, (c) popularity alone. (a) must lie between 0.80 and 0.93: near 1.0
the world is too easy to tell models apart, near 0.6 it cannot show learning.

    .venv/bin/python bench/demo_signal.py [--run-dir runs/demo]

for a finished run on the synthetic dataset (``make demo``): the share of item summaries
that name their item's genre, of final user summaries that name the user's current genre
(and that name only wrong ones), of switchers' final summaries that name the new genre,
and what the recommender's scores follow: genre match or item popularity
(``msr_ray.data.synthetic_signal``; the demo's report shows the same figures).
"""

from __future__ import annotations

import argparse
from importlib import resources

import numpy as np

from msr_ray.config import load_config
from msr_ray.data.synthetic_signal import CEILINGS, ceilings
from msr_ray.evaluation.report import synthetic_survival
from msr_ray.run.rundir import RunDir

SEEDS = (0, 1, 2)
CEILING_RANGE = (0.80, 0.93)


def _interval(aucs: list[float]) -> tuple[float, float]:
    mean = float(np.mean(aucs))
    return mean, mean - 1.96 * float(np.std(aucs)) / np.sqrt(len(aucs))


def print_ceilings() -> bool:
    """The ceilings table; True when ranker (a) lies in ``CEILING_RANGE`` for every seed."""
    demo = load_config(resources.files("msr_ray") / "configs" / "demo.yaml")
    base = demo.prepare.synthetic
    print(
        f"demo world: {base.num_users} users, {base.num_items} items, histories "
        f"{base.min_history}-{base.max_history}, {demo.samples.eval_negatives} negatives"
    )
    print("seed | " + " | ".join(f"({'abc'[n]}) {name}" for n, name in enumerate(CEILINGS)))
    ok = True
    for seed in SEEDS:
        result = ceilings(base.model_copy(update={"seed": seed}), demo.samples.eval_negatives)
        cells = []
        for name in CEILINGS:
            mean, low = _interval(result[name])
            cells.append(f"{mean:.3f} ({low:.3f})")
        perfect = float(np.mean(result[CEILINGS[0]]))
        ok &= CEILING_RANGE[0] <= perfect <= CEILING_RANGE[1]
        print(f"{seed:4d} | " + " | ".join(cells))
    print(f"test AUC (lower end of its 95% interval); (a) must lie in {CEILING_RANGE}: {ok}")
    return ok


def print_survival(run_dir: str) -> None:
    """The signal-survival figures of a finished synthetic run (as its report shows them)."""
    figures = synthetic_survival(RunDir(run_dir))
    if figures is None:
        raise SystemExit(f"{run_dir} holds no dataset built from the synthetic generator")
    for key, value in figures.items():
        print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument(
        "--ceilings", action="store_true", help="print the generator's ceilings; needs no run"
    )
    args = parser.parse_args()
    if args.ceilings:
        raise SystemExit(0 if print_ceilings() else 1)
    print_survival(args.run_dir)


if __name__ == "__main__":
    main()
