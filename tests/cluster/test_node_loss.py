"""Losing a node mid-stage on a 3-node Ray cluster (head + 2 workers, one machine): the
stage completes, and its table equals an uninterrupted run's (see drills.py)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def drills(tmp_path_factory) -> dict:
    """The three drills in one process, on one cluster (a fresh node replaces each lost)."""
    return drill("users,items,train", tmp_path_factory.mktemp("drills"))


def drill(names: str, tmp_path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "tests.cluster.drills", names, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = re.findall(r"DRILL (\{.*\})", done.stdout)  # Ray's lines may share its line
    assert done.returncode == 0 and found, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads(found[-1])
    for name, result in results.items():
        assert result["removed_node"], f"{name}: no worker node held an actor of the stage"
    return results


def test_users_and_items_stages_survive_losing_a_node(drills):
    users, items = drills["users"], drills["items"]
    assert users["equal"] and users["summaries"] > 0
    assert items["equal"] and items["items"] == 40


def test_training_resumes_from_the_checkpoint_after_losing_a_worker_node(drills):
    result = drills["train"]
    # The node goes a few seconds after epoch 0's checkpoint, so at least the last epochs
    # ran in workers restored from a checkpoint (epochs are seconds long here).
    assert result["final_epoch"] == 3
    assert result["resumed_at_epochs"][0] == 0 and result["resumed_at_epochs"][-1] >= 1
