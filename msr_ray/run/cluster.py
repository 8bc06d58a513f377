"""Connecting to Ray: an existing cluster when one is named, else a local instance."""

from __future__ import annotations

import os
import tempfile

LOCAL_TEMP_DIR = os.path.join(tempfile.gettempdir(), "msr-ray")
# Set by `msr-ray --verbose`: Ray's workers' output and Ray's own logs reach the console.
VERBOSE_ENV = "MSR_RAY_VERBOSE"
# The session folder of the local Ray instance this process started (None: none, or a
# remote cluster), whose worker logs `runlogs` copies into the run directory.
local_session: str | None = None


def quiet() -> bool:
    """Whether Ray's, Ray Data's and the workers' logs stay off the console."""
    return os.environ.get(VERBOSE_ENV, "") in ("", "0")


def quiet_ray_logs() -> None:
    """Keep Ray's and Ray Data's driver-side INFO logs and progress dumps off the console."""
    import logging

    from ray.data import DataContext  # first: importing Ray Data configures its loggers

    for name in ("ray", "ray.data", "ray.train", "ray.serve"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


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
    turns it off. Unless ``MSR_RAY_VERBOSE`` is set (``msr-ray --verbose``), workers'
    output stays in the Ray session's log files (``<temp dir>/session_*/logs``) and Ray's
    driver-side INFO logs stay off the console. A second call while connected reuses the
    connection.
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    if quiet():
        quiet_ray_logs()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=not quiet())
    else:
        os.makedirs(LOCAL_TEMP_DIR, exist_ok=True)
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            _temp_dir=LOCAL_TEMP_DIR,
            configure_logging=False,
            # Workers' output (model loading bars, library warnings, Ray Train's own
            # lines) stays in the session's log files unless --verbose.
            log_to_driver=not quiet(),
        )
        global local_session
        local_session = os.path.realpath(os.path.join(LOCAL_TEMP_DIR, "session_latest"))
    return ray.cluster_resources()


def shutdown_ray() -> None:
    """Disconnect from (and, if local, stop) Ray."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
