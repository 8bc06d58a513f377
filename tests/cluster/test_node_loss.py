"""Losing a node mid-stage on a 3-node Ray cluster (head + 2 workers, one machine): the
stage completes, and its table equals an uninterrupted run's (see drills.py)."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def drill(name: str, tmp_path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "tests.cluster.drills", name, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = re.findall(r"DRILL (\{.*\})", done.stdout)  # Ray's lines may share its line
    assert done.returncode == 0 and found, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(found[-1])
    assert result["removed_node"], "no worker node held an actor of the stage"
    return result


def test_users_stage_survives_losing_a_shard_node(tmp_path):
    result = drill("users", tmp_path)
    assert result["equal"] and result["summaries"] > 0


def test_items_stage_survives_losing_an_actor_node(tmp_path):
    result = drill("items", tmp_path)
    assert result["equal"] and result["items"] == 40


def test_training_resumes_from_the_checkpoint_after_losing_a_worker_node(tmp_path):
    result = drill("train", tmp_path)
    assert result["final_epoch"] == 1
    assert result["resumed_at_epochs"] == [0, 1]  # epoch 1 ran again from epoch 0's checkpoint
