import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pyarrow as pa
import pytest
from ray import serve

from msr_ray.config import ServeConfig
from msr_ray.data.schemas import USER_SUMMARIES
from msr_ray.run.pipeline import run_stage
from msr_ray.run.rundir import MissingStageOutput, RunDir
from msr_ray.serving.app import RecommenderIngress
from msr_ray.serving.scorer import Scorer
from msr_ray.serving.updater import ProfileUpdater

BASE = "http://127.0.0.1:8000"
URL = f"{BASE}/recommend"


# Ids a dataset keeps (msr_ray.data.ids) that a URL must carry intact.
UGLY_USERS = ["a b?c#d%2F&+'\"<x>", "ünï ☃ 🎬", "é"]


def _write_summaries(run: RunDir) -> None:
    rows = [
        {"user_id": user, "step": step, "summary": text, "model": "tiny"}
        for user in [f"u{u}" for u in range(8)] + UGLY_USERS
        for step, text in ((3, "Old taste."), (9, "Likes clips."))
    ]
    with run.stage_output("user_summaries") as out:
        out.write_table(pa.Table.from_pylist(rows, schema=USER_SUMMARIES), "summaries.parquet")


def _post(body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(URL, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _app(run: RunDir, scorers: int = 1, **settings):
    args = ServeConfig(run_dir=run.root, max_candidates=10, **settings).model_dump()
    updater = ProfileUpdater.options(ray_actor_options={"num_cpus": 0}).bind()
    scorer = Scorer.options(num_replicas=scorers, ray_actor_options={"num_cpus": 0.5}).bind(args)
    ingress = RecommenderIngress.options(ray_actor_options={"num_cpus": 0})
    return ingress.bind(updater, scorer, args)


@pytest.fixture(scope="module")
def served(trained):
    """One deployment for the tests that only read it (each counts its own requests)."""
    config, run, _ = trained
    run_stage("evaluate", config)  # skipped when an earlier test ran it
    _write_summaries(run)
    handle = serve.run(_app(run), name="recommender", route_prefix="/")
    yield run, handle
    serve.shutdown()


def test_served_ranking_equals_evaluate_scores_and_explains(served):
    run, handle = served
    before = handle.stats.remote().result()
    scores = run.read_table("scores", "mllm-msr").to_pylist()
    expected = {r["item_id"]: r["score"] for r in scores if r["group"] == "test:u0:9"}
    answer = handle.recommend.remote({"user_id": "u0", "candidates": list(expected)}).result()
    assert answer["explanation"] == "Likes clips." and answer["summary_covers_items"] == 9
    ranking = answer["ranking"]
    assert [r["rank"] for r in ranking] == list(range(1, 7))
    assert {r["item_id"]: r["score"] for r in ranking} == pytest.approx(expected, abs=1e-4)
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)
    assert ranking[0]["item_id"] == "r0" and ranking[0]["title"] == "Bright red clip"

    status, body = _post(
        json.dumps({"user_id": "u0", "candidates": list(expected), "top_k": 2}).encode()
    )
    assert status == 200 and [r["item_id"] for r in body["ranking"]] == [
        r["item_id"] for r in ranking[:2]
    ]
    assert _post(b"{not json") == (
        400,
        {"error": "the body is not valid JSON", "reason": "malformed"},
    )
    status, body = _post(json.dumps({"user_id": "nobody", "candidates": ["r0"]}).encode())
    assert status == 404 and body["reason"] == "unknown_user"
    status, body = _post(json.dumps({"user_id": "u0", "candidates": ["r0", "zz"]}).encode())
    assert status == 404 and body["reason"] == "unknown_item" and "zz" in body["error"]
    status, body = _post(json.dumps({"user_id": "u0", "candidates": ["r0"] * 2}).encode())
    assert status == 400 and "repeats" in body["error"]
    huge = b'{"user_id": "u0", "candidates": [' + b'"r0",' * 1_000_000 + b'"r1"]}'
    status, body = _post(huge)  # 5 MB
    assert status == 413 and body["reason"] == "too_large"
    many = json.dumps({"user_id": "u0", "candidates": [f"i{n}" for n in range(100_000)]})
    assert _post(many.encode())[0] == 413  # 10^5 candidates do not fit in 64 KiB
    status, body = _post(b'{"user_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert status == 413  # 200 KB of brackets
    status, body = _post(b'{"user_id": "u0", "candidates": ' + b"[" * 50 + b"]" * 50 + b"}")
    assert status == 400 and body["reason"] == "too_deep"
    assert _added(before, handle.stats.remote().result()) == {
        "answered": 2,
        "malformed": 2,
        "unknown_user": 1,
        "unknown_item": 1,
        "too_large": 3,
        "too_deep": 1,
    }


def _added(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The counts that grew from ``before`` to ``after``, by how much."""
    grown = {key: count - before.get(key, 0) for key, count in after.items()}
    return {key: n for key, n in grown.items() if n}


def _get(path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(BASE + path, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_users_health_stats_and_openapi(served):
    before = _get("/stats")[1]
    status, profile = _get("/users/u1")
    assert status == 200
    assert profile == {
        "user_id": "u1",
        "summary": "Likes clips.",
        "step": 9,
        "history": [
            {"item_id": "r1", "title": "Bright red clip"},
            {"item_id": "r2", "title": "Bright red clip"},
        ],
        "online_items": 0,
    }
    status, body = _get("/users/nobody")
    assert status == 404 and body["reason"] == "unknown_user"
    status, health = _get("/healthz")
    assert status == 200 and health["status"] == "ok" and health["users"] == 8 + len(UGLY_USERS)
    status, stats = _get("/stats")
    assert status == 200 and _added(before, stats) == {"unknown_user": 1}
    status, spec = _get("/openapi.json")
    assert status == 200
    assert {"/recommend", "/users/{user_id}", "/healthz", "/stats"} <= set(spec["paths"])
    body_schema = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]
    assert "candidates" in body_schema["application/json"]["schema"]["properties"]
    with urllib.request.urlopen(BASE + "/docs", timeout=60) as response:
        assert response.status == 200 and b"swagger" in response.read().lower()


def test_every_id_a_dataset_keeps_reaches_its_profile_over_http(served):
    """GET reads the profile; POST reaches the user's store (which then refuses the unknown
    item: a mangled id would be ``unknown_user``, a route-level 404 would have no reason).
    Appending for such ids is tested on the store itself (test_profiles)."""
    for user in UGLY_USERS:
        path = "/users/" + urllib.parse.quote(user, safe="")  # as the page's encodeURIComponent
        status, profile = _get(path)
        assert status == 200 and profile["user_id"] == user and profile["step"] == 9
        body = json.dumps({"items": ["no-such-item"]}).encode()
        request = urllib.request.Request(
            BASE + path + "/events", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(request, timeout=120)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404 and json.loads(exc.read())["reason"] == "unknown_item"
        else:
            raise AssertionError("an unknown item was accepted")
    status, profile = _get("/users/" + urllib.parse.quote("e\u0301", safe=""))  # decomposed é
    assert status == 200 and profile["user_id"] == "é"


def test_a_run_without_an_adapter_cannot_be_served(tmp_path):
    # The ingress wrapper's constructor is a coroutine (Serve awaits it in the replica).
    replica_class = RecommenderIngress.func_or_class
    replica = replica_class.__new__(replica_class)
    with pytest.raises(MissingStageOutput, match="run `msr-ray train` first"):
        asyncio.run(replica.__init__(None, None, {"run_dir": str(tmp_path)}))
    with pytest.raises(MissingStageOutput, match="run `msr-ray train` first"):
        Scorer.func_or_class({"run_dir": str(tmp_path)})


def _scorer_replicas() -> list[str]:
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and "Scorer" in a["name"]
    )


def test_a_scoring_replica_killed_under_load_fails_no_request(trained):
    """Clients keep posting while one of two Scorer replicas is killed: every request is
    answered (the ingress retries the calls the dead replica held), and the answers
    equal the ones given before the kill."""
    import ray

    config, run, _ = trained
    run_stage("evaluate", config)
    _write_summaries(run)
    # Each Scorer replica waits 0.5 s for a batch to fill (4 clients never fill 8), so at
    # the kill the victim surely holds calls in flight.
    app = _app(run, scorers=2, max_batch_requests=8, batch_wait_s=0.5)
    serve.shutdown()  # a fresh application (not an upgrade of the module's `served`)
    serve.run(app, name="recommender", route_prefix="/")
    try:
        body = json.dumps({"user_id": "u0", "candidates": ["r0", "r1", "r2", "r3"]}).encode()
        status, expected = _post(body)
        assert status == 200 and len(_scorer_replicas()) == 2
        results: list[tuple[int, dict]] = []
        stop = time.monotonic() + 6

        def client() -> None:
            while time.monotonic() < stop:
                results.append(_post(body))

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(1)
        victim = _scorer_replicas()[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        for thread in clients:
            thread.join()
        assert len(results) > 8
        assert [s for s, _ in results if s != 200] == []
        assert all(answer["ranking"] == expected["ranking"] for _, answer in results)
        status, stats = _get("/stats")
        assert stats.get("scoring_retried", 0) >= 1  # calls did reach the dead replica
    finally:
        serve.shutdown()
