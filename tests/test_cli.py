import json

import pytest
import yaml
from click.testing import CliRunner

from msr_ray.cli import main
from msr_ray.run.registry import STAGES
from msr_ray.run.rundir import RunDir

COMMANDS = [
    "prepare",
    "summarize-items",
    "summarize-users",
    "build-samples",
    "train",
    "evaluate",
    "pipeline",
    "demo",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--config" in result.output and "--set" in result.output


def test_every_stage_has_a_command():
    assert {s.command for s in STAGES} <= set(main.commands)


def test_every_stage_descriptor_is_a_command_with_its_help_and_options(tmp_path):
    for stage in STAGES:
        command = main.commands[stage.command]
        assert command.help == stage.help
        flags = {flag for param in command.params for flag in param.opts}
        assert {"--config", "--set", "--run-dir", "--force", "--address"} <= flags
        assert {option.flag for option in stage.options} <= flags
    # A stage's own option overrides the config key its descriptor names.
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["prepare", "--run-dir", str(run_dir), "--source", "synthetic", "--path", "x"]
    )
    assert result.exit_code == 0, result.output
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())["prepare"]
    assert (recorded["source"], recorded["path"]) == ("synthetic", "x")
    assert "prepare: done" in result.output and "users 60, items kept" in result.output


def test_stage_error_is_one_line_without_traceback(tmp_path):
    result = CliRunner().invoke(main, ["summarize-users", "--run-dir", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "run `msr-ray prepare` first" in lines[0]


def test_bad_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prepare:\n  sauce: x\n")
    result = CliRunner().invoke(main, ["prepare", "-c", str(bad)])
    assert result.exit_code == 1
    assert "prepare.sauce" in result.output and "Traceback" not in result.output


def test_a_deprecated_key_is_one_warning_line_on_the_console(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(
        "evaluate: {num_actors: 3}\nprepare: {synthetic: {num_users: 20, num_items: 20}}\n"
    )
    result = CliRunner().invoke(main, ["prepare", "-c", str(old), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    warning, line = result.output.strip().splitlines()
    assert warning == (
        "Warning: config key 'evaluate.num_actors' is deprecated and will be removed in the "
        "next release; 'evaluate.num_actors: 3' was read as min_actors: 3, max_actors: 3"
    )
    assert line.startswith("prepare: done in ")
    assert "max_actors: 3" in (tmp_path / "r" / "config.yaml").read_text()


def test_prepare_writes_config_summary_and_skips_second_time(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "prepare",
        "--run-dir",
        str(run_dir),
        "--set",
        "prepare.synthetic.num_users=20",
        "--set",
        "prepare.synthetic.num_items=20",
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    # One result line; the full summary is in summaries/.
    (line,) = first.output.strip().splitlines()
    assert line.startswith("prepare: done in ") and "(users 20, items kept" in line
    assert line.endswith(str(RunDir(str(run_dir)).output_path("dataset")))
    summary = json.loads((run_dir / "summaries" / "dataset.json").read_text())
    assert summary["skipped"] is False and summary["users"] == 20
    assert (run_dir / "config.yaml").read_text().count("num_users: 20") == 1
    before = sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
    second = CliRunner().invoke(main, args)
    assert second.output.startswith("prepare: current, skipped")
    # A current stage is skipped without writing anything: no log, no lock, no summary.
    assert sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*")) == before
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.output.startswith("prepare: done in ")


def test_a_relative_run_dir_is_recorded_absolute(tmp_path, monkeypatch):
    # Other processes (Ray Train workers run in the session's artifacts dir) reopen run_dir.
    monkeypatch.chdir(tmp_path)
    args = ["prepare", "--run-dir", "runs/rel", "--set", "prepare.synthetic.num_users=20"]
    args += ["--set", "prepare.synthetic.num_items=20"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    recorded = yaml.safe_load((tmp_path / "runs" / "rel" / "config.yaml").read_text())
    assert recorded["run_dir"] == str(tmp_path / "runs" / "rel")
