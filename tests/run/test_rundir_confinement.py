"""A hostile run directory (edited markers, links) never touches anything outside the run."""

import json
import os

import pyarrow as pa
import pytest

from msr_ray.run.rundir import COMPLETE_MARKER, OutsideRunDirectory, RunDir


def _sealed(run: RunDir, stage: str = "report") -> None:
    with run.stage_output(stage, fingerprint="f") as out:
        out.write_table(pa.table({"x": [1]}))


def _victim(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    return victim


def test_a_marker_naming_a_path_as_its_version_is_refused_and_nothing_is_deleted(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    _sealed(run)
    victim = _victim(tmp_path)
    marker_path = tmp_path / "run" / "report" / COMPLETE_MARKER
    marker = json.loads(marker_path.read_text())
    marker["version"] = "../../victim"
    marker_path.write_text(json.dumps(marker))
    with pytest.raises(OutsideRunDirectory, match=r"report/_COMPLETE.json.*'\.\./\.\./victim'"):
        _sealed(run)
    with pytest.raises(OutsideRunDirectory):
        run.read_table("report")
    assert (victim / "keep.txt").read_text() == "precious"
    marker_path.unlink()  # what the error says to do: the stage then rebuilds
    _sealed(run)
    assert run.read_table("report").num_rows == 1
    assert (victim / "keep.txt").read_text() == "precious"


def test_a_linked_lock_file_is_refused_and_its_target_keeps_its_bytes(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    target = tmp_path / "precious.txt"
    target.write_text("do not truncate")
    os.symlink(target, tmp_path / "run" / "_LOCK")
    with pytest.raises(OutsideRunDirectory, match="symbolic link"):
        with run.lock():
            pass
    assert target.read_text() == "do not truncate"


def test_cleanup_never_descends_into_a_linked_folder_nor_into_profiles(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / ".tmp-abcd1234").write_text("someone else's")
    os.symlink(foreign, tmp_path / "run" / "linked")
    served = [tmp_path / "run" / "profiles" / "events", tmp_path / "run" / "online_items" / "items"]
    for folder in served:
        folder.mkdir(parents=True)
        (folder / ".tmp-inflight").write_text("serving writes this without the lock")
    (tmp_path / "run" / ".tmp-left").write_text("a killed writer's")
    with run.lock():
        pass
    assert (foreign / ".tmp-abcd1234").exists()
    assert all((folder / ".tmp-inflight").exists() for folder in served)
    assert not (tmp_path / "run" / ".tmp-left").exists()


def test_a_stage_folder_linked_out_of_the_run_is_never_written_nor_deleted(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    _sealed(run)
    victim = _victim(tmp_path)
    os.symlink(victim, tmp_path / "run" / "samples")
    with pytest.raises(OutsideRunDirectory, match="outside the run directory"):
        _sealed(run, "samples")
    with pytest.raises(OutsideRunDirectory):
        run.write_text("x", "samples", "note.txt")
    assert sorted(os.listdir(victim)) == ["keep.txt"]


def test_a_path_climbing_out_with_dot_segments_is_refused(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    assert run.confined(run.path("report", "v1")) == run.path("report", "v1")
    with pytest.raises(OutsideRunDirectory):
        run.confined(run.path("..", "other"))
