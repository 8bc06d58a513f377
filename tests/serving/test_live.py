"""The served recommender live: online events (durable, ordered, exactly once, equal to
`summarize-users` offline), a hot reload, API keys on the app as `serve run` builds it (code
defaults, on the session's 2 CPUs), and the browse page in a real headless browser."""

import base64
import json
import pathlib
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest
from PIL import Image
from ray import serve

from msr_ray.config import ServeConfig
from msr_ray.data.images import encode_png
from msr_ray.data.schemas import ITEM_SUMMARIES, SEQUENCES
from msr_ray.evaluation.baselines.runner import run_baseline
from msr_ray.run import cluster
from msr_ray.run.method_inputs import trained_config
from msr_ray.run.registry import USER_SUMMARIES_OUTPUT
from msr_ray.run.rundir import RunDir
from msr_ray.serving.app import RecommenderIngress, build_app
from msr_ray.serving.instance import shortfall
from msr_ray.serving.scorer import Scorer
from msr_ray.serving.updater import ProfileUpdater
from msr_ray.stages.users import UserShard, persisted
from tests.browser import Browser, chromium_or_skip

BASE = "http://127.0.0.1:8000"


def _call(path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        BASE + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _summarize_users(run: RunDir) -> dict:
    """Batch user summaries by the summarize-users shard code; the users' states."""
    config = trained_config(run).model_copy(update={"run_dir": run.root})
    shard = UserShard(0, 1, config, "offline")
    while shard.advance_round()["pending"]:
        pass
    with run.stage_output(USER_SUMMARIES_OUTPUT) as out:
        out.write_table(persisted(run, "offline"), "summaries.parquet")
    return shard.users


def _extend_history(run: RunDir, user: str, items: list[str]) -> None:
    """Rewrite the dataset: ``items`` appended to ``user``'s train history."""
    sequences = run.read_table("dataset", "sequences.parquet").to_pylist()
    sequences += [
        {"user_id": user, "item_id": item, "timestamp": 100 + n, "position": 100 + n}
        | {"split": "train"}
        for n, item in enumerate(items)
    ]
    items_table = run.read_table("dataset", "items.parquet")
    with run.stage_output("dataset") as out:
        out.write_table(items_table, "items.parquet")
        out.write_table(pa.Table.from_pylist(sequences, schema=SEQUENCES), "sequences.parquet")


@pytest.fixture(scope="module")
def live_run(trained, tmp_path_factory):
    """A copy of the trained run with item summaries and real batch user summaries."""
    _, source, _ = trained
    root = tmp_path_factory.mktemp("live") / "run"
    shutil.copytree(source.root, root)
    run = RunDir(str(root))
    items = run.read_table("dataset", "items.parquet")["item_id"].to_pylist()
    rows = [
        {"item_id": i, "summary": f"A {'red' if i[0] == 'r' else 'blue'} clip.", "model": "t"}
        for i in items
    ]
    with run.stage_output("item_summaries") as out:
        out.write_table(pa.Table.from_pylist(rows, schema=ITEM_SUMMARIES))
    _summarize_users(run)
    return run


def _copy(run: RunDir, target) -> RunDir:
    """A copy of ``run`` without its online profiles (no earlier test's events)."""
    shutil.copytree(run.root, target, ignore=shutil.ignore_patterns("profiles"))
    return RunDir(str(target))


def _serve(run_dir: str, ingresses: int = 1, **keys) -> None:
    settings = ServeConfig(run_dir=run_dir, max_candidates=12, **keys)
    args = settings.model_dump()
    updater = ProfileUpdater.options(ray_actor_options={"num_cpus": 0}).bind()
    scorer = Scorer.options(ray_actor_options={"num_cpus": 0.5}).bind(args)
    ingress = RecommenderIngress.options(num_replicas=ingresses, ray_actor_options={"num_cpus": 0})
    serve.run(ingress.bind(updater, scorer, args), name="recommender", route_prefix="/")


def test_events_are_durable_ordered_once_and_equal_offline_summaries(live_run, tmp_path):
    offline = _copy(live_run, tmp_path / "offline")  # before any event
    _serve(live_run.root)
    try:
        status, before = _call("/users/u0")
        assert status == 200 and before["step"] == 2 and before["online_items"] == 0

        status, first = _call("/users/u0/events", {"items": ["b0", "b1"], "event_id": "e1"})
        assert status == 200 and first["step"] == 4 and first["duplicate"] is False
        status, second = _call("/users/u0/events", {"items": ["b2"]})
        assert status == 200 and second["step"] == 5 and second["events"] == 2
        status, again = _call("/users/u0/events", {"items": ["b0", "b1"], "event_id": "e1"})
        assert status == 200 and again["duplicate"] is True and again["events"] == 2

        with ThreadPoolExecutor(3) as pool:  # concurrent events for one user
            answers = list(
                pool.map(lambda i: _call("/users/u1/events", {"items": [i]}), ["b3", "b4", "b5"])
            )
        assert [status for status, _ in answers] == [200, 200, 200]
        by_order = sorted((a["events"], a["online_items"]) for _, a in answers)
        assert [events for events, _ in by_order] == [1, 2, 3]  # one at a time
        final = by_order[-1][1]
        assert sorted(final) == ["b3", "b4", "b5"]  # each exactly once
        assert [items for _, items in by_order] == [final[:1], final[:2], final]  # in order

        status, ranked = _call("/recommend", {"user_id": "u0", "candidates": ["r0", "b3"]})
        assert status == 200 and ranked["explanation"] == second["summary"]
        assert ranked["summary_covers_items"] == 5

        status, refused = _call("/users/u0/events", {"items": ["nope"]})
        assert status == 404 and refused["reason"] == "unknown_item"
        status, refused = _call("/users/u0/events", {"items": "b1"})
        assert status == 400 and refused["reason"] == "malformed"
        status, refused = _call("/users/ghost/events", {"items": ["b1"]})
        assert status == 404 and refused["reason"] == "unknown_user"
    finally:
        serve.shutdown()

    _serve(live_run.root)  # a restart: every replica is new
    try:
        status, after = _call("/users/u0")
    finally:
        serve.shutdown()
    assert status == 200 and after["step"] == 5 and after["summary"] == second["summary"]
    assert [h["item_id"] for h in after["history"]][-3:] == ["b0", "b1", "b2"]
    assert after["online_items"] == 3

    _extend_history(offline, "u0", ["b0", "b1", "b2"])
    users = _summarize_users(offline)  # summarize-users over the extended history
    assert users["u0"].summaries[5] == after["summary"]


def test_a_posted_item_is_keyed_summarized_rankable_on_every_ingress_and_kept(live_run, tmp_path):
    """POST /items on two ingress replicas: a key is needed, the item is summarized, a
    replica that did not take it ranks it too, and a restart keeps it."""
    run = _copy(live_run, tmp_path / "items")
    keys = tmp_path / "keys.txt"
    keys.write_text(GOOD + "\n")
    image = base64.b64encode(encode_png(Image.new("RGB", (40, 30), (220, 20, 20)))).decode()
    item = {"item_id": "new red", "title": "Fresh red clip", "text": "Red.", "image_base64": image}
    key = {"X-API-Key": GOOD}
    run_baseline(trained_config(run), run, "pop")  # the two-stage retriever
    _serve(run.root, ingresses=2, api_keys_file=str(keys))
    try:
        assert _challenge("/items", item)[:2] == (401, "Bearer")
        status, posted = _call("/items", item, key)
        assert status == 200 and posted["online"] and posted["has_image"]
        assert posted["summary"] and posted["stored_at"].startswith(run.root + "/online_items/")
        assert _call("/items", item, key)[1]["reason"] == "item_exists"
        corrupt = {**item, "item_id": "bad", "image_base64": base64.b64encode(b"GIF8").decode()}
        assert _call("/items", corrupt, key)[0] == 400
        status, got = _call("/items/new%20red")
        assert status == 200 and got == posted

        scores = set()
        for _ in range(12):  # each request reaches either replica: all name the new item
            status, ranked = _call("/recommend", {"user_id": "u0", "candidates": ["new red", "b3"]})
            assert status == 200 and ranked["candidates"] == 2
            scores |= {round(r["score"], 5) for r in ranked["ranking"] if r["item_id"] == "new red"}
        assert len(scores) == 1 and 0 <= scores.pop() <= 1
        stats = [_call("/stats")[1] for _ in range(20)]
        # The replica that did not take the post (no items_posted) ranked it too.
        assert any(s.get("answered") and not s.get("items_posted") for s in stats)
        assert any(s.get("items_posted") == 1 for s in stats)
        assert _call("/users/u0/candidates?n=8")[1]["ids"][0] == "new red"  # the page's slot
        two_stage = {"user_id": "u0", "n": 4, "retriever": "popularity"}
        status, answer = _call("/recommend", two_stage)  # the retriever's 4 + the fresh slot
        assert status == 200 and answer["candidates"] == 5
        by_id = {r["item_id"]: r for r in answer["ranking"]}
        assert by_id["new red"]["fresh"] and by_id["new red"]["retrieval_rank"] is None
        assert sorted(r["retrieval_rank"] for r in by_id.values() if not r["fresh"]) == [1, 2, 3, 4]
        status, event = _call("/users/u0/events", {"items": ["new red"]}, key)
        assert status == 200 and event["online_items"] == ["new red"]
        status, answer = _call("/recommend", two_stage)  # now in the history: no slot for it
        assert status == 200 and "new red" not in {r["item_id"] for r in answer["ranking"]}
    finally:
        serve.shutdown()

    _serve(run.root)  # a restart: every replica is new
    try:
        status, after = _call("/items/new%20red")
        listed = _call("/items")[1]
    finally:
        serve.shutdown()
    assert status == 200 and after == posted and listed["total"] == 13


def _deploy(run_dir: str, user_config: dict) -> dict:
    """Deploy the app from a config, as `serve deploy` does; wait until it answers."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    config = {
        "applications": [
            {
                "name": "recommender",
                "route_prefix": "/",
                "import_path": "msr_ray.serving.app:build_app",
                "args": {"run_dir": run_dir, "max_candidates": 12},
                "deployments": [
                    {
                        "name": "Recommender",
                        "user_config": user_config,
                        "ray_actor_options": {"num_cpus": 0},
                    },
                    {"name": "Scorer", "ray_actor_options": {"num_cpus": 0.5}},
                    {"name": "ProfileUpdater", "ray_actor_options": {"num_cpus": 0}},
                ],
            }
        ]
    }
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        app = serve.status().applications.get("recommender")
        if app is not None and app.status == "RUNNING":
            status, health = _call("/healthz")
            if status == 200 and health["max_batch_requests"] == user_config["max_batch_requests"]:
                return health
        time.sleep(0.5)
    raise TimeoutError("the app did not reach RUNNING with the new config")


def test_reconfigure_switches_runs_without_a_new_replica(live_run, tmp_path):
    other = _copy(live_run, tmp_path / "other")
    _extend_history(other, "u2", ["b0", "b1", "b2", "b3"])
    _summarize_users(other)
    try:
        health = _deploy(live_run.root, {"max_batch_requests": 2})
        assert health["run_dir"] == live_run.root
        assert _call("/users/u2")[1]["step"] == 2
        switched = _deploy(live_run.root, {"run_dir": other.root, "max_batch_requests": 3})
        assert switched["replica"] == health["replica"]  # reconfigured in place, not replaced
        assert switched["run_dir"] == other.root
        status, profile = _call("/users/u2")
        assert status == 200 and profile["step"] == 6 and len(profile["history"]) == 6
        status, ranked = _call("/recommend", {"user_id": "u2", "candidates": ["r0", "b5"]})
        assert status == 200 and ranked["summary_covers_items"] == 6
    finally:
        serve.shutdown()


def test_two_stage_recommend_reranks_the_retrievers_top_n_of_the_whole_catalogue(
    live_run, tmp_path
):
    """No candidates: the kept SASRec's top n of the catalogue (the history the serving side
    knows left out, online events included), reranked exactly as named candidates are."""
    run = _copy(live_run, tmp_path / "two-stage")
    tiny = ["baselines.epochs=2", "baselines.hidden_size=16", "baselines.num_layers=1"]
    run_baseline(trained_config(run, tiny), run, "sasrec")
    _serve(run.root)
    try:
        status, answer = _call("/recommend", {"user_id": "u0", "n": 6})
        assert status == 200 and answer["retriever"] == "sasrec" and answer["candidates"] == 6
        ranking = answer["ranking"]
        history = {h["item_id"] for h in _call("/users/u0")[1]["history"]}
        assert len(history) == 2 and not history & {r["item_id"] for r in ranking}
        assert sorted(r["retrieval_rank"] for r in ranking) == list(range(1, 7))
        assert all(isinstance(r["retrieval_score"], float) for r in ranking)
        scores = [r["score"] for r in ranking]
        assert scores == sorted(scores, reverse=True)  # ordered by the rerank score
        assert [r["rank"] for r in ranking] == list(range(1, 7))
        named = {"user_id": "u0", "candidates": [r["item_id"] for r in ranking]}
        status, reranked = _call("/recommend", named)  # the same items, named
        assert status == 200 and reranked["retriever"] is None
        assert {r["item_id"]: r["score"] for r in reranked["ranking"]} == pytest.approx(
            {r["item_id"]: r["score"] for r in ranking}, abs=1e-4
        )
        assert reranked["ranking"][0]["retrieval_rank"] is None

        top = ranking[0]["item_id"]
        assert _call("/users/u0/events", {"items": [top]})[0] == 200
        status, after = _call("/recommend", {"user_id": "u0", "top_k": 3})
        assert status == 200 and len(after["ranking"]) == 3 and after["candidates"] == 9
        assert top not in {r["item_id"] for r in after["ranking"]}  # an online event counts

        status, refused = _call("/recommend", {"user_id": "u0", "retriever": "gru4rec"})
        assert status == 503 and refused["reason"] == "no_retriever"
        assert "baselines/gru4rec/" in refused["error"] and "--model gru4rec" in refused["error"]
        for bad in ({"n": 0}, {"n": 13}, {"retriever": "bert4rec"}, {"n": 2, "candidates": ["r0"]}):
            status, refused = _call("/recommend", {"user_id": "u0", **bad})
            assert status == 400 and refused["reason"] == "malformed", bad
        stats = _call("/stats")[1]
        assert {k: stats.get(k) for k in ("two_stage", "no_retriever", "malformed")} == {
            "two_stage": 2,
            "no_retriever": 1,
            "malformed": 4,
        }
    finally:
        serve.shutdown()


GOOD, OTHER, WRONG = "k-alpha-0123456789", "k-beta-9876543210", "k-wrong-5555555555"


def _run_built(args: dict, ready: str = "/healthz", timeout_s: float = 300) -> None:
    """Deploy ``build_app(args)`` with the deployments' defaults in code, as
    `serve run msr_ray.serving.app:build_app` does; wait until ``ready`` answers 200."""
    serve.run_many(
        [serve.RunTarget(build_app(args), name="recommender", route_prefix="/")],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get("recommender")
        if app is not None and app.status == "RUNNING":
            try:
                if _call(ready)[0] == 200:
                    return
            except OSError:
                pass
        time.sleep(0.5)
    raise TimeoutError(f"the app did not answer {ready}: {serve.status().applications}")


def _session_logs() -> list[pathlib.Path]:
    return [p for p in pathlib.Path(cluster.local_session, "logs").rglob("*") if p.is_file()]


def _challenge(path: str, body: dict) -> tuple[int, str | None, dict]:
    """A keyless post's status, WWW-Authenticate header and body."""
    request = urllib.request.Request(BASE + path, json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, None, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("WWW-Authenticate"), json.loads(exc.read())


def test_the_app_as_serve_run_builds_it_starts_on_2_cpus_and_keys_its_writes(live_run, tmp_path):
    """``build_app`` with no deployment options (the `serve run <import path>` form) on the
    session's 2-CPU Ray; writes need one of the file's two keys, reads are open, then
    keyed with keys_on_reads. No key reaches a log or the stats."""
    import ray
    from ray.serve.context import _get_global_client

    run = _copy(live_run, tmp_path / "keyed")
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# two keys, one a line\n{GOOD}\n\n{OTHER}\n")
    args = {"run_dir": run.root, "max_candidates": 12, "api_keys_file": str(keys)}
    assert ray.cluster_resources()["CPU"] == 2
    _run_built(args)
    try:
        details = _get_global_client().get_serve_details()["applications"]["recommender"]
        deployments = details["deployments"]
        cpus = {name: d["required_resources"]["CPU"] for name, d in deployments.items()}
        assert cpus == {"Recommender": 0, "Scorer": 1, "ProfileUpdater": 1}
        assert shortfall(deployments, ray.cluster_resources()) == ""
        line = shortfall(deployments, {"CPU": 1})
        assert line.startswith("this app's replicas ask for CPU 2 (the cluster has 1): ")
        for each in ("Recommender 1 x nothing", "Scorer 1 x CPU 1", "ProfileUpdater 1 x CPU 1"):
            assert each in line

        event = {"items": ["b0"], "event_id": "k1"}
        assert _challenge("/users/u0/events", event) == (
            401,
            "Bearer",
            {
                "error": "this route needs an API key: send `Authorization: Bearer <key>` or "
                "`X-API-Key: <key>`",
                "reason": "no_key",
            },
        )
        wrong = {"error": "this API key is not accepted here", "reason": "wrong_key"}
        assert _call("/users/u0/events", event, {"Authorization": f"Bearer {WRONG}"}) == (
            403,
            wrong,
        )
        assert _call("/users/u0/events", event, {"X-API-Key": WRONG}) == (403, wrong)
        status, first = _call("/users/u0/events", event, {"Authorization": f"Bearer {GOOD}"})
        assert status == 200 and first["online_items"] == ["b0"] and first["events"] == 1
        status, second = _call("/users/u0/events", {"items": ["b1"]}, {"X-API-Key": OTHER})
        assert status == 200 and second["online_items"] == ["b0", "b1"]

        status, profile = _call("/users/u0")  # reads are open by default
        assert status == 200 and profile["online_items"] == 2
        status, ranked = _call("/recommend", {"user_id": "u0", "candidates": ["r0", "b3"]})
        assert status == 200 and ranked["explanation"] == second["summary"]
        assert _call("/items")[1]["total"] == 12 and _call("/users")[1]["total"] == 8
        with urllib.request.urlopen(BASE + "/items/r0/image", timeout=60) as response:
            assert response.status == 200 and response.read()[:4] == b"\x89PNG"
        stats = _call("/stats")[1]
        assert {k: stats.get(k) for k in ("no_key", "wrong_key", "events", "answered")} == {
            "no_key": 1,
            "wrong_key": 2,
            "events": 2,
            "answered": 1,
        }

        _run_built({**args, "keys_on_reads": True})
        deadline = time.monotonic() + 120
        while _call_status("/users/u0") == 200 and time.monotonic() < deadline:
            time.sleep(0.5)  # the old ingress replica answers until the new one is up
        before = _call("/stats")[1]
        assert _call("/users/u0") == (
            401,
            {
                "error": "this route needs an API key: send `Authorization: Bearer <key>` or "
                "`X-API-Key: <key>`",
                "reason": "no_key",
            },
        )
        for path in ("/users", "/items", "/users/u0/candidates", "/items/r0/image"):
            assert _call_status(path) == 401, path
            assert _call_status(path, {"X-API-Key": WRONG}) == 403, path
            assert _call_status(path, {"Authorization": f"Bearer {OTHER}"}) == 200, path
        recommend = {"user_id": "u0", "candidates": ["r0"]}
        assert _call("/recommend", recommend)[1]["reason"] == "no_key"
        assert _call("/recommend", recommend, {"X-API-Key": GOOD})[0] == 200
        for path in ("/", "/healthz", "/stats", "/docs", "/openapi.json"):
            assert _call_status(path) == 200, path  # always open
        after = _call("/stats")[1]
        added = {k: after.get(k, 0) - before.get(k, 0) for k in ("no_key", "wrong_key", "answered")}
        assert added == {"no_key": 6, "wrong_key": 4, "answered": 1}
        stats |= after
    finally:
        serve.shutdown()

    text = json.dumps(stats)
    logs = _session_logs()
    access = b"".join(p.read_bytes() for p in logs if "Recommender" in p.name)
    assert b" 403 " in access and b" 401 " in access  # refused requests were logged
    for key in (GOOD, OTHER, WRONG):
        assert key not in text
        assert [p for p in logs if key.encode() in p.read_bytes()] == []


def _call_status(path: str, headers: dict | None = None) -> int:
    request = urllib.request.Request(BASE + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# The ugliest id a dataset keeps (msr_ray.data.ids): spaces, URL and HTML metacharacters,
# an encoded slash, quotes, accents, a symbol and an emoji.
UGLY_USER = "a b?c#%2F&+'\"<x> ünï ☃ 🎬"


def _rename_user(run: RunDir, old: str, new: str) -> None:
    """Rewrite the dataset and the user summaries with user ``old`` named ``new``."""
    sequences = run.read_table("dataset", "sequences.parquet").to_pylist()
    for row in sequences:
        row["user_id"] = new if row["user_id"] == old else row["user_id"]
    items_table = run.read_table("dataset", "items.parquet")
    with run.stage_output("dataset") as out:
        out.write_table(items_table, "items.parquet")
        out.write_table(pa.Table.from_pylist(sequences, schema=SEQUENCES), "sequences.parquet")
    summaries = run.read_table("user_summaries")
    users = [new if u == old else u for u in summaries["user_id"].to_pylist()]
    column = summaries.schema.get_field_index("user_id")
    summaries = summaries.set_column(
        column, summaries.schema.field(column), pa.array(users, pa.string())
    )
    with run.stage_output(USER_SUMMARIES_OUTPUT) as out:
        out.write_table(summaries, "summaries.parquet")


def test_browse_page_shows_and_updates_a_user_with_the_ugliest_id(live_run, tmp_path):
    executable = chromium_or_skip()
    fresh = _copy(live_run, tmp_path / "ugly")
    _rename_user(fresh, "u1", UGLY_USER)
    _serve(fresh.root)
    browser = Browser(executable, tmp_path / "profile")
    try:
        browser.open(BASE + "/")
        browser.wait_for("document.querySelectorAll('#ranking li').length === 10")
        options = browser.evaluate(
            "[...document.getElementById('user-select').options].map(o => o.value)"
        )
        assert UGLY_USER in options
        browser.evaluate(
            "(() => { const s = document.getElementById('user-select');"
            f" s.value = {json.dumps(UGLY_USER)}; s.dispatchEvent(new Event('change')); }})()"
        )
        browser.wait_for(f"document.body.dataset.user === {json.dumps(UGLY_USER)}")
        browser.wait_for("document.querySelectorAll('#ranking li').length === 10")
        before = len(_call("/users/" + urllib.parse.quote(UGLY_USER, safe=""))[1]["history"])
        browser.wait_for(f"document.querySelectorAll('#history li').length === {before}")
        browser.evaluate("document.querySelector('#ranking li button.add-event').click()")
        browser.wait_for(f"document.querySelectorAll('#history li').length === {before + 1}")
        status, profile = _call("/users/" + urllib.parse.quote(UGLY_USER, safe=""))
        assert status == 200 and profile["user_id"] == UGLY_USER
        assert profile["online_items"] == 1 and len(profile["history"]) == before + 1
        assert (
            browser.evaluate("document.getElementById('summary').textContent")
            == (profile["summary"])
        )
    finally:
        browser.close()
        serve.shutdown()


def test_browse_page_in_headless_chromium(live_run, tmp_path):
    executable = chromium_or_skip()
    fresh = _copy(live_run, tmp_path / "fresh")
    _serve(fresh.root)
    browser = Browser(executable, tmp_path / "profile")
    try:
        browser.open(BASE + "/")
        browser.wait_for("document.querySelectorAll('#ranking li').length === 10")
        assert browser.evaluate("document.getElementById('user-select').options.length") == 8
        user = browser.evaluate("document.body.dataset.user")
        history = browser.evaluate("[...document.querySelectorAll('#history li')].length")
        summary = browser.evaluate("document.getElementById('summary').textContent")
        assert user == "u0" and history == 2 and summary
        scores = browser.evaluate(
            "[...document.querySelectorAll('#ranking .score')].map(s => +s.textContent)"
        )
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert browser.wait_for(
            "[...document.querySelectorAll('#history img')].every(i => i.complete)"
            " && [...document.querySelectorAll('#history img')].every(i => i.naturalWidth > 0)"
        )
        clicked = browser.evaluate(
            "(() => { const li = document.querySelector('#ranking li');"
            " li.querySelector('button.add-event').click(); return li.dataset.item; })()"
        )
        browser.wait_for("document.querySelectorAll('#history li').length === 3")
        browser.wait_for("document.querySelectorAll('#ranking li').length === 9")  # one less unseen
        assert browser.evaluate(
            "document.querySelector('#history li:last-child').dataset.item"
        ) == (clicked)
        assert browser.evaluate("document.body.dataset.step") == "3"
        ranked = browser.evaluate(
            "[...document.querySelectorAll('#ranking li')].map(l => l.dataset.item)"
        )
        assert clicked not in ranked  # the new history item is no longer a candidate
        assert (
            browser.evaluate("document.getElementById('summary').textContent")
            == _call("/users/u0")[1]["summary"]
            != summary  # the recurrent step ran on the new block
        )
        shot = browser.screenshot(tmp_path / "browse.png")
        assert shot.stat().st_size > 10_000
    finally:
        browser.close()
        serve.shutdown()


def test_browse_page_asks_for_a_key_keeps_it_for_the_tab_and_sends_it(live_run, tmp_path):
    """keys_on_reads: the page asks for a key at its first call, asks again when the key
    is refused, then shows, ranks (images included) and posts events with the key."""
    executable = chromium_or_skip()
    fresh = _copy(live_run, tmp_path / "keyed")
    keys = tmp_path / "keys.txt"
    keys.write_text(GOOD + "\n")
    _serve(fresh.root, api_keys_file=str(keys), keys_on_reads=True)
    browser = Browser(executable, tmp_path / "profile")
    enter = (
        "(() => {{ document.getElementById('key-input').value = {key};"
        " document.getElementById('key-form').requestSubmit(); }})()"
    )
    try:
        browser.open(BASE + "/")
        browser.wait_for("!document.getElementById('key-form').hidden")
        message = "document.getElementById('key-message').textContent"
        assert browser.evaluate(message) == "This service needs an API key."
        assert browser.evaluate("document.querySelectorAll('#ranking li').length") == 0
        browser.evaluate(enter.format(key=json.dumps(WRONG)))
        browser.wait_for(f"{message} === 'That API key was refused: enter another.'")
        assert browser.evaluate("sessionStorage.getItem('msr-ray-api-key')") is None
        browser.evaluate(enter.format(key=json.dumps(GOOD)))
        browser.wait_for("document.querySelectorAll('#ranking li').length === 10")
        assert browser.evaluate("document.getElementById('key-form').hidden") is True
        assert browser.evaluate("sessionStorage.getItem('msr-ray-api-key')") == GOOD
        assert browser.wait_for(
            "[...document.querySelectorAll('img')].length === 12"
            " && [...document.querySelectorAll('img')].every(i => i.naturalWidth > 0)"
        )
        browser.evaluate("document.querySelector('#ranking li button.add-event').click()")
        browser.wait_for("document.querySelectorAll('#history li').length === 3")
        status, profile = _call("/users/u0", headers={"X-API-Key": GOOD})
        assert status == 200 and profile["online_items"] == 1
        assert _call("/users/u0")[0] == 401
    finally:
        browser.close()
        serve.shutdown()
