"""Run directories: where every stage reads and writes, locally or on any pyarrow filesystem.

Layout and guarantees (the same on a local disk and on an object store such as S3):

- ``_MSR_RAY_RUN.json`` marks a folder as a run directory. A non-empty folder without it
  is refused, so pointing ``--run-dir`` at the wrong folder changes nothing in it.
- A stage's output is a folder ``<run>/<stage>/`` holding one version folder per build
  (``<stage>/<version>/``) and the marker ``<stage>/_COMPLETE.json``. A build writes its
  files in place into a new version folder; writing the marker, which names the version,
  lists its files and records the stage's fingerprint, is the commit. Only then is the
  previous version deleted, so a failing or killed rerun leaves the old output readable,
  and no directory is ever renamed (object stores cannot rename).
- Readers resolve ``read_table("dataset", "items.parquet")`` through the marker to the
  committed version; files of an uncommitted version are never read.
- Resumable stages keep append-only parts under ``<run>/_parts/<stage>/<key>/``, where the
  key is the stage's fingerprint, so parts built from other inputs are never counted.
- One writer at a time: ``lock()`` takes an exclusive lock for a command's duration and a
  second writer gets ``RunDirLocked`` naming the holder (on object stores, a lock whose
  heartbeat stopped for longer than its lease is taken over).

Small files (markers, JSON, text, parts) are written atomically: to a temporary name and
renamed on a local disk, and as one object on an object store (an upload becomes visible
only when complete).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from msr_ray.run.registry import COMMAND_OF_OUTPUT, ONLINE_ITEMS_OUTPUT, PROFILES_OUTPUT

COMPLETE_MARKER = "_COMPLETE.json"
RUN_MARKER = "_MSR_RAY_RUN.json"
LOCK_FILE = "_LOCK"
TEMP_PREFIX = ".tmp-"
# Stage outputs are at most this many folders deep (``scores/sasrec``).
MAX_STAGE_DEPTH = 2
# The name of a stage output's version folder, as ``stage_output`` makes it.
VERSION_NAME = re.compile(r"v\d{20}-[0-9a-f]{6}")
# An object-store lock without a heartbeat for this long is taken over (seconds).
DEFAULT_LEASE_S = 600.0
LEASE_ENV = "MSR_RAY_LOCK_LEASE_S"
# Folders the lock-time cleanup leaves alone: serving writes ``profiles/`` and
# ``online_items/`` (``serving/items.py``) without the lock.
UNLOCKED_FOLDERS = (PROFILES_OUTPUT, ONLINE_ITEMS_OUTPUT)


def absolute_location(uri: str) -> str:
    """A local relative path made absolute against this process's cwd; URIs unchanged.

    Other processes (Ray actors, Ray Train workers in the session's artifacts dir, Serve
    replicas) reopen a run directory and need not share this working directory.
    """
    return uri if "://" in uri else os.path.abspath(uri)


class MissingStageOutput(RuntimeError):
    """A stage needs another stage's complete, current output, and it is not there."""


class StaleStageOutput(MissingStageOutput):
    """A stage's input is there but was built from other inputs or settings than the
    config's (a ``MissingStageOutput``: what the stage needs is not there either)."""


class NotARunDirectory(RuntimeError):
    """The folder given as a run directory holds other files and no run marker."""


class RunDirLocked(RuntimeError):
    """Another command holds the run directory's writer lock."""


class OutsideRunDirectory(RuntimeError):
    """A path the run would delete or write resolves outside the run directory, or a
    marker names a version that is not a version folder's name (a tampered file)."""


class StaleLockTakenOver(UserWarning):
    """An object-store lock whose holder stopped its heartbeat was taken over."""


class MissingFingerprint(RuntimeError):
    """A stage was built without the fingerprint that says what it is built from."""


@dataclass
class StageOutput:
    """A stage's output folder while it is being written (not yet complete)."""

    fs: pafs.FileSystem
    path: str
    metadata: dict[str, Any]

    def write_table(self, table: pa.Table, name: str = "part-00000.parquet") -> str:
        """Write one Parquet file into the folder and return its path."""
        target = f"{self.path}/{name}"
        pq.write_table(table, target, filesystem=self.fs)
        return target

    def write_bytes(self, data: bytes, name: str) -> str:
        """Write one file (``name`` may contain folders) and return its path."""
        target = f"{self.path}/{name}"
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(target) as f:
            f.write(data)
        return target


