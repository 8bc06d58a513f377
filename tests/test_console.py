"""The console of a pipeline run: one line per stage, then the metrics table."""

from msr_ray.run.registry import STAGES


def test_a_pipeline_prints_one_line_per_stage_and_the_table(tiny_pipeline):
    done, run_dir = tiny_pipeline
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
