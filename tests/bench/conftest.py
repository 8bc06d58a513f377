"""Running a bench script in the test process, and a finished run for the benches that
read one."""

import runpy
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench(capsys, monkeypatch, ray_session):
    """Run ``bench/<name>.py`` with ``args`` as a script in this process (the session's
    Ray: no second start-up); its stdout."""

    def run(name: str, *args: str) -> str:
        script = ROOT / "bench" / f"{name}.py"
        monkeypatch.setattr(sys, "argv", [str(script), *args])
        capsys.readouterr()
        runpy.run_path(str(script), run_name="__main__")
        return capsys.readouterr().out

    return run


@pytest.fixture
def finished_run(tiny_pipeline, tmp_path) -> str:
    """A copy of the tiny pipeline's finished run, without its logs and lock."""
    _, run_dir = tiny_pipeline
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("logs", ".lock"))
    return str(copy)