# Run directories whose writer lock this process holds, with the nesting depth.
_HELD: dict[str, int] = {}


def _holder() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": " ".join(sys.argv),
        "since": time.time(),
    }


class RunDir:
    """A run directory given as a local path or a filesystem URI (``s3://...``).

    Opening one creates it (with its marker) when it is missing or empty, and raises
    ``NotARunDirectory`` for a non-empty folder that is not a run. ``create=False``
    (readers such as ``status`` and ``export``) never creates anything: a folder that is
    not a run yet raises ``NotARunDirectory``.
    """

    def __init__(self, uri: str, create: bool = True):
        if "://" in uri:
            self.fs, root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, root = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.uri = uri
        self.root = root.rstrip("/") or "/"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        # Fingerprints of the outputs this process is building (set by the pipeline).
        self._claim(create)

    def _claim(self, create: bool) -> None:
        if self.exists(RUN_MARKER):
            return
        if not create:
            raise NotARunDirectory(
                f"{self.uri} is not an msr-ray run directory (no {RUN_MARKER}): check the "
                "path; nothing was created"
            )
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.File:
            raise NotARunDirectory(f"{self.uri} is a file, not a run directory")
        if info.type == pafs.FileType.Directory:
            entries = self.fs.get_file_info(pafs.FileSelector(self.root))
            if entries:
                names = sorted(e.base_name for e in entries)[:5]
                raise NotARunDirectory(
                    f"{self.uri} is not empty and is not an msr-ray run directory (no "
                    f"{RUN_MARKER}; it holds {', '.join(names)}). Give a new or empty folder "
                    "as the run directory; nothing in this one was changed."
                )
        self.fs.create_dir(self.root, recursive=True)
        self.write_json({"created_at": time.time(), "layout": 2}, RUN_MARKER)

    def path(self, *parts: str) -> str:
        """Absolute path (on this run's filesystem) of a file or folder in the run."""
        return "/".join([self.root, *parts])

    def uri_of(self, *parts: str) -> str:
        """Where a file or folder of the run is, for people and logs: a local absolute
        path, or ``scheme://bucket/...`` without the run URI's query options (which may
        hold credentials)."""
        if self.local:
            return self.path(*parts)
        return f"{self.uri.split('://', 1)[0]}://{self.path(*parts)}"

    def ray_storage(self, *parts: str) -> dict[str, Any]:
        """``storage_path`` and ``storage_filesystem`` for Ray Train's ``RunConfig``: a
        folder of the run, on the run's filesystem (S3 options included)."""
        return {
            "storage_path": self.path(*parts),
            "storage_filesystem": None if self.local else self.fs,
        }

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    # -- stage outputs ---------------------------------------------------------------

    def completion(self, stage: str) -> dict[str, Any]:
        """The marker a complete stage was sealed with (version, files, fingerprint...).

        Raises ``OutsideRunDirectory`` when its version is not a version folder's name
        (``../x`` in a tampered marker would make the next build delete ``x``).
        """
        marker = self.read_json(stage, COMPLETE_MARKER)
        version = marker.get("version") if isinstance(marker, dict) else None
        if not isinstance(version, str) or not VERSION_NAME.fullmatch(version):
            raise OutsideRunDirectory(
                f"{self.uri_of(stage, COMPLETE_MARKER)} names version {str(version)[:80]!r}, "
                "which is not a version folder's name: the marker was edited by hand or "
                f"damaged. Nothing was changed; delete {stage}/{COMPLETE_MARKER} and rerun "
                "to rebuild the stage (--force reads the marker too)."
            )
        return marker

    def is_complete(self, stage: str) -> bool:
        """True when the stage's output has been committed (current or not)."""
        return self.exists(stage, COMPLETE_MARKER)

    def require(self, stage: str) -> None:
        """Raise MissingStageOutput unless ``stage`` is complete (naming the command that
        makes it, from the stage registry)."""
        if not self.is_complete(stage):
            command = COMMAND_OF_OUTPUT.get(stage, stage)
            raise MissingStageOutput(
                f"no complete {stage}/ in {self.root}: run `msr-ray {command}` first"
            )

    def output_path(self, *parts: str) -> str:
        """Path of a file of a committed stage output, resolved to its version folder.

        ``output_path("dataset", "items.parquet")`` -> ``<run>/dataset/<version>/items.parquet``;
        paths that are not inside a committed stage output are returned unchanged.
        """
        return self.path(*self._resolve(parts)[0])

    def _resolve(self, parts: tuple[str, ...]) -> tuple[list[str], dict[str, Any] | None]:
        """``parts`` with the committed version inserted after the stage, and its marker."""
        for depth in range(1, min(MAX_STAGE_DEPTH, len(parts)) + 1):
            if parts[depth : depth + 1] == (COMPLETE_MARKER,):
                break
            stage = "/".join(parts[:depth])
            if self.is_complete(stage):
                marker = self.completion(stage)
                return [*parts[:depth], marker["version"], *parts[depth:]], marker
        return list(parts), None

    @contextmanager
    def stage_output(
        self,
        stage: str,
        metadata: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> Iterator[StageOutput]:
        """Write a new version of a stage's output; commit it when the block exits normally.

        Yields the new version's folder. On an exception the folder is removed and the
        earlier committed output, if any, is left as it was. ``fingerprint`` records what
        the output was built from (stages pass ``build_fingerprint(stage)``); None marks an
        output made outside the pipeline (an imported table), which counts as current.
        ``stage`` may be nested (``scores/x``).
        """
        version = f"v{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
        self._remove_uncommitted_versions(stage)
        folder = self.confined(self.path(stage, version))
        self.fs.create_dir(folder, recursive=True)
        out = StageOutput(self.fs, folder, dict(metadata or {}))
        try:
            yield out
        except BaseException:
            self._delete(folder, directory=True)
            raise
        previous = self.completion(stage)["version"] if self.is_complete(stage) else None
        files = sorted(
            info.path[len(folder) + 1 :]
            for info in self.fs.get_file_info(pafs.FileSelector(folder, recursive=True))
            if info.type == pafs.FileType.File
        )
        marker = {
            **out.metadata,
            "stage": stage,
            "version": version,
            "files": files,
            "fingerprint": fingerprint,
            "completed_at": time.time(),
        }
        self.write_json(marker, stage, COMPLETE_MARKER)
        if previous and previous != version:
            self._delete(self.path(stage, previous), directory=True)

    def _remove_uncommitted_versions(self, stage: str) -> None:
        """Delete version folders of ``stage`` that no marker names (left by a crash)."""
        if not self.exists(stage):
            return
        committed = self.completion(stage)["version"] if self.is_complete(stage) else None
        for info in self.fs.get_file_info(pafs.FileSelector(self.path(stage))):
            name = info.base_name
            if info.type == pafs.FileType.Directory and name != committed:
                if VERSION_NAME.fullmatch(name):
                    self._delete(info.path, directory=True)

    # -- resumable parts ---------------------------------------------------------------

    def append_part(self, table: pa.Table, stage: str, key: str) -> str:
        """Durably add one Parquet part to a resumable stage's parts for ``key``."""
        folder = self.confined(self.path("_parts", stage, key))
        self.fs.create_dir(folder, recursive=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        if self.local:
            tmp = f"{folder}/{TEMP_PREFIX}{name}"
            pq.write_table(table, tmp, filesystem=self.fs)
            self.fs.move(tmp, f"{folder}/{name}")
        else:
            pq.write_table(table, f"{folder}/{name}", filesystem=self.fs)
        return f"{folder}/{name}"

    def read_parts(self, stage: str, key: str) -> pa.Table | None:
        """Every committed part of a resumable stage for ``key``, or None when there is none."""
        if not self.exists("_parts", stage, key):
            return None
        try:
            return self.read_table("_parts", stage, key)
        except FileNotFoundError:
            return None

    def drop_parts(self, stage: str) -> None:
        """Forget every resumable part of a stage (all keys)."""
        if self.exists("_parts", stage):
            self._delete(self.path("_parts", stage), directory=True)

    # -- files -----------------------------------------------------------------------

    def confined(self, path: str) -> str:
        """``path`` if it lies inside the run directory once links are resolved, else
        ``OutsideRunDirectory``. Object-store keys have no links: a key must start with
        the run's prefix and hold no ``..`` or ``.`` segment."""
        if self.local:
            root = os.path.realpath(self.root)
            resolved = os.path.realpath(path)
            inside = resolved.startswith(root + os.sep)
        else:
            segments = path[len(self.root) + 1 :].split("/")
            inside = path.startswith(self.root + "/") and not {".", "..", ""} & set(segments)
        if not inside:
            raise OutsideRunDirectory(
                f"refusing to touch {path}: it resolves outside the run directory "
                f"{self.uri_of()} (a link or an edited file points out of it)"
            )
        return path

    def _delete(self, path: str, directory: bool) -> None:
        """Delete a file or folder of the run; never one outside it (``confined``). A
        link inside the run is removed itself, never what it points to."""
        if self.local and os.path.islink(path):
            self.confined(os.path.dirname(path) + "/_")  # the link's own folder
            os.unlink(path)
            return
        self.confined(path)
        if directory:
            self.fs.delete_dir(path)
        else:
            self.fs.delete_file(path)

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write a file of the run atomically (tmp + rename locally, one PUT on S3)."""
        target = self.confined(self.path(*parts))
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.local:
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return target
        tmp = f"{parent}/{TEMP_PREFIX}{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, target)
        return target

    def _entries(self, parts: tuple[str, ...], kind: pafs.FileType) -> list[str]:
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(
            info.base_name
            for info in self.fs.get_file_info(selector)
            if info.type == kind and not info.base_name.startswith(TEMP_PREFIX)
        )

    def list_files(self, *parts: str) -> list[str]:
        """Names of the files directly in a folder of the run, sorted ([] when absent)."""
        return self._entries(parts, pafs.FileType.File)

    def list_dirs(self, *parts: str) -> list[str]:
        """Names of the folders directly in a folder of the run, sorted ([] when absent)."""
        return self._entries(parts, pafs.FileType.Directory)

    def copy_dir(self, *parts: str, to: str) -> str:
        """Copy a folder of the run (a committed stage output's files resolved to its
        version) into the local folder ``to``; returns ``to``."""
        os.makedirs(to, exist_ok=True)
        pafs.copy_files(
            self.output_path(*parts),
            to,
            source_filesystem=self.fs,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        return to

    def write_json(self, obj: Any, *parts: str) -> str:
        """Write JSON atomically."""
        text = json.dumps(obj, indent=2, sort_keys=True, default=str)
        return self.write_bytes(text.encode(), *parts)

    def write_text(self, text: str, *parts: str) -> str:
        """Write a text file atomically."""
        return self.write_bytes(text.encode(), *parts)

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_text(*parts))

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode()

    def read_bytes(self, *parts: str) -> bytes:
        """A file of the run (inside a committed stage output: its committed version's)."""
        with self.fs.open_input_stream(self.output_path(*parts)) as f:
            return f.read()

    def read_table(self, *parts: str, columns: list[str] | None = None) -> pa.Table:
        """Read one Parquet file, or every Parquet file of a folder (hidden files ignored);
        only ``columns`` when given.

        Inside a committed stage output, only the files its marker lists are read.
        """
        resolved, marker = self._resolve(parts)
        folder = self.path(*resolved)
        if self.fs.get_file_info(folder).type == pafs.FileType.File:
            return pq.read_table(folder, columns=columns, filesystem=self.fs)
        files = sorted(
            info.path
            for info in self.fs.get_file_info(pafs.FileSelector(folder, recursive=True))
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith((".", "_"))
        )
        if marker is not None:
            version = self.path(marker["stage"], marker["version"])
            listed = {f"{version}/{name}" for name in marker["files"]}
            files = [f for f in files if f in listed]
        if not files:
            raise FileNotFoundError(f"no Parquet files in {folder}")
        return pa.concat_tables(
            [pq.read_table(f, columns=columns, filesystem=self.fs) for f in files],
            promote_options="default",
        )

    # -- one writer at a time --------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory's exclusive writer lock for the block.

        Raises ``RunDirLocked`` naming the holder when another command has it. Local: an
        ``flock`` on ``_LOCK`` (released by the OS when the holder dies). Object stores: a
        ``_LOCK`` object removed on exit, whose heartbeat a thread refreshes every third of
        the lease (``MSR_RAY_LOCK_LEASE_S``, default 600 s); one without a heartbeat for
        longer than the lease (its holder was killed) is taken over with a
        ``StaleLockTakenOver`` warning naming the old holder. Leftover temporary files are removed once the lock is held.
        Re-entrant within one process (``pipeline`` holds it across its stages).
        """
        key = f"{type(self.fs).__name__}:{self.root}"
        if _HELD.get(key):
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        _HELD[key] = 1
        try:
            with self._exclusive():
                yield
        finally:
            del _HELD[key]

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if self.local:
            with self._local_lock():
                self._remove_temporary_files()
                yield
            return
        lease = lock_lease_seconds()
        if self.exists(LOCK_FILE):
            holder = self.read_json(LOCK_FILE)
            silent = time.time() - float(holder.get("heartbeat", holder.get("since", 0)))
            if silent <= lease:
                raise RunDirLocked(
                    f"{self.uri} is in use by {_describe(holder)}, whose last heartbeat was "
                    f"{silent:.0f} s ago; the lock is taken over after {lease:.0f} s without "
                    f"one ({LEASE_ENV})."
                )
            warnings.warn(
                f"taking over the lock of {self.uri}: its holder {_describe(holder)} sent no "
                f"heartbeat for {silent:.0f} s (lease {lease:.0f} s), so it is taken as dead",
                StaleLockTakenOver,
                stacklevel=3,
            )
        holder = _holder()
        self.write_json({**holder, "heartbeat": holder["since"], "lease_s": lease}, LOCK_FILE)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(holder, lease, stop), name="msr-ray-lock", daemon=True
        )
        beat.start()
        try:
            self._remove_temporary_files()
            yield
        finally:
            stop.set()
            beat.join()
            self._delete(self.path(LOCK_FILE), directory=False)

    def _heartbeat(self, holder: dict[str, Any], lease: float, stop: threading.Event) -> None:
        """Refresh the object-store lock's heartbeat every third of its lease until ``stop``."""
        while not stop.wait(lease / 3):
            try:
                self.write_json({**holder, "heartbeat": time.time(), "lease_s": lease}, LOCK_FILE)
            except OSError as error:  # a missed beat; the next one retries
                warnings.warn(f"lock heartbeat failed: {error}", RuntimeWarning, stacklevel=1)

    @contextmanager
    def _local_lock(self) -> Iterator[None]:
        import fcntl

        path = self.path(LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            if os.path.islink(path):
                raise OutsideRunDirectory(
                    f"{path} is a symbolic link; the lock never follows one (it would "
                    "truncate the file it points to). Delete the link and rerun."
                ) from None
            raise error
        with os.fdopen(fd, "r+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                try:
                    holder = json.loads(handle.read() or "{}")
                except ValueError:
                    holder = {}
                raise RunDirLocked(
                    f"{self.uri} is in use by {_describe(holder)}; wait for it to finish"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(_holder()))
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_temporary_files(self) -> None:
        """Delete temporary files that a killed writer left behind.

        Never descends into a link, and leaves ``UNLOCKED_FOLDERS`` alone (their writers
        do not take the lock, so a temporary file there may be in flight).
        """
        skip = tuple(f"{self.root}/{name}" for name in UNLOCKED_FOLDERS)
        if self.local:
            for folder, dirs, files in os.walk(self.root, followlinks=False):
                dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
                for name in files:
                    path = os.path.join(folder, name)
                    if name.startswith(TEMP_PREFIX) and not os.path.islink(path):
                        self._delete(path, directory=False)
            return
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True)):
            inside_skipped = any(info.path.startswith(f"{s}/") for s in skip)
            if (
                info.type == pafs.FileType.File
                and info.base_name.startswith(TEMP_PREFIX)
                and not inside_skipped
            ):
                self._delete(info.path, directory=False)


def lock_lease_seconds() -> float:
    """How long an object-store lock lives without a heartbeat (``MSR_RAY_LOCK_LEASE_S``)."""
    raw = os.environ.get(LEASE_ENV, "")
    try:
        lease = float(raw) if raw else DEFAULT_LEASE_S
    except ValueError:
        raise ValueError(f"{LEASE_ENV}={raw!r}: give the lease in seconds") from None
    if not lease > 0 or lease == float("inf"):
        raise ValueError(f"{LEASE_ENV}={raw!r}: give a positive, finite number of seconds")
    return lease


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another command"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return (
        f"`{holder.get('command', '?')}` (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {since})"
    )
