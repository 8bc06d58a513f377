import ray

from msr_ray.run.cluster import init_ray, shutdown_ray


def test_local_ray_starts_and_stops():
    was_running = ray.is_initialized()
    resources = init_ray(num_cpus=2)
    assert resources["CPU"] >= 1
    assert ray.get(ray.put(41)) + 1 == 42
    if not was_running:
        shutdown_ray()
        assert not ray.is_initialized()


_CONNECT = """
import sys, ray
try:
    ray.init(address=sys.argv[1])
except Exception as exc:
    print("refused:", type(exc).__name__, exc)
else:
    print("connected")
"""


def test_local_ray_refuses_clients_without_its_token(ray_session):
    """Ray 2.60's services listen on the host's addresses: the token is what guards them."""
    import os
    import subprocess
    import sys

    gcs = ray.get_runtime_context().gcs_address
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}

    def connect(**auth: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", _CONNECT, gcs],
            env={**base, **auth},
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.stdout + done.stderr

    # A refused client retries its GCS connection once a second, 20 times by default.
    wrong = connect(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-token", RAY_NUM_REDIS_GET_RETRIES="2"
    )
    assert "refused" in wrong and "InvalidAuthToken" in wrong, wrong[-2000:]
    none = connect(RAY_AUTH_MODE="disabled", RAY_NUM_REDIS_GET_RETRIES="2")
    assert "refused" in none, none[-2000:]
    right = connect(RAY_AUTH_MODE="token")  # the token Ray keeps in ~/.ray/auth_token
    assert "connected" in right, right[-2000:]
