import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from msr_ray.run.rundir import NotARunDirectory, RunDir, RunDirLocked


def _table(n: int) -> pa.Table:
    return pa.table({"x": list(range(n))})


def test_stage_output_commits_and_seals(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    assert not run.is_complete("stage")
    with run.stage_output("stage", {"rows": 3}, fingerprint="abc") as out:
        out.write_table(_table(3))
        assert not run.is_complete("stage")
    assert run.is_complete("stage")
    marker = run.completion("stage")
    assert marker["rows"] == 3 and marker["fingerprint"] == "abc"
    assert marker["files"] == ["part-00000.parquet"]
    assert run.read_table("stage").num_rows == 3


def test_crash_mid_write_leaves_nothing_complete_and_rerun_completes(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    with pytest.raises(RuntimeError), run.stage_output("stage") as out:
        out.write_table(_table(2))
        raise RuntimeError("crash")
    assert not run.is_complete("stage")
    assert list((tmp_path / "run" / "stage").iterdir()) == []
    with run.stage_output("stage") as out:
        out.write_table(_table(4))
    assert run.read_table("stage").num_rows == 4


def test_crash_while_replacing_keeps_previous_output(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    with run.stage_output("stage") as out:
        out.write_table(_table(1))
    with pytest.raises(KeyboardInterrupt), run.stage_output("stage") as out:
        out.write_table(_table(9))
        raise KeyboardInterrupt
    assert run.is_complete("stage")
    assert run.read_table("stage").num_rows == 1


def test_replacing_commits_the_new_version_and_deletes_the_old(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    with run.stage_output("stage") as out:
        out.write_table(_table(1))
    first = run.completion("stage")["version"]
    with run.stage_output("stage") as out:
        out.write_table(_table(5))
        # Until the commit, readers see the old version only.
        assert run.read_table("stage").num_rows == 1
    second = run.completion("stage")["version"]
    assert second != first
    assert run.read_table("stage").num_rows == 5
    folders = sorted(p.name for p in (tmp_path / "run" / "stage").iterdir())
    assert folders == ["_COMPLETE.json", second]


def test_files_of_a_killed_build_are_never_read_and_are_removed(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    with run.stage_output("stage") as out:
        out.write_table(_table(2))
    version = run.completion("stage")["version"]
    # A stray file inside the committed version and a killed build's version folder.
    (tmp_path / "run" / "stage" / version / "stray.parquet").write_bytes(b"junk")
    killed = tmp_path / "run" / "stage" / "v00000000000000000001-dead00"
    killed.mkdir()
    (killed / "part-00000.parquet").write_bytes(b"junk")
    assert run.read_table("stage").num_rows == 2
    with run.stage_output("stage") as out:
        assert not killed.exists()
        out.write_table(_table(3))


def test_parts_are_keyed(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    assert run.read_parts("users", "a") is None
    run.append_part(_table(2), "users", "a")
    run.append_part(_table(3), "users", "a")
    run.append_part(_table(7), "users", "b")
    assert run.read_parts("users", "a").num_rows == 5
    assert run.read_parts("users", "b").num_rows == 7
    run.drop_parts("users")
    assert run.read_parts("users", "a") is None


def test_json_and_uri(tmp_path):
    run = RunDir(f"file://{tmp_path}/run")
    run.write_json({"a": 1}, "summaries", "x.json")
    assert run.read_json("summaries", "x.json") == {"a": 1}
    assert (tmp_path / "run" / "summaries" / "x.json").exists()
    assert run.uri_of("summaries", "x.json") == f"{tmp_path}/run/summaries/x.json"
    assert run.ray_storage("_parts") == {
        "storage_path": f"{tmp_path}/run/_parts",
        "storage_filesystem": None,
    }


def test_folders_are_listed_and_copied_out_resolved_to_their_version(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    with run.stage_output("train") as out:
        out.write_bytes(b"weights", "adapter/model.bin")
        out.write_bytes(b"{}", "adapter/config.json")
    run.write_text("x", "baselines", "sasrec", "metrics.json")
    run.write_text("y", "baselines", "notes.txt")
    assert run.list_dirs("baselines") == ["sasrec"]
    assert run.list_files("baselines") == ["notes.txt"]
    assert run.list_dirs("missing") == [] == run.list_files("missing")
    copied = run.copy_dir("train", "adapter", to=str(tmp_path / "local"))
    assert sorted(os.listdir(copied)) == ["config.json", "model.bin"]
    assert (tmp_path / "local" / "model.bin").read_bytes() == b"weights"


def test_nested_stage_outputs_are_independent(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    for model in ("a", "b"):
        with run.stage_output(f"scores/{model}") as out:
            out.write_table(_table(2))
    assert run.is_complete("scores/a") and run.is_complete("scores/b")
    assert sorted(p.name for p in (tmp_path / "run" / "scores").iterdir()) == ["a", "b"]
    assert run.read_table("scores", "a").num_rows == 2


def test_a_folder_that_is_not_a_run_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "config.yaml").write_text("mine")
    (folder / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(NotARunDirectory, match="not an msr-ray run directory"):
        RunDir(str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "holiday.jpg"]
    assert (folder / "config.yaml").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    RunDir(str(empty))  # an empty folder becomes a run
    RunDir(str(empty))  # and reopens as one


_HOLD = """
import sys, time
from msr_ray.run.rundir import RunDir
with RunDir(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(60)
"""


def test_one_writer_at_a_time(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirLocked, match=f"pid {holder.pid}"), run.lock():
            pass
    finally:
        holder.kill()
        holder.wait()
    with run.lock(), run.lock():  # free again once the holder died; re-entrant
        (tmp_path / "run" / "stage").mkdir()


def test_lock_removes_leftover_temporary_files(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    (tmp_path / "run" / "summaries").mkdir()
    leftover = tmp_path / "run" / "summaries" / ".tmp-1234abcd"
    leftover.write_text(json.dumps({}))
    with run.lock():
        assert not leftover.exists()


def test_read_table_reads_only_the_columns_asked(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    table = pa.table({"item_id": ["a", "b"], "image_bytes": [b"x" * 10, b"y"]})
    with run.stage_output("dataset") as out:
        out.write_table(table, "items.parquet")
        out.write_table(table.slice(1), "part-a.parquet")
        out.write_table(table.slice(0, 1), "part-b.parquet")
    assert run.read_table("dataset", "items.parquet", columns=["item_id"]).to_pydict() == {
        "item_id": ["a", "b"]
    }
    assert run.read_table("dataset").num_columns == 2
