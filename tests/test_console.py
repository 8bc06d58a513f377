"""The console of a pipeline run: one line per stage, then the metrics table."""

import subprocess
import sys

from msr_ray.run.registry import STAGES
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
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "msr_ray.cli", "pipeline", "--run-dir", str(run_dir)]
    for setting in SETTINGS:
        command += ["--set", setting]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # Six result lines, the table, and the bars of items, users, train and evaluate; in a
    # pipe (not a terminal) each redraw of a bar is a line of its own.
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) <= 40, "\n".join(lines)
    results = [line for line in done.stdout.splitlines() if ": done in " in line]
    assert [line.split(":")[0] for line in results] == [s.command for s in STAGES]
    assert "rows train " in results[3] and "-> " in results[3]
    tail = done.stdout.strip().splitlines()
    assert tail[-1].startswith("Run directory: ") and tail[-3].startswith("model ")
    assert "mllm-msr" in tail[-2]
    for noise in ("INFO", "Failed to query Ray Train Controller", "FutureWarning", "{"):
        assert noise not in done.stdout + done.stderr, noise
    # What the console leaves out is filed in the run: the driver's records at INFO and up
    # (each stage's full summary) and the local workers' output files.
    assert tail[-1] == f"Run directory: {run_dir} (logs in {run_dir / 'logs'})"
    (driver_log,) = (run_dir / "logs").glob("pipeline-*Z.log")
    records = driver_log.read_text()
    for stage in STAGES:
        assert f" INFO msr_ray.run.pipeline: {stage.command}: {{" in records, stage.command
    (session,) = (run_dir / "logs" / "workers").iterdir()
    worker_files = sorted(p.name for p in session.iterdir())
    assert worker_files and all(n.startswith("worker-") for n in worker_files)
    assert any(n.endswith(".err") for n in worker_files)
