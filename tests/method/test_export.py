"""`msr-ray export` writes a merged folder that reproduces evaluate's scores elsewhere."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from msr_ray.cli import main
from msr_ray.models import prompts
from msr_ray.run.pipeline import run_stage

_SCORE = """
import json, sys
from transformers import AutoModelForImageTextToText, AutoProcessor
folder, run_dir, config_path = sys.argv[1:4]
AutoProcessor.from_pretrained(folder, local_files_only=True)
AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
from msr_ray.config import load_config
from msr_ray.method.recommender import Recommender
from msr_ray.run.method_inputs import candidate_rows
from msr_ray.run.rundir import RunDir
config = load_config(config_path, [f"mllm.name={folder}", "mllm.dtype=float32"])
rows = candidate_rows(RunDir(run_dir), config, ("test",)).slice(0, 12).to_pylist()
scores = Recommender.load(config, None).score(rows)
print(json.dumps([[r["group"], r["item_id"], s] for r, s in zip(rows, scores)]))
"""


def test_export_loads_alone_and_reproduces_evaluate(trained, tmp_path):
    config, run, _ = trained
    run_stage("evaluate", config)  # skipped when an earlier test ran it
    out = tmp_path / "export"
    result = CliRunner().invoke(main, ["export", "--run-dir", run.root, "--out", str(out)])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "msr_ray_recommender.json").read_text())
    assert (
        settings["prompt_version"] == prompts.RECOMMEND_PROMPT_VERSION
        and settings["base_model"] == "tiny"
    )
    card = (out / "README.md").read_text()
    assert "## Metrics" in card and "mllm-msr, test" in card and "auc" in card
    adapter_config = Path(run.output_path("train", "adapter", "adapter_config.json"))
    adapter = json.loads(adapter_config.read_text())
    assert adapter["base_model_name_or_path"] == "tiny"  # not this machine's cache path
    # A fresh process with only the folder (and the run's candidate rows).
    config_path = tmp_path / "config.yaml"
    config_path.write_text(run.read_text("train", "config.yaml"))
    done = subprocess.run(
        [sys.executable, "-c", _SCORE, str(out), run.root, str(config_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scored = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {
        (r["group"], r["item_id"]): r["score"]
        for r in run.read_table("scores", "mllm-msr").to_pylist()
    }
    assert len(scored) == 12
    for group, item, score in scored:
        assert score == pytest.approx(expected[(group, item)], abs=1e-4)
    again = CliRunner().invoke(main, ["export", "--run-dir", run.root, "--out", str(out)])
    assert again.exit_code == 1 and "not empty" in again.output
