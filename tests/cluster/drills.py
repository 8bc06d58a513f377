"""Node-loss drills on a multi-node Ray cluster on this machine (``ray.cluster_utils``).

Run as ``python -m tests.cluster.drills <drill> <tmp dir>``, one process per drill so the
cluster is not the test session's Ray. Each drill builds a head and 2 worker nodes, runs a
stage on tiny models, removes the node of one of its actors mid-stage, and prints one JSON
line: what the test compares (the table against an uninterrupted run's) and the seconds
from the removal to the stage's end.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import psutil
import ray
from ray.cluster_utils import Cluster

from msr_ray.pipeline import run_stage
from msr_ray.rundir import RunDir
from tests.stages.conftest import tiny_config, write_dataset

ITEMS = {f"i{n}": f"A clip about topic {n % 4}." for n in range(12)}
HISTORIES = {f"u{n}": [f"i{(n + j) % 12}" for j in range(3 + n % 6)] for n in range(10)}


CLUSTERS: list[Cluster] = []


def start_cluster() -> Cluster:
    """A head that runs the driver only (no CPUs) and 2 worker nodes of 2 CPUs."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    CLUSTERS.append(cluster)
    return cluster


def worker_node_of(cluster: Cluster, title: str):
    """A worker node running an actor process titled ``ray::<title>...``: actor processes
    are children of their node's raylet (read off the process table, no state API lag)."""
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in cluster.worker_nodes}
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if not command.startswith(f"ray::{title}"):
            continue
        try:
            for parent in process.parents():
                if parent.pid in raylets:
                    return raylets[parent.pid]
        except psutil.NoSuchProcess:
            continue
    return None


def remove_node_of(cluster: Cluster, title: str, ready) -> dict:
    """Once ``ready()``, remove a worker node that runs an actor titled ``ray::<title>``."""
    while not ready():
        time.sleep(0.2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        node = worker_node_of(cluster, title)
        if node is not None:
            node_id = node.node_id
            cluster.remove_node(node)
            return {"removed_at": time.perf_counter(), "node": node_id}
        time.sleep(0.2)
    return {"removed_at": None, "node": None}


def table(run_dir: Path, stage: str, keys: list[str], columns: list[str]) -> list[list]:
    t = RunDir(str(run_dir)).read_table(stage).select(columns)
    return sorted(map(list, zip(*(t[c].to_pylist() for c in columns), strict=True)))


def users_drill(tmp: Path) -> dict:
    settings = ["users.num_shards=3", "users.max_batch_size=2"]
    clean, drilled = tmp / "clean", tmp / "drilled"
    for run_dir in (clean, drilled):
        write_dataset(RunDir(str(run_dir)), HISTORIES, ITEMS)
    cluster = start_cluster()
    run_stage("summarize-users", tiny_config(clean, *settings))
    parts = drilled / "_parts" / "user_summaries"
    removal: dict = {}
    remover = threading.Thread(
        target=lambda: removal.update(
            remove_node_of(
                cluster, "UserShard", lambda: parts.exists() and any(parts.rglob("*.parquet"))
            )
        )
    )
    remover.start()
    summary = run_stage("summarize-users", tiny_config(drilled, *settings))
    ended = time.perf_counter()
    remover.join()
    columns = ["user_id", "step", "summary"]
    return {
        "removed_node": removal["node"],
        "seconds_after_removal": ended - removal["removed_at"] if removal["removed_at"] else None,
        "summaries": summary["summaries"],
        "equal": table(clean, "user_summaries", columns, columns)
        == table(drilled, "user_summaries", columns, columns),
    }


def train_drill(tmp: Path) -> dict:
    from tests.conftest import write_easy_task

    run_dir = tmp / "train"
    run = RunDir(str(run_dir))
    write_easy_task(run)
    config = tiny_config(
        run_dir,
        "train.num_workers=2",
        "train.placement_strategy=SPREAD",
        "train.resources.num_cpus=0.5",
        "train.epochs=2",
        "train.learning_rate=0.02",
        "train.max_failures=1",
        "train.max_valid_groups=2",
    )
    cluster = start_cluster()
    storage = run_dir / "_parts" / "train"
    removal: dict = {}

    seen: list[float] = []

    def checkpointed() -> bool:
        """Epoch 0's checkpoint is written, and Ray Train's controller (which polls every
        2 s) has had time to register it: the node goes during epoch 1."""
        if not seen and storage.exists() and any(storage.rglob("checkpoint_*")):
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] > 5

    remover = threading.Thread(
        target=lambda: removal.update(remove_node_of(cluster, "RayTrainWorker", checkpointed))
    )
    remover.start()
    summary = run_stage("train", config)
    ended = time.perf_counter()
    remover.join()
    logs = sorted((run_dir / "train_logs").glob("epoch-*.jsonl"))
    resumed = {
        json.loads(line)["resumed_at_epoch"]
        for log in logs
        for line in log.read_text().splitlines()
    }
    return {
        "removed_node": removal["node"],
        "seconds_after_removal": ended - removal["removed_at"] if removal["removed_at"] else None,
        "final_epoch": summary["final"]["epoch"],
        "resumed_at_epochs": sorted(resumed),
    }


def items_drill(tmp: Path) -> dict:
    settings = ["items.batch_size=2", "items.min_actors=2", "items.max_actors=2"]
    clean, drilled = tmp / "clean", tmp / "drilled"
    items = {f"i{n}": f"Clip {n}" for n in range(40)}
    for run_dir in (clean, drilled):
        write_dataset(RunDir(str(run_dir)), {"u": ["i0"]}, items)
        RunDir(str(run_dir)).fs.delete_dir(RunDir(str(run_dir)).path("item_summaries"))
    cluster = start_cluster()
    run_stage("summarize-items", tiny_config(clean, *settings))
    parts = drilled / "_parts" / "item_summaries"
    removal: dict = {}
    remover = threading.Thread(
        target=lambda: removal.update(
            remove_node_of(
                cluster, "MapWorker", lambda: parts.exists() and any(parts.rglob("*.parquet"))
            )
        )
    )
    remover.start()
    summary = run_stage("summarize-items", tiny_config(drilled, *settings))
    ended = time.perf_counter()
    remover.join()
    columns = ["item_id", "summary", "error"]
    return {
        "removed_node": removal["node"],
        "seconds_after_removal": ended - removal["removed_at"] if removal["removed_at"] else None,
        "items": summary.get("items"),
        "equal": table(clean, "item_summaries", columns, columns)
        == table(drilled, "item_summaries", columns, columns),
    }


DRILLS = {"users": users_drill, "train": train_drill, "items": items_drill}

if __name__ == "__main__":
    try:
        result = DRILLS[sys.argv[1]](Path(sys.argv[2]))
    finally:
        ray.shutdown()
        for cluster in CLUSTERS:
            cluster.shutdown()
    print("\nDRILL " + json.dumps(result), flush=True)
