"""Served recommender under bounded load on loopback: latency, throughput, batching, a kill.

    .venv/bin/python bench/serving.py --run-dir runs/demo      # any run that was evaluated

Serves the run (the Recommender ingress, Scorer replicas and the ProfileUpdater) on
127.0.0.1:8000 and sends real HTTP
requests, each one test user's candidate list (``--candidates``, 21 = the paper's 1
positive + 20 negatives), from closed-loop clients. Prints, measured in this one run:

1. p50/p99 latency and requests/s at 1, 4 and 16 concurrent clients (1 Scorer replica),
   and beside the 1-client line a two-stage request (no candidates: the run's kept
   ``--retriever`` proposes its top 20 of the whole catalogue, which are reranked);
2. cross-request batching on (``max_batch_requests`` 8) against off (1), at 4 clients;
3. a kill drill: 2 Scorer replicas under 4 clients, one killed; requests failed (the
   ingress retries the calls the dead replica held) and the seconds until 2 replicas
   answer again.

``--smoke`` runs the same code with 1 and 2 clients, one request each, and a 5 s kill
drill (the test suite runs it on a tiny run). ``--two-stage-only`` measures the two
1-client lines alone. The run must keep the retriever (``msr-ray baseline --model sasrec``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.error
import urllib.request

import ray
from ray import serve

from msr_ray.config import ServeConfig
from msr_ray.evaluation.baselines.kept import KeptBaseline
from msr_ray.run.cluster import init_ray
from msr_ray.run.method_inputs import trained_config
from msr_ray.run.rundir import RunDir
from msr_ray.serving.app import RecommenderIngress
from msr_ray.serving.scorer import Scorer
from msr_ray.serving.updater import ProfileUpdater

URL = "http://127.0.0.1:8000/recommend"


def payloads(run: RunDir, candidates: int) -> list[bytes]:
    """One request body per test user: its first ``candidates`` test candidates."""
    groups: dict[str, list[dict]] = {}
    for row in run.read_table("scores", "mllm-msr").to_pylist():
        if row["split"] == "test":
            groups.setdefault(row["group"], []).append(row)
    return [
        json.dumps(
            {"user_id": rows[0]["user_id"], "candidates": [r["item_id"] for r in rows[:candidates]]}
        ).encode()
        for rows in groups.values()
    ]


def two_stage_payloads(retriever: str) -> list[bytes]:
    """The same users' two-stage bodies: no candidates, ``retriever``'s top 20 reranked."""
    users = [json.loads(body)["user_id"] for body in PAYLOADS]
    return [json.dumps({"user_id": u, "retriever": retriever, "n": 20}).encode() for u in users]


def deploy(run_dir: str, replicas: int, batch: int) -> None:
    settings = ServeConfig(run_dir=run_dir, max_batch_requests=batch, batch_wait_s=0.02)
    args = settings.model_dump()
    updater = ProfileUpdater.options(ray_actor_options={"num_cpus": 0}).bind()
    resources = {"num_cpus": SCORER_CPUS}
    scorer = Scorer.options(num_replicas=replicas, ray_actor_options=resources).bind(args)
    app = RecommenderIngress.options(ray_actor_options={"num_cpus": 0}).bind(updater, scorer, args)
    serve.run(app, name="recommender", route_prefix="/")
    post(PAYLOADS[0])  # warm up: the first forward pass of a replica is slower


def post(body: bytes) -> int:
    request = urllib.request.Request(URL, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def load(
    clients: int,
    per_client: int | None,
    seconds: float | None = None,
    bodies: list[bytes] | None = None,
) -> list[tuple]:
    """Closed-loop clients sending ``bodies`` (default: the candidate lists); (start,
    latency_s, status) of every request."""
    bodies = bodies or PAYLOADS
    results: list[tuple] = []
    stop_at = time.perf_counter() + seconds if seconds else None

    def client(n: int) -> None:
        sent = 0
        while (per_client is None or sent < per_client) and (
            stop_at is None or time.perf_counter() < stop_at
        ):
            body = bodies[(n * 7 + sent) % len(bodies)]
            start = time.perf_counter()
            status = post(body)
            results.append((start, time.perf_counter() - start, status))
            sent += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summary(results: list[tuple]) -> str:
    latencies = sorted(r[1] for r in results if r[2] == 200)
    span = max(r[0] + r[1] for r in results) - min(r[0] for r in results)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    failed = sum(r[2] != 200 for r in results)
    return (
        f"p50 {statistics.median(latencies):.2f} s, p99 {p99:.2f} s, "
        f"{len(latencies) / span:.2f} requests/s ({len(results)} requests, {failed} failed)"
    )


def kill_drill(run_dir: str, seconds: float, clients: int) -> str:
    """Kill one of 2 replicas under load: failed requests, and time until 2 answer again."""
    deploy(run_dir, replicas=2, batch=8)
    killed_at: list[float] = []
    recovered_at: list[float] = []

    def replicas() -> set[str]:
        return {
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if "Scorer" in a["name"] and a["namespace"] == "serve"
        }

    def killer() -> None:
        time.sleep(seconds / 3)
        before = replicas()
        victim = sorted(before)[0]
        killed_at.append(time.perf_counter())
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        while True:  # a new replica, and Serve reports 2 running and healthy
            status = serve.status().applications["recommender"].deployments["Scorer"]
            fresh = replicas() - before
            if (
                fresh
                and status.replica_states.get("RUNNING", 0) == 2
                and status.status == "HEALTHY"
            ):
                recovered_at.append(time.perf_counter())
                return
            time.sleep(0.2)

    thread = threading.Thread(target=killer)
    thread.start()
    results = load(clients, None, seconds)
    thread.join()
    failed = sum(r[2] != 200 for r in results)
    with urllib.request.urlopen(URL.rsplit("/", 1)[0] + "/stats", timeout=60) as response:
        retried = json.loads(response.read()).get("scoring_retried", 0)
    return (
        f"{len(results)} requests, {failed} failed ({retried} scoring calls retried on the "
        f"other replica); 2 replicas RUNNING again "
        f"{recovered_at[0] - killed_at[0]:.1f} s after the kill"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--candidates", type=int, default=21)
    parser.add_argument("--per-client", type=int, default=4, help="requests per client")
    parser.add_argument("--kill-seconds", type=float, default=90)
    parser.add_argument("--kill-only", action="store_true", help="run the kill drill alone")
    parser.add_argument("--retriever", default="sasrec", help="the two-stage request's")
    parser.add_argument(
        "--two-stage-only", action="store_true", help="the 1-client rerank and two-stage alone"
    )
    parser.add_argument("--smoke", action="store_true", help="1-2 clients, a 5 s kill drill")
    args = parser.parse_args()
    clients = (1, 2) if args.smoke else (1, 4, 16)
    busy = clients[1]  # the clients of the batching-off and kill-drill measurements
    global PAYLOADS, SCORER_CPUS
    if args.smoke:  # half a CPU per replica: the smoke shares the test session's Ray
        args.per_client, args.kill_seconds, SCORER_CPUS = 1, 5, 0.5
    run = RunDir(args.run_dir)
    run.require("eval")
    PAYLOADS = payloads(run, args.candidates)
    retriever = trained_config(run).baselines.output_name(args.retriever)
    items = len(KeptBaseline.read(run, retriever).items)  # refuses a run that did not keep it
    two_stage = two_stage_payloads(args.retriever)
    init_ray()
    print(f"{args.candidates} candidates per request, HTTP on 127.0.0.1", flush=True)
    if not args.kill_only:
        deploy(run.root, replicas=1, batch=8)
        for n in clients[:1] if args.two_stage_only else clients:
            figures = summary(load(n, args.per_client))
            print(f"1 replica, batching on, {n:2d} clients: {figures}", flush=True)
            if n == 1:
                post(two_stage[0])  # warm up: the ingress loads the retriever on first use
                figures = summary(load(1, args.per_client, bodies=two_stage))
                label = f"two-stage ({retriever} top 20 of {items} items + rerank)"
                print(f"1 replica, batching on,  1 clients, {label}: {figures}", flush=True)
        if args.two_stage_only:
            serve.shutdown()
            return
        deploy(run.root, replicas=1, batch=1)
        figures = summary(load(busy, args.per_client))
        print(f"1 replica, batching off, {busy:2d} clients: {figures}", flush=True)
    drill = kill_drill(run.root, args.kill_seconds, busy)
    print(f"kill drill (2 replicas, {busy} clients): {drill}")
    serve.shutdown()


PAYLOADS: list[bytes] = []
SCORER_CPUS = 1.0  # a Scorer replica's CPUs: 2 replicas take a 2-core machine

if __name__ == "__main__":
    main()
