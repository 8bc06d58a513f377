"""`ray job submit` entrypoint: run the whole pipeline (or some stages) from one config.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/pipeline.py -c jobs/configs/movielens.yaml [--stage train] [--set k=v]

Inside a job RAY_ADDRESS is set, so the stages connect to the cluster.
"""

from __future__ import annotations

import sys

from msr_ray.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--stage" in args:
        at = args.index("--stage")
        sys.exit(main([args[at + 1], *args[:at], *args[at + 2 :]]))
    sys.exit(main(["pipeline", *args]))
