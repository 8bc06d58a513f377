"""Commands pointed at wrong paths, broken filesystems and too-small data: one Error line,
nothing written where nothing should be."""

import errno
import os

import pyarrow as pa
import pytest
from click.testing import CliRunner

from msr_ray.cli import filesystem_error, main
from msr_ray.data.schemas import USER_SUMMARIES, DataError
from msr_ray.export import export_model
from msr_ray.run.provenance import BuildContext
from msr_ray.run.rundir import NotARunDirectory, RunDir
from msr_ray.stages import samples
from tests.stages.conftest import tiny_config, write_dataset


def _one_error_line(result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_status_of_a_mistyped_run_path_creates_nothing(tmp_path):
    typo = tmp_path / "runs" / "dmeo"
    line = _one_error_line(CliRunner().invoke(main, ["status", "--run-dir", str(typo)]))
    assert "not an msr-ray run directory" in line and "nothing was created" in line
    assert not (tmp_path / "runs").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_error_line(CliRunner().invoke(main, ["status", "--run-dir", str(empty)]))
    assert os.listdir(empty) == []


def test_the_filesystem_root_as_run_directory_is_one_clear_error():
    line = _one_error_line(CliRunner().invoke(main, ["prepare", "--run-dir", "/"]))
    assert "is not empty and is not an msr-ray run directory" in line


@pytest.mark.parametrize(
    ("code", "advice"),
    [(errno.EROFS, "read-only filesystem"), (errno.ENOSPC, "the disk is full")],
)
def test_a_read_only_or_full_filesystem_is_one_error_line_that_says_what_to_do(
    tmp_path, monkeypatch, code, advice
):
    def refuse(self):
        raise OSError(code, os.strerror(code), self.path("_LOCK"))

    monkeypatch.setattr(RunDir, "_local_lock", refuse)
    line = _one_error_line(
        CliRunner().invoke(main, ["prepare", "--run-dir", str(tmp_path / "run")])
    )
    assert advice in line and "_LOCK" in line
    # pyarrow's filesystems put the errno in the message only
    assert "disk is full" in filesystem_error(OSError("[Errno 28] No space left on device"))
    assert filesystem_error(OSError("something else")) is None


def test_a_dataset_too_small_for_one_training_pair_refuses_to_seal_samples(tmp_path):
    config = tiny_config(tmp_path / "run")
    run = RunDir(config.run_dir)
    items = {f"i{n}": "x" for n in range(30)} | {"held-valid": "x", "held-test": "x"}
    write_dataset(run, {"u": ["i0"], "v": ["i1"]}, items)  # 3 interactions each
    rows = [
        {"user_id": u, "step": 1, "summary": "s", "model": "m", "prompt_version": "v",
         "mode": "recurrent", "block_size": 3, "prompt_tokens": 0, "generated_tokens": 0}
        for u in ("u", "v")
    ]  # fmt: skip
    with run.stage_output("user_summaries", fingerprint="f") as out:
        out.write_table(pa.Table.from_pylist(rows, schema=USER_SUMMARIES), "s.parquet")
    with pytest.raises(DataError, match="0 training rows .*longest train history has 1 items"):
        samples.build(BuildContext(config, run, "samples", "x"))
    assert not run.is_complete("samples")


def test_export_to_a_dangling_link_fails_before_anything_loads(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    link = tmp_path / "out"
    os.symlink(tmp_path / "nowhere", link)
    with pytest.raises(FileExistsError, match="symbolic link"):
        export_model(run, str(link))  # the run has no train stage: the target is checked first
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(NotARunDirectory):
        RunDir(str(tmp_path / "missing"), create=False)
    assert not (tmp_path / "missing").exists()
