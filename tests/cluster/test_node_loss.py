"""Losing a node mid-stage on a 3-node Ray cluster (head + 2 workers, one machine): the
stage completes, and its table equals an uninterrupted run's (see drills.py)."""

import json
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
    lines = [line for line in done.stdout.splitlines() if line.startswith("DRILL ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(lines[-1].removeprefix("DRILL "))
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
    assert result["final_epoch"] == 2
    assert result["resumed_at_epochs"][-1] >= 1  # the last epochs ran after a restore
