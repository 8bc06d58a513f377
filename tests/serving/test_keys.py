"""API keys: loading and checking them (no Ray); the refusal to serve beyond loopback
without keys, where the app is built and in its ingress; the one-line placement warning.
Keys on the served app, and its code defaults on 2 CPUs: test_live.py."""

import time

import pytest
from ray import serve

from msr_ray.config import ConfigError, ServeConfig
from msr_ray.serving.app import RecommenderIngress, build_app
from msr_ray.serving.instance import http_host, shortfall
from msr_ray.serving.keys import ApiKeys, check_exposure, is_loopback, presented_key
from msr_ray.serving.requests import RequestError, error_response
from msr_ray.serving.scorer import Scorer
from msr_ray.serving.updater import ProfileUpdater

GOOD, OTHER, WRONG = "k-alpha-0123456789", "k-beta-9876543210", "k-wrong-5555555555"


def _keys(tmp_path, text: str, **settings) -> ApiKeys:
    path = tmp_path / "keys.txt"
    path.write_text(text)
    return ApiKeys.from_settings(ServeConfig(run_dir="r", api_keys_file=str(path), **settings))


def _refusal(keys: ApiKeys, headers: dict[str, str], write: bool = True) -> RequestError:
    with pytest.raises(RequestError) as info:
        keys.check(headers, write)
    return info.value


def test_a_key_file_holds_one_key_a_line_without_blanks_and_comments(tmp_path):
    keys = _keys(tmp_path, f"# rotated 2026-12\n\n  {GOOD}  \n#{WRONG}\n{OTHER}\n")
    assert len(keys.digests) == 2
    for key in (GOOD, OTHER):
        keys.check({"authorization": f"Bearer {key}"}, write=True)
    assert _refusal(keys, {"authorization": f"Bearer {WRONG}"}).status == 403  # commented out


