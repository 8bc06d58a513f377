"""Build-once model folders: several processes may start at once and none sees a half folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$MSR_RAY_CACHE``, else ``~/.cache/msr-ray``."""
    root = cache_dir or os.environ.get("MSR_RAY_CACHE") or "~/.cache/msr-ray"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_once(name: str, build: Callable[[Path], None], cache_dir: str | None = None) -> Path:
    """Return ``<cache>/<name>``, calling ``build(tmp_folder)`` first if it does not exist.

    An exclusive file lock serialises builders; the folder is built under a temporary
    name and renamed into place, so readers never see a partial folder. Whatever the build
    prints goes to stderr: a first use must not change a program's stdout (a library that
    ``save_pretrained`` imports, DeepSpeed, prints its accelerator warning there).
    """
    root = cache_root(cache_dir)
    final = root / name
    if final.is_dir():
        return final
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if final.is_dir():
                return final
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
            tmp.chmod(0o755)
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    build(tmp)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final
