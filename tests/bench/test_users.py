"""`bench/users.py --smoke`: the lockstep-vs-sequential benchmark still runs."""

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import shared_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_the_users_bench_prints_its_ratio():
    dataset = shared_dataset("movielens-1m")
    command = [sys.executable, "bench/users.py", "--smoke", f"--dataset={dataset}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "users=4 history=9" in done.stdout
    assert re.search(
        r"sequential \(1 shard, one generate call per user block, 12 calls\)", done.stdout
    )
    assert re.search(r"ratio: \d+\.\d\dx", done.stdout)
