"""bench/gpu_check.py, the prepared GPU check, run on CPU with its tiny preset."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_check_runs_every_part_of_the_model_layer_and_reports_it(tmp_path, capsys):
    out = tmp_path / "figures.json"
    argv = ["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--repeats", "1"]
    figures = _module().main([*argv, "--item-batch", "3", "--users", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == figures
    # Each part prints one line, its name and its figures, as they are measured; other
    # lines (a library's warning on first use) may come and go.
    printed = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines()
                   if line.split(" ", 1)[0] in ("items", "sft", "scoring"))  # fmt: skip
    assert {name: json.loads(line) for name, line in printed.items()} == {
        name: figures[name] for name in ("items", "sft", "scoring")
    }
    items, sft, scoring = figures["items"], figures["sft"], figures["scoring"]
    assert items["batch"] == 3 and 0 < items["generated_tokens"] <= 3 * 64
    assert items["generated_tokens_per_s"] > 0 and items["prompt_tokens"] > 3 * 20
    # One user's prefix + 4 candidates with posters; N excludes the embeddings.
    assert sft["candidates"] == 4 and sft["tokens"] > 4 * 20 and 0 < sft["mfu"] < 1
    expected = 4 * figures["language_model_parameters"] * sft["tokens"] / sft["seconds"] / 1e12
    assert sft["model_tflops_per_s"] == pytest.approx(expected)
    assert figures["language_model_parameters"] < figures["parameters"]
    assert scoring["candidates"] == 2 * 21 and scoring["max_score_difference"] < 1e-4
    assert scoring["speedup"] == pytest.approx(scoring["full_seconds"] / scoring["shared_seconds"])
