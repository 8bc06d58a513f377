"""The pipeline on an ``s3://`` run directory, against a local S3 server (moto) on loopback."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from msr_ray.run.method_inputs import adapter_dir
from msr_ray.run.pipeline import run_pipeline, run_stage
from msr_ray.run.rundir import RunDir, RunDirLocked, StaleLockTakenOver
from tests.stages.conftest import TINY_SETTINGS, tiny_config

SETTINGS = [
    "samples.eval_negatives=5",
    "users.num_shards=1",
    "train.num_workers=1",
    "train.micro_batch_size=4",
    "train.resources.num_cpus=0.5",
    "evaluate.max_actors=1",
    "evaluate.bootstrap_samples=50",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 with one bucket; yields host:port."""
    port = _free_port()
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        pafs.S3FileSystem(
            access_key="test",
            secret_key="test",
            endpoint_override=endpoint,
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        ).create_dir("runs")
        yield endpoint
    finally:
        proc.kill()
        proc.wait()


def _uri(endpoint: str, name: str) -> str:
    return f"s3://test:test@runs/{name}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def test_pipeline_runs_on_s3_and_resumes_after_a_kill(
    s3_endpoint, tmp_path, ray_session, monkeypatch
):
    """A pipeline on S3, killed while it summarizes users, resumes to the end once its
    lock's lease runs out; its user summaries equal those of an uninterrupted (local) run
    of the same stages."""
    monkeypatch.setenv("MSR_RAY_LOCK_LEASE_S", "4")  # the killed command's and ours
    uri = _uri(s3_endpoint, "killed")
    config = tiny_config(uri, *SETTINGS)
    command = [sys.executable, "-m", "msr_ray.cli", "pipeline", "--run-dir", uri]
    for setting in [*TINY_SETTINGS, *SETTINGS]:
        command += ["--set", setting]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = RunDir(uri)
    try:
        deadline = time.monotonic() + 240
        while not run.exists("_parts", "user_summaries"):
            assert proc.poll() is None, "the pipeline ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not run.is_complete("user_summaries")
    # The killed command's lock object is still there: refused while its heartbeat is
    # fresh, taken over (with a warning naming it) once the lease has run out.
    with pytest.raises(RunDirLocked, match="last heartbeat was"):
        run_pipeline(config)
    time.sleep(4.5)
    with pytest.warns(StaleLockTakenOver, match=r"cli\.py pipeline"):
        summaries = run_pipeline(config)
    assert [s["stage"] for s in summaries][-1] == "evaluate"
    users = next(s for s in summaries if s["stage"] == "summarize-users")
    assert users["skipped_already_done"] > 0
    assert run.is_complete("eval") and run.exists("train", run.completion("train")["version"])
    test_groups = run.completion("samples")["groups_by_split"]["test"]
    assert run.read_json("eval", "metrics.json")["mllm-msr"]["test"]["groups"] == test_groups > 0
    assert run_pipeline(config)[-1]["skipped"] is True  # current: nothing recomputed
    # Outputs are named by URI, without the credentials and options the run URI holds.
    assert summaries[-1]["output"].startswith("s3://runs/killed/eval/v")
    assert all("test:test" not in s["output"] and "?" not in s["output"] for s in summaries)
    adapter = Path(adapter_dir(run))  # the trained adapter copied down for serving
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in adapter.iterdir()
    }

    clean = config.model_copy(update={"run_dir": str(tmp_path / "clean")})
    for stage in ("prepare", "summarize-items", "summarize-users"):
        run_stage(stage, clean)
    columns = ["user_id", "step", "summary"]
    order = [("user_id", "ascending"), ("step", "ascending")]
    resumed = run.read_table("user_summaries").select(columns).sort_by(order)
    uninterrupted = RunDir(clean.run_dir).read_table("user_summaries").select(columns)
    assert resumed.num_rows > 0 and resumed.equals(uninterrupted.sort_by(order))


def test_an_s3_lock_heartbeats_and_a_dead_holders_lock_is_taken_over(s3_endpoint, monkeypatch):
    monkeypatch.setenv("MSR_RAY_LOCK_LEASE_S", "0.9")
    run = RunDir(_uri(s3_endpoint, "lease"))
    with run.lock():
        first = run.read_json("_LOCK")["heartbeat"]
        time.sleep(1.0)
        assert run.read_json("_LOCK")["heartbeat"] > first  # refreshed while held
        with pytest.raises(RunDirLocked, match="last heartbeat was"):
            with RunDir(_uri(s3_endpoint, "lease"))._exclusive():
                pass
    assert not run.exists("_LOCK")
    dead = {"host": "gone", "pid": 4242, "command": "msr-ray train", "since": 1.0}
    run.write_json({**dead, "heartbeat": time.time() - 5}, "_LOCK")  # a killed holder's
    with pytest.warns(StaleLockTakenOver, match=r"`msr-ray train` \(pid 4242 on gone"):
        with run.lock():
            assert run.read_json("_LOCK")["pid"] == os.getpid()
    assert not run.exists("_LOCK")
