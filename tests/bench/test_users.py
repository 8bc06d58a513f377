"""`bench/users.py --smoke`: the lockstep-vs-sequential benchmark still runs."""

import re

from tests.conftest import shared_dataset


def test_the_users_bench_prints_its_ratio(bench):
    out = bench("users", "--smoke", f"--dataset={shared_dataset('movielens-1m')}")
    assert "users=4 history=9" in out
    assert re.search(r"sequential \(1 shard, one generate call per user block, 12 calls\)", out)
    assert re.search(r"ratio: \d+\.\d\dx", out)
