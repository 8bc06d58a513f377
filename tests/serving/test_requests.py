import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from msr_ray.config import ConfigError, RecommenderConfig, ServeConfig
from msr_ray.serving.catalog import ServingCatalog
from msr_ray.serving.keys import check_exposure
from msr_ray.serving.requests import (
    RecommendRequest,
    RequestError,
    decode_body,
    json_depth,
    parse_request,
)

ROOT = Path(__file__).resolve().parents[2]


def test_a_valid_request_is_parsed():
    request = parse_request({"user_id": "u1", "candidates": ["a", "b"], "top_k": 1}, 5)
    assert request == RecommendRequest("u1", ("a", "b"), 1)
    assert parse_request({"user_id": "u1", "candidates": ["a"]}, 5).top_k is None


def test_a_request_without_candidates_is_two_stage():
    assert parse_request({"user_id": "u1"}, 5) == RecommendRequest("u1", ())
    two_stage = {"user_id": "u1", "candidates": None, "n": 5, "retriever": "gru4rec", "top_k": 2}
    assert parse_request(two_stage, 5) == RecommendRequest("u1", (), 2, 5, "gru4rec")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (["u1"], "JSON object"),
        ({"candidates": ["a"]}, "'user_id'"),
        ({"user_id": "", "candidates": ["a"]}, "'user_id'"),
        ({"user_id": "u1", "n": 0}, "'n' must be a positive integer"),
        ({"user_id": "u1", "n": "20"}, "'n' must be a positive integer"),
        ({"user_id": "u1", "n": 6}, "'n' is 6; at most 5"),
        ({"user_id": "u1", "retriever": "bert4rec"}, "'retriever' must be one of popularity"),
        ({"user_id": "u1", "retriever": ["sasrec"]}, "'retriever' must be one of"),
        ({"user_id": "u1", "candidates": ["a"], "n": 2}, "only to a request without candidates"),
        ({"user_id": "u1", "candidates": []}, "non-empty list"),
        ({"user_id": "u1", "candidates": ["a", 3]}, "non-empty strings"),
        ({"user_id": "u1", "candidates": ["a", "b", "a"]}, "repeats item ids \\['a'\\]"),
        ({"user_id": "u1", "candidates": list("abcdef")}, "6 candidates; at most 5"),
        ({"user_id": "u1", "candidates": ["a"], "top_k": 0}, "'top_k'"),
        ({"user_id": "u1", "candidates": ["a"], "top_k": True}, "'top_k'"),
        ({"user_id": "u1", "candidates": ["a"], "k": 2}, "unknown fields \\['k'\\]"),
    ],
)
def test_malformed_requests_are_400_with_the_reason(payload, message):
    with pytest.raises(RequestError, match=message) as info:
        parse_request(payload, 5)
    assert (info.value.status, info.value.reason) == (400, "malformed")


def _catalog(descriptions: dict[str, str] | None = None) -> ServingCatalog:
    items = pa.table(
        {
            "item_id": ["a", "b"],
            "title": ["A", "B"],
            "image_paths": [[], []],
            "image_bytes": [[], [b"png"]],
        }
    )
    summaries = pa.table(
        {"user_id": ["u1", "u1", "u2"], "step": [6, 3, 3], "summary": ["new", "old", "x"]}
    )
    return ServingCatalog(items, summaries, descriptions)


def test_catalog_gives_each_candidate_the_summary_it_is_handed():
    catalog, request = _catalog(), RecommendRequest("u1", ("b", "a"))
    catalog.check_candidates(request)
    assert catalog.users == {"u1", "u2"}
    rows = catalog.candidate_rows(request, "new", [])  # the profile store's latest summary
    assert [(r["item_id"], r["title"], r["summary"]) for r in rows] == [
        ("b", "B", "new"),
        ("a", "A", "new"),
    ]
    assert rows[0]["image_bytes"] == [b"png"] and "description" not in rows[0]
    described = _catalog({"a": "About A."}).candidate_rows(request, "new", [])
    assert [r["description"] for r in described] == [None, "About A."]
    assert rows[0]["recent"] == []  # the paper's prompt shows no recent items


def test_a_dataset_item_is_described_with_its_text():
    items = pa.table(
        {
            "item_id": ["a", "b"],
            "title": ["A", "B"],
            "text": ["All about A.", ""],
            "image_paths": [[], []],
            "image_bytes": [[], [b"png"]],
        }
    )
    summaries = pa.table({"user_id": ["u1"], "step": [3], "summary": ["s"]})
    catalog = ServingCatalog(items, summaries, {"a": "About A."})
    assert catalog.describe("a") == {
        "item_id": "a",
        "title": "A",
        "text": "All about A.",
        "summary": "About A.",
        "online": False,
        "has_image": False,
    }
    assert (catalog.describe("b")["text"], catalog.describe("b")["has_image"]) == ("", True)
    assert _catalog().describe("a")["text"] == ""  # a table without texts
    with pytest.raises(RequestError) as unknown:
        catalog.describe("zzz")
    assert unknown.value.status == 404


