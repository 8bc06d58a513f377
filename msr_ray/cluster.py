"""Connecting to Ray: an existing cluster when one is named, else a local instance."""

from __future__ import annotations

import os
import tempfile

LOCAL_TEMP_DIR = os.path.join(tempfile.gettempdir(), "msr-ray")


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict:
    """Connect to Ray and return the cluster's resources.

    ``address`` (or ``RAY_ADDRESS``) connects to a running cluster, e.g. under
    ``ray job submit``; the cluster's token auth applies there (set ``RAY_AUTH_TOKEN``
    or let the job environment provide it). Without one, a local single-node instance
    starts with no dashboard and a short temp dir, sized to this machine unless
    ``num_cpus`` is given. Ray 2.60 has no loopback-only mode (its services listen on
    the host's addresses), so the local instance keeps Ray's default token
    authentication: the token comes from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``, which Ray creates on first use. ``RAY_AUTH_MODE=disabled``
    turns it off. A second call while connected reuses the connection.
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        os.makedirs(LOCAL_TEMP_DIR, exist_ok=True)
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            _temp_dir=LOCAL_TEMP_DIR,
            configure_logging=False,
        )
    return ray.cluster_resources()


def shutdown_ray() -> None:
    """Disconnect from (and, if local, stop) Ray."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
