"""The documented cluster flow on loopback: `ray start --head` from the project's
virtualenv, `ray job submit` of the pipeline (tiny models), `serve deploy` of its
recommender, one answer, then that cluster is stopped (only that one).

The cluster keeps Ray's token authentication with a token of its own, written to a temp
file and named by ``RAY_AUTH_TOKEN_PATH``: nothing is read from ``~/.ray``, so the test
passes on a machine that never ran Ray, in any test order.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from msr_ray.models.cache import cache_root
from tests.stages.conftest import TINY_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOB_SETTINGS = [
    *TINY_SETTINGS,
    "samples.eval_negatives=5",
    "users.num_shards=1",
    "train.num_workers=1",
    "train.resources.num_cpus=0.5",
    "evaluate.max_actors=1",
    "evaluate.bootstrap_samples=20",
]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run(*command: str, env: dict, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(c) for c in command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _stop_cluster(temp_dir: str) -> None:
    """Stop the processes of this cluster only (`ray stop` would stop every Ray here)."""
    mine = []
    for process in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in process.info["cmdline"] or []):
            mine.append(process)
    for process in mine:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=5)
    for process in alive:
        process.kill()


@pytest.fixture
def head(tmp_path_factory):
    """A `ray start --head` cluster on free ports, started with the virtualenv on PATH."""
    temp_dir = os.path.join(tempfile.gettempdir(), f"msr-ray-job-{os.getpid()}")
    names = [
        "port", "dashboard-port", "ray-client-server-port", "node-manager-port",
        "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "metrics-export-port", "runtime-env-agent-port", "serve",
    ]  # fmt: skip
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    # The cluster and its clients (job, serve) share this test's own token, and run with
    # an empty home: only the model cache is kept.
    token = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {
        **os.environ,
        "HOME": str(tmp_path_factory.mktemp("home")),
        "MSR_RAY_CACHE": str(cache_root(None)),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }
    for inherited in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(inherited, None)
    options = [f"--{name}={port}" for name, port in ports.items() if name != "serve"]
    _run(
        BIN / "ray", "start", "--head", "--num-cpus=2", "--include-dashboard=true",
        "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
        *options, env=env, timeout=120,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{ports['dashboard-port']}", ports["serve"], env
    finally:
        _stop_cluster(temp_dir)


def test_job_submit_then_serve_deploy_answers(head, tmp_path):
    address, serve_port, env = head
    run_dir = tmp_path / "run"
    command = ["python", "jobs/pipeline.py", "--run-dir", str(run_dir)]
    for setting in JOB_SETTINGS:
        command += ["--set", setting]
    job = f"msr-ray-test-{os.getpid()}"
    _run(
        BIN / "ray", "job", "submit", "--address", address, "--submission-id", job,
        "--working-dir", ".", "--runtime-env", "jobs/runtime_env.yaml", "--no-wait", "--",
        *command, env=env,
    )  # fmt: skip
    deadline, status = time.monotonic() + 600, ""
    while time.monotonic() < deadline:
        status = _run(BIN / "ray", "job", "status", "--address", address, job, env=env)
        if any(end in status.lower() for end in ("succeeded", "failed", "stopped")):
            break
        time.sleep(3)
    logs = _run(BIN / "ray", "job", "logs", "--address", address, job, env=env)
    stranger = subprocess.run(
        [str(BIN / "ray"), "job", "status", "--address", address, job],
        env={**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stranger.returncode != 0, "the cluster answered a client with another token"
    assert "succeeded" in status.lower(), logs[-4000:]
    assert "evaluate: done" in logs and "Run directory:" in logs

    config = yaml.safe_load((ROOT / "serve_configs" / "recommender.yaml").read_text())
    config["http_options"]["port"] = serve_port
    app = config["applications"][0]
    app["args"]["run_dir"] = str(run_dir)
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 0.5
    deployed = tmp_path / "serve.yaml"
    deployed.write_text(yaml.safe_dump(config))
    _run(BIN / "serve", "deploy", deployed, "--address", address, env=env)

    assert json.loads((run_dir / "summaries" / "eval.json").read_text())["stage"] == "evaluate"
    request = {"user_id": _a_user(run_dir), "candidates": _two_items(run_dir), "top_k": 2}
    deadline, answer = time.monotonic() + 180, None
    while time.monotonic() < deadline:
        try:
            post = urllib.request.Request(
                f"http://127.0.0.1:{serve_port}/recommend",
                json.dumps(request).encode(),
                {"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(post, timeout=60) as response:
                answer = (response.status, json.loads(response.read()))
                break
        except OSError:
            time.sleep(2)
    assert answer is not None and answer[0] == 200
    assert len(answer[1]["ranking"]) == 2 and answer[1]["explanation"]


def _a_user(run_dir: Path) -> str:
    from msr_ray.run.rundir import RunDir

    return RunDir(str(run_dir)).read_table("user_summaries")["user_id"][0].as_py()


def _two_items(run_dir: Path) -> list[str]:
    from msr_ray.run.rundir import RunDir

    return RunDir(str(run_dir)).read_table("dataset", "items.parquet")["item_id"][:2].to_pylist()
