import pyarrow as pa
import pytest

from msr_ray.rundir import RunDir


def _table(n: int) -> pa.Table:
    return pa.table({"x": list(range(n))})


def test_stage_output_commits_and_seals(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    assert not run.is_complete("stage")
    with run.stage_output("stage", {"rows": 3}) as out:
        out.write_table(_table(3))
        assert not run.is_complete("stage")
    assert run.is_complete("stage")
    assert run.completion("stage")["rows"] == 3
    assert run.read_table("stage").num_rows == 3


def test_crash_mid_write_leaves_nothing_complete_and_rerun_completes(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    with pytest.raises(RuntimeError), run.stage_output("stage") as out:
        out.write_table(_table(2))
        raise RuntimeError("crash")
    assert not run.is_complete("stage")
    assert not run.exists("stage")
    assert [p.name for p in (tmp_path / "run").iterdir()] == []
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


def test_parts_append_and_invalidate(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    assert run.read_parts("users") is None
    run.append_part(_table(2), "users")
    run.append_part(_table(3), "users")
    assert run.read_parts("users").num_rows == 5
    run.invalidate("users")
    assert run.read_parts("users") is None


def test_json_and_uri(tmp_path):
    run = RunDir(f"file://{tmp_path}/run")
    run.write_json({"a": 1}, "summaries", "x.json")
    assert run.read_json("summaries", "x.json") == {"a": 1}
    assert (tmp_path / "run" / "summaries" / "x.json").exists()


def test_nested_stage_outputs_are_independent(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    for model in ("a", "b"):
        with run.stage_output(f"scores/{model}") as out:
            out.write_table(_table(2))
    assert run.is_complete("scores/a") and run.is_complete("scores/b")
    assert sorted(p.name for p in (tmp_path / "run" / "scores").iterdir()) == ["a", "b"]
