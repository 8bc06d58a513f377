"""A command's logs in its run directory: ``<run>/logs/``.

``captured(run, command)`` files the driver's log records (ours, Ray's, Ray Data's,
Ray Train's, DeepSpeed's and transformers', INFO and up) in
``logs/<command>-<UTC time>.log`` while the console shows only warnings (every record
with ``--verbose``). Afterwards, the stdout/stderr files of the local Ray instance's
worker processes (model loading, library warnings, Ray Train's lines) are copied to
``logs/workers/<Ray session>/``. Workers of a remote cluster keep their logs on their
nodes (Ray's log API or dashboard reads them), so only the driver's log is filed there.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from msr_ray.run import cluster
from msr_ray.run.cluster import quiet
from msr_ray.run.rundir import RunDir

LIBRARY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.serve", "deepspeed", "transformers")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Larger worker log files are cut to their last bytes: the end holds the failure.
MAX_WORKER_LOG_BYTES = 8 * 1024 * 1024


@contextmanager
def captured(run: RunDir, command: str) -> Iterator[None]:
    """File the driver's logs of ``command`` under ``<run>/logs/``, then the workers'."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{command}-{stamp}.log"
    local = run.path("logs", name) if run.local else os.path.join(tempfile.mkdtemp(), name)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    handler = logging.FileHandler(local, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT))
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in LIBRARY_LOGGERS)]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        if lg.propagate is False or lg is loggers[0]:
            lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    console = _console_level()
    try:
        yield
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
        _restore_console(console)
        handler.close()
        if not run.local:
            with open(local, "rb") as f:
                run.write_bytes(f.read(), "logs", name)
        copy_worker_logs(run)


def _console_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in LIBRARY_LOGGERS)]
    return [
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


def _console_level() -> list[tuple[logging.Handler, int]]:
    """Keep the console at WARNING (libraries' at ERROR) while the loggers go to INFO."""
    saved = [(h, h.level) for h in _console_handlers()]
    if quiet():
        for handler, level in saved:
            handler.setLevel(max(level, logging.WARNING))
    return saved


def _restore_console(saved: list[tuple[logging.Handler, int]]) -> None:
    for handler, level in saved:
        handler.setLevel(level)


def copy_worker_logs(run: RunDir) -> int:
    """Copy the non-empty worker stdout/stderr files of the local Ray instance this
    process started into ``logs/workers/<session>/``; return how many (0 when Ray ran
    elsewhere)."""
    session = cluster.local_session
    if session is None:
        return 0
    files = sorted(glob.glob(os.path.join(session, "logs", "worker-*")))
    copied = 0
    for path in files:
        size = os.path.getsize(path)
        if not size or not path.endswith((".out", ".err")):
            continue
        with open(path, "rb") as f:
            f.seek(max(0, size - MAX_WORKER_LOG_BYTES))
            data = f.read()
        run.write_bytes(data, "logs", "workers", os.path.basename(session), os.path.basename(path))
        copied += 1
    return copied
