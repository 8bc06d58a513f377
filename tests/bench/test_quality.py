"""`bench/quality.py --smoke`: the sampled protocol end to end on tiny models."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_quality_bench_runs_its_protocol_and_prints_paired_intervals(tmp_path):
    command = [
        sys.executable,
        "bench/quality.py",
        "--smoke",
        "--ablation-users=3",
        "--arms=direct-summaries",
        f"--run-dir={tmp_path / 'bench'}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench" / "mllm-msr" / "quality.json").read_text())
    assert report["arms"]["mllm-msr"]["users"] == 6
    assert report["arms"]["direct-summaries"]["users"] == 3
    assert report["arms"]["direct-summaries"]["seconds"]["summarize-items"] == 0  # reused
    assert {m: r["users"] for m, r in report["baselines"].items()} == {
        "popularity": 30,
        "sasrec": 30,
        "gru4rec": 30,
        "popularity-sampled": 6,
        "sasrec-sampled": 6,
        "gru4rec-sampled": 6,
    }
    assert set(report["metrics"]["all"]) == {"mllm-msr", *report["baselines"]}
    assert report["metrics"]["ablation_users"]["direct-summaries"]["test"]["groups"] == 3
    assert len(report["paired_auc"]) == 6 + 7
    assert "direct-summaries - mllm-msr:" in done.stdout and "(3 users)" in done.stdout