def test_keys_from_an_env_var_and_a_file_together(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(GOOD + "\n")
    settings = ServeConfig(run_dir="r", api_keys_file=str(path), api_keys_env="SERVE_KEYS")
    keys = ApiKeys.from_settings(settings, {"SERVE_KEYS": f" {OTHER} ,, {WRONG}x "})
    assert len(keys.digests) == 3
    for key in (GOOD, OTHER, WRONG + "x"):
        keys.check({"x-api-key": key}, write=True)


@pytest.mark.parametrize(
    "text, message",
    [
        (None, r"api_keys_file .*missing.txt: cannot read it: No such file or directory"),
        ("# only a comment\n\n", r"holds no keys \(one key a line\)"),
        (f"{GOOD} # prod\n", r"key 1 is not a key \(visible ASCII, no spaces\)"),
    ],
)
def test_a_key_file_that_gives_no_usable_keys_is_an_error_at_start(tmp_path, text, message):
    path = tmp_path / ("missing.txt" if text is None else "keys.txt")
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        ApiKeys.from_settings(ServeConfig(run_dir="r", api_keys_file=str(path)))
    assert GOOD not in str(info.value)


def test_an_unset_or_empty_key_env_var_is_an_error_at_start():
    settings = ServeConfig(run_dir="r", api_keys_env="SERVE_KEYS")
    for environ in ({}, {"SERVE_KEYS": " , "}):
        with pytest.raises(ConfigError, match="api_keys_env names SERVE_KEYS, which is unset"):
            ApiKeys.from_settings(settings, environ)
    with pytest.raises(ConfigError, match="api_keys_env SERVE_KEYS: key 2 is not a key") as info:
        ApiKeys.from_settings(settings, {"SERVE_KEYS": f"{GOOD},{OTHER} é"})
    assert OTHER not in str(info.value)


def test_no_key_is_401_with_a_challenge_a_wrong_one_403_and_neither_echoes_it(tmp_path):
    keys = _keys(tmp_path, GOOD)
    for headers in ({}, {"authorization": "Basic dXNlcjpwYXNz"}, {"authorization": "Bearer "}):
        refused = _refusal(keys, headers)
        assert (refused.status, refused.reason) == (401, "no_key")
        assert refused.headers == {"WWW-Authenticate": "Bearer"}
    for headers in (
        {"authorization": f"Bearer {WRONG}"},
        {"x-api-key": WRONG},
        {"authorization": f"Bearer {GOOD[:-1]}"},  # a prefix of a good key
        {"authorization": f"Bearer {WRONG}", "x-api-key": GOOD},  # the bearer is the key
    ):
        refused = _refusal(keys, headers)
        assert (refused.status, refused.reason) == (403, "wrong_key")
        response = error_response(refused)
        assert b'"reason":"wrong_key"' in response.body
        for text in (str(refused), repr(refused), response.body.decode(), repr(keys)):
            assert WRONG not in text and GOOD not in text
    keys.check({"authorization": f"bearer   {GOOD} "}, write=True)  # scheme in any case
    keys.check({"x-api-key": GOOD}, write=True)
    assert error_response(_refusal(keys, {})).headers["www-authenticate"] == "Bearer"


def test_reads_are_open_unless_keys_on_reads_and_nothing_is_keyed_without_keys(tmp_path):
    keys = _keys(tmp_path, GOOD)
    keys.check({}, write=False)
    on_reads = _keys(tmp_path, GOOD, keys_on_reads=True)
    assert _refusal(on_reads, {}, write=False).status == 401
    on_reads.check({"x-api-key": GOOD}, write=False)
    ApiKeys.from_settings(ServeConfig(run_dir="r")).check({}, write=True)
    assert presented_key({"authorization": "Token abc", "x-api-key": " k "}) == "k"


def test_key_settings_that_contradict_themselves_are_config_errors():
    with pytest.raises(ValueError, match="keys_on_reads needs api_keys_file or api_keys_env"):
        ServeConfig(run_dir="r", keys_on_reads=True)
    with pytest.raises(ValueError, match="open_without_keys contradicts the API keys"):
        ServeConfig(run_dir="r", api_keys_env="K", open_without_keys=True)


def test_serving_beyond_loopback_needs_keys_or_saying_it_is_open():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST", None):
        assert is_loopback(host), host
        check_exposure(host, ServeConfig(run_dir="r"))
    for host in ("0.0.0.0", "::", "", "192.0.2.7", "example.org"):
        assert not is_loopback(host), host
        with pytest.raises(ConfigError) as info:
            check_exposure(host, ServeConfig(run_dir="r"))
        message = str(info.value)
        assert "\n" not in message and f"Serve's HTTP host is {host!r}, beyond loopback" in message
        assert "set api_keys_env or api_keys_file" in message and "open_without_keys" in message
        check_exposure(host, ServeConfig(run_dir="r", api_keys_env="K"))
        check_exposure(host, ServeConfig(run_dir="r", open_without_keys=True))


def test_an_app_asking_for_more_than_the_cluster_has_says_so_in_one_line():
    deployments = {  # as Serve's instance details give them
        "Recommender": {"target_num_replicas": 2, "required_resources": {"CPU": 0, "GPU": 0}},
        "Scorer": {"target_num_replicas": 2, "required_resources": {"CPU": 4, "GPU": 1}},
        "ProfileUpdater": {"target_num_replicas": 1, "required_resources": {"CPU": 2}},
    }
    assert shortfall(deployments, {"CPU": 16.0, "GPU": 2.0, "memory": 1e9}) == ""
    line = shortfall(deployments, {"CPU": 8.0})
    assert line == (
        "this app's replicas ask for CPU 10 (the cluster has 8), GPU 2 (the cluster has 0): "
        "Recommender 2 x nothing, Scorer 2 x CPU 4 GPU 1, ProfileUpdater 1 x CPU 2; they "
        "wait until nodes join, so lower ray_actor_options or replicas in the serve config, "
        "or add nodes"
    )


def _wait_for_status(app: str, wanted: str, timeout_s: float = 300) -> str:
    """The application's deployments' status messages once its status is ``wanted``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app)
        if status is not None and status.status == wanted:
            return "\n".join(d.message for d in status.deployments.values())
        time.sleep(0.5)
    raise TimeoutError(f"{app} did not reach {wanted}: {serve.status().applications.get(app)}")


def test_serving_beyond_loopback_without_keys_is_refused_where_built_and_by_the_ingress(
    trained, monkeypatch
):
    """Serve's own HTTP host decides: a Serve instance configured for 0.0.0.0 (its proxies
    disabled here, so nothing listens) makes build_app refuse an app without keys; an
    app built before that was known (`serve run` builds an import path before it
    connects to Ray) is refused again by its ingress replica as it starts."""
    _, run, _ = trained
    serve.shutdown()
    serve.start(proxy_location="Disabled", http_options={"host": "0.0.0.0", "port": 8000})
    try:
        assert http_host() == "0.0.0.0"
        with pytest.raises(ConfigError) as info:
            build_app({"run_dir": run.root})
        assert str(info.value) == (
            "Serve's HTTP host is '0.0.0.0', beyond loopback, and no API keys are configured: "
            "set api_keys_env or api_keys_file in the app's args (or open_without_keys: true "
            "to serve anyone who reaches it)"
        )
        build_app({"run_dir": run.root, "open_without_keys": True})
        monkeypatch.setenv("MSR_RAY_TEST_KEYS", f"{GOOD},{OTHER}")
        build_app({"run_dir": run.root, "api_keys_env": "MSR_RAY_TEST_KEYS"})
        monkeypatch.delenv("MSR_RAY_TEST_KEYS")
        with pytest.raises(ConfigError, match="MSR_RAY_TEST_KEYS, which is unset or empty"):
            build_app({"run_dir": run.root, "api_keys_env": "MSR_RAY_TEST_KEYS"})

        args = ServeConfig(run_dir=run.root).model_dump()
        unchecked = RecommenderIngress.options(
            max_constructor_retry_count=1, ray_actor_options={"num_cpus": 0}
        ).bind(
            ProfileUpdater.options(ray_actor_options={"num_cpus": 0}).bind(),
            Scorer.options(ray_actor_options={"num_cpus": 0.5}).bind(args),
            args,
        )
        serve.run_many(
            [serve.RunTarget(unchecked, name="open")],
            wait_for_ingress_deployment_creation=False,
            wait_for_applications_running=False,
        )
        message = _wait_for_status("open", "DEPLOY_FAILED")
        assert "Serve's HTTP host is '0.0.0.0', beyond loopback, and no API keys" in message
    finally:
        serve.shutdown()