def test_catalog_shows_the_users_most_recent_items_batch_then_online():
    items = pa.table(
        {
            "item_id": ["a", "b", "c"],
            "title": ["A", "B", "C"],
            "image_paths": [[], [], []],
            "image_bytes": [[], [], []],
        }
    )
    summaries = pa.table({"user_id": ["u1"], "step": [2], "summary": ["s"]})
    descriptions = {"a": "About a thing here.", "c": "See c."}
    settings = RecommenderConfig(recent_items=2, recent_words=2)
    catalog = ServingCatalog(items, summaries, descriptions, {"u1": ["a", "b"]}, settings)
    rows = catalog.candidate_rows(RecommendRequest("u1", ("c",)), "s", [])
    assert rows[0]["recent"] == ["'A': About a", "'B'"]
    rows = catalog.candidate_rows(RecommendRequest("u1", ("a",)), "s", ["c"])
    assert rows[0]["recent"] == ["'B'", "'C': See c."]


def test_unknown_user_and_items_are_404():
    catalog = _catalog()
    with pytest.raises(RequestError, match="'ghost' has no preference summary") as info:
        catalog.check_candidates(RecommendRequest("ghost", ("a",)))
    assert (info.value.status, info.value.reason) == (404, "unknown_user")
    with pytest.raises(RequestError, match="1 unknown item ids, e.g. \\['zz'\\]") as info:
        catalog.check_candidates(RecommendRequest("u1", ("a", "zz")))
    assert (info.value.status, info.value.reason) == (404, "unknown_item")


@pytest.mark.parametrize(
    "name, host, gpus", [("recommender", "127.0.0.1", 0), ("recommender-cluster", "0.0.0.0", 1)]
)
def test_shipped_serve_configs_are_valid_for_ray_and_for_the_app(name, host, gpus):
    data = yaml.safe_load((ROOT / "serve_configs" / f"{name}.yaml").read_text())
    schema = ServeDeploySchema.model_validate(data)
    assert schema.http_options.host == host and schema.http_options.request_timeout_s > 0
    app = schema.applications[0]
    assert app.import_path == "msr_ray.serving.app:build_app"
    args = ServeConfig.model_validate(app.args)
    assert args.max_candidates == 100 and args.max_body_bytes == 64 * 1024
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {"Recommender", "Scorer", "ProfileUpdater"}  # what the app binds
    ingress, scorer = deployments["Recommender"], deployments["Scorer"]
    updater = deployments["ProfileUpdater"]
    autoscaling = scorer.autoscaling_config  # the model's replicas scale with load
    assert autoscaling["min_replicas"] < autoscaling["max_replicas"]
    assert ingress.max_queued_requests > 0
    assert scorer.ray_actor_options.num_gpus == gpus  # the model's GPU
    assert ingress.ray_actor_options.num_gpus == 0  # the ingress holds no model
    ServeConfig.model_validate({**app.args, **ingress.user_config})  # hot-reload keys
    assert updater.num_replicas == 1  # the single writer of profile updates
    check_exposure(schema.http_options.host, args)  # keyed where it binds beyond loopback
    with pytest.raises(ConfigError, match="no API keys are configured"):
        check_exposure("0.0.0.0", ServeConfig.model_validate({"run_dir": args.run_dir}))


def test_limits_come_before_per_item_work():
    many = [f"i{n}" for n in range(100_000)]
    started = time.perf_counter()
    with pytest.raises(RequestError, match="100000 candidates; at most 100"):
        parse_request({"user_id": "u", "candidates": many}, 100)
    with pytest.raises(RequestError, match="repeats"):
        parse_request({"user_id": "u", "candidates": [*many, "i7"]}, 200_000)
    assert time.perf_counter() - started < 1.0  # linear: the old list.count check took minutes


def test_bodies_are_bounded_before_decoding():
    with pytest.raises(RequestError) as info:
        decode_body(b"[" * 70_000, max_bytes=65_536)
    assert (info.value.status, info.value.reason) == (413, "too_large")
    with pytest.raises(RequestError) as info:
        decode_body(b"[" * 30_000 + b"]" * 30_000, max_bytes=65_536, max_depth=8)
    assert (info.value.status, info.value.reason) == (400, "too_deep")
    assert json_depth(b'{"a": "[[[[[[[[[[", "b": [[1]]}') == 3  # brackets in strings ignored
    assert json_depth(b'{"a": "\\"[[["}') == 1
    assert decode_body(b'{"user_id": "u"}') == {"user_id": "u"}
    with pytest.raises(RequestError, match="not valid JSON"):
        decode_body(b"{nope")
