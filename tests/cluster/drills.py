"""Node-loss drills on a multi-node Ray cluster on this machine (``ray.cluster_utils``).

Run as ``python -m tests.cluster.drills <drill>[,<drill>...] <tmp dir>``, in a process of
its own so the cluster is not the test session's Ray. Each drill builds a head and 2 worker nodes, runs a
stage on tiny models, removes the node of one of its actors mid-stage, and prints one JSON
line: what the test compares (the table against an uninterrupted run's) and the seconds
from the removal to the stage's end.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil
import ray
from ray.cluster_utils import Cluster

from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import RunDir
from tests.stages.conftest import tiny_config, write_dataset

ITEMS = {f"i{n}": f"A clip about topic {n % 4}." for n in range(12)}
HISTORIES = {f"u{n}": [f"i{(n + j) % 12}" for j in range(3 + n % 6)] for n in range(10)}


CLUSTERS: list[Cluster] = []


def start_cluster() -> Cluster:
    """A head that runs the driver only (no CPUs) and 2 worker nodes of 2 CPUs; a later
    drill in the same process gets the same cluster, with a node added for the one lost."""
    if CLUSTERS:
        cluster = CLUSTERS[0]
        while len(cluster.worker_nodes) < 2:
            cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        return cluster
    # A lost node is declared dead after 3 missed 1 s health checks (Ray's default waits
    # longer), so the drills spend their time recovering, not waiting.
    fast_health_checks = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "_system_config": fast_health_checks},
    )
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


ITEM_COLUMNS = ["item_id", "summary", "error"]
USER_COLUMNS = ["user_id", "step", "summary"]


def table(run_dir: Path, stage: str, columns: list[str]) -> list[list]:
    t = RunDir(str(run_dir)).read_table(stage).select(columns)
    return sorted(map(list, zip(*(t[c].to_pylist() for c in columns), strict=True)))


def stage_losing_a_node(cluster: Cluster, command: str, config, title: str, ready) -> tuple:
    """Run a stage while the node of one of its actors (``ray::<title>``) is removed once
    ``ready()``: the stage's summary, the node removed and the seconds from the removal to
    the stage's end."""
    removal: dict = {}
    remover = threading.Thread(target=lambda: removal.update(remove_node_of(cluster, title, ready)))
    remover.start()
    summary = run_stage(command, config)
    ended = time.perf_counter()
    remover.join()
    seconds = ended - removal["removed_at"] if removal["removed_at"] else None
    return summary, {"removed_node": removal["node"], "seconds_after_removal": seconds}


def against_an_uninterrupted_run(tmp: Path, command: str, stage: str, settings, title, write):
    """The stage run clean, then run again losing a node once its first parts are written;
    the summary of the second, the removal, and whether both tables are equal."""
    clean, drilled = tmp / "clean", tmp / "drilled"
    for run_dir in (clean, drilled):
        write(RunDir(str(run_dir)))
    cluster = start_cluster()
    run_stage(command, tiny_config(clean, *settings))
    parts = drilled / "_parts" / stage

    def parts_written() -> bool:
        return parts.exists() and any(parts.rglob("*.parquet"))

    summary, removal = stage_losing_a_node(
        cluster, command, tiny_config(drilled, *settings), title, parts_written
    )
    columns = ITEM_COLUMNS if stage == "item_summaries" else USER_COLUMNS
    equal = table(clean, stage, columns) == table(drilled, stage, columns)
    return summary, {**removal, "equal": equal}


def users_drill(tmp: Path) -> dict:
    def write(run: RunDir) -> None:
        write_dataset(run, HISTORIES, ITEMS)

    # Shards take a CPU share, so none can land on the head (it has no CPUs): each runs
    # on a worker node, and the drill always finds one to remove.
    settings = ["users.num_shards=3", "users.max_batch_size=2", "users.resources.num_cpus=0.5"]
    summary, result = against_an_uninterrupted_run(
        tmp, "summarize-users", "user_summaries", settings, "UserShard", write
    )
    return {**result, "summaries": summary["summaries"]}


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
        "train.epochs=4",
        "train.learning_rate=0.02",
        "train.max_failures=1",
        "train.max_valid_groups=2",
    )
    cluster = start_cluster()
    storage = run_dir / "_parts" / "train"

    def checkpointed() -> bool:
        """Ray Train's controller has registered a checkpoint (it writes its snapshot when
        it does): the node goes during a later epoch, which resumes from that checkpoint."""
        for snapshot in storage.glob("*/checkpoint_manager_snapshot.json"):
            try:
                if json.loads(snapshot.read_text()).get("latest_checkpoint_result"):
                    return True
            except ValueError:  # caught mid-write
                continue
        return False

    summary, removal = stage_losing_a_node(cluster, "train", config, "RayTrainWorker", checkpointed)
    logs = sorted((run_dir / "train_logs").glob("epoch-*.jsonl"))
    resumed = {
        json.loads(line)["resumed_at_epoch"]
        for log in logs
        for line in log.read_text().splitlines()
    }
    return {
        **removal,
        "final_epoch": summary["final"]["epoch"],
        "resumed_at_epochs": sorted(resumed),
    }


def items_drill(tmp: Path) -> dict:
    def write(run: RunDir) -> None:  # a dataset whose items are still to summarize
        write_dataset(run, {"u": ["i0"]}, {f"i{n}": f"Clip {n}" for n in range(40)})
        shutil.rmtree(run.path("item_summaries"))

    settings = ["items.batch_size=2", "items.min_actors=2", "items.max_actors=2"]
    summary, result = against_an_uninterrupted_run(
        tmp, "summarize-items", "item_summaries", settings, "MapWorker", write
    )
    return {**result, "items": summary.get("items")}


DRILLS = {"users": users_drill, "train": train_drill, "items": items_drill}


def main(names: list[str], tmp: Path) -> dict:
    """Run the named drills in order on one cluster; their results by name."""
    return {name: DRILLS[name](tmp / name) for name in names}


if __name__ == "__main__":
    try:
        result = main(sys.argv[1].split(","), Path(sys.argv[2]))
    finally:
        ray.shutdown()
        for cluster in CLUSTERS:
            cluster.shutdown()
    print("\nDRILL " + json.dumps(result), flush=True)
