"""The console of a pipeline run: one line per stage, then the metrics table."""

import subprocess
import sys

from msr_ray.registry import STAGES
from tests.stages.conftest import TINY_SETTINGS

SETTINGS = [
    *TINY_SETTINGS,
    "samples.eval_negatives=5",
    "users.num_shards=1",
    "train.num_workers=1",
    "train.resources.num_cpus=0.5",
    "evaluate.max_actors=1",
    "evaluate.bootstrap_samples=50",
]


def test_a_pipeline_prints_one_line_per_stage_and_the_table(tmp_path):
    command = [sys.executable, "-m", "msr_ray.cli", "pipeline", "--run-dir", str(tmp_path / "run")]
    for setting in SETTINGS:
        command += ["--set", setting]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    # tqdm redraws its bar in place with \r: one console line per bar.
    assert len(lines) <= 25, "\n".join(lines)
    results = [line for line in done.stdout.splitlines() if ": done in " in line]
    assert [line.split(":")[0] for line in results] == [s.command for s in STAGES]
    assert "rows train " in results[3] and "-> " in results[3]
    tail = done.stdout.strip().splitlines()
    assert tail[-1].startswith("Run directory: ") and tail[-3].startswith("model ")
    assert "mllm-msr" in tail[-2]
    for noise in ("INFO", "Failed to query Ray Train Controller", "FutureWarning", "{"):
        assert noise not in done.stdout + done.stderr, noise
