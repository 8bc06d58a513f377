"""`bench/quality.py --smoke`: the sampled protocol end to end on tiny models."""

import json


def test_the_quality_bench_runs_its_protocol_and_prints_paired_intervals(bench, tmp_path):
    out = bench(
        "quality",
        "--smoke",
        "--ablation-users=3",
        "--arms=direct-summaries",
        f"--run-dir={tmp_path / 'bench'}",
    )
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
    assert "direct-summaries - mllm-msr:" in out and "(3 users)" in out
