"""The Serve instance an app runs in, as the app sees it: the host its HTTP proxies bind,
and whether the Ray cluster can hold the replicas the app asks for.

Both are asked of the running Serve controller (what ``serve status`` asks), so they are
what Serve applies, not a copy in the app's args.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import ray
from ray import serve
from ray.serve.config import HTTPOptions
from ray.serve.exceptions import RayServeException


def _controller() -> Any:
    """The running Serve controller's actor handle, or None when no Serve instance runs
    in this process's Ray cluster (or this process is not connected to one)."""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    if not ray.is_initialized():
        return None
    try:
        return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None


def http_host() -> str | None:
    """The host Serve's HTTP proxies bind: the running instance's ``http_options.host``;
    with none running, the host one started now binds (Serve's default)."""
    controller = _controller()
    if controller is None:
        return HTTPOptions().host
    return ray.get(controller.get_http_config.remote()).host


async def replica_view() -> tuple[str | None, str]:
    """From a Serve replica: the instance's HTTP host, and ``shortfall`` of the replica's
    application on this Ray cluster now. Outside a replica: ``http_host()`` and ""."""
    try:
        app = serve.get_replica_context().app_name
    except RayServeException:
        return http_host(), ""
    controller = _controller()
    http = await controller.get_http_config.remote()
    details = await controller.get_serve_instance_details.remote()
    deployments = details.get("applications", {}).get(app, {}).get("deployments", {})
    return http.host, shortfall(deployments, ray.cluster_resources())


def shortfall(deployments: Mapping[str, Mapping[str, Any]], cluster: Mapping[str, float]) -> str:
    """One line saying what ``deployments`` (Serve's details of an application's
    deployments: target replicas, resources per replica) ask for beyond the ``cluster``'s
    resources, or "" when everything fits."""
    asked: Counter[str] = Counter()
    for details in deployments.values():
        for resource, amount in details["required_resources"].items():
            asked[resource] += amount * details["target_num_replicas"]
    short = {r: n for r, n in asked.items() if n > cluster.get(r, 0) + 1e-9}
    if not short:
        return ""
    wants = ", ".join(
        f"{r} {n:g} (the cluster has {cluster.get(r, 0):g})" for r, n in short.items()
    )
    each = ", ".join(
        f"{name} {d['target_num_replicas']} x "
        + (" ".join(f"{r} {n:g}" for r, n in d["required_resources"].items() if n) or "nothing")
        for name, d in deployments.items()
    )
    return (
        f"this app's replicas ask for {wants}: {each}; they wait until nodes join, so "
        "lower ray_actor_options or replicas in the serve config, or add nodes"
    )
