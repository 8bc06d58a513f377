"""Run directories: where every stage reads and writes, locally or on any pyarrow filesystem.

A stage's output is a folder ``<run>/<stage>/``. It is written under a temporary
name, moved into place and then sealed with a ``_COMPLETE.json`` marker; only a
sealed folder counts as complete, so a crash mid-write never leaves output that
looks whole. Resumable stages keep append-only parts under ``<run>/_parts/<stage>/``
(each part written under a temporary name and renamed).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

COMPLETE_MARKER = "_COMPLETE.json"


def absolute_location(uri: str) -> str:
    """A local relative path made absolute against this process's cwd; URIs unchanged.

    Other processes (Ray actors, Ray Train workers in the session's artifacts dir, Serve
    replicas) reopen a run directory and need not share this working directory.
    """
    return uri if "://" in uri else os.path.abspath(uri)


class MissingStageOutput(RuntimeError):
    """A stage needs another stage's complete output, and it is not there."""


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


class RunDir:
    """A run directory given as a local path or a filesystem URI (``s3://...``)."""

    def __init__(self, uri: str):
        if "://" in uri:
            self.fs, root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, root = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.uri = uri
        self.root = root.rstrip("/")
        self.fs.create_dir(self.root, recursive=True)

    def path(self, *parts: str) -> str:
        """Absolute path (on this run's filesystem) of a file or folder in the run."""
        return "/".join([self.root, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def is_complete(self, stage: str) -> bool:
        """True when the stage's output folder exists and is sealed."""
        return self.exists(stage, COMPLETE_MARKER)

    def require(self, stage: str, command: str) -> None:
        """Raise MissingStageOutput unless ``stage`` is complete (``command`` makes it)."""
        if not self.is_complete(stage):
            raise MissingStageOutput(
                f"no complete {stage}/ in {self.root}: run `msr-ray {command}` first"
            )

    def completion(self, stage: str) -> dict[str, Any]:
        """The metadata a complete stage was sealed with."""
        return self.read_json(stage, COMPLETE_MARKER)

    @contextmanager
    def stage_output(
        self, stage: str, metadata: dict[str, Any] | None = None
    ) -> Iterator[StageOutput]:
        """Write a stage's output atomically.

        Yields a temporary folder; when the block exits normally the folder replaces
        ``<stage>/`` and is sealed. On an exception the temporary folder is removed
        and any earlier complete output is left as it was. ``stage`` may be nested
        (``scores/sasrec``); the temporary folder is its sibling.
        """
        parent, _, name = stage.rpartition("/")
        tmp = self.path(*([parent] if parent else []), f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        self.fs.create_dir(tmp, recursive=True)
        out = StageOutput(self.fs, tmp, dict(metadata or {}))
        try:
            yield out
        except BaseException:
            self.fs.delete_dir(tmp)
            raise
        final = self.path(stage)
        if self.exists(stage):
            self.fs.delete_dir(final)
        self.fs.move(tmp, final)
        marker = {"stage": stage, "completed_at": time.time(), **out.metadata}
        self.write_json(marker, stage, COMPLETE_MARKER)

    def invalidate(self, stage: str) -> None:
        """Forget a stage's output (used by ``--force``): remove the folder and its parts."""
        for parts in ((stage,), ("_parts", stage)):
            if self.exists(*parts):
                self.fs.delete_dir(self.path(*parts))

    def write_json(self, obj: Any, *parts: str) -> str:
        """Write JSON atomically (temporary file, then rename)."""
        target = self.path(*parts)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex[:8]}.json"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True, default=str).encode())
        self.fs.move(tmp, target)
        return target

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_text(*parts))

    def read_text(self, *parts: str) -> str:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read().decode()

    def write_text(self, text: str, *parts: str) -> str:
        """Write a text file atomically."""
        target = self.path(*parts)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(text.encode())
        self.fs.move(tmp, target)
        return target

    def read_table(self, *parts: str) -> pa.Table:
        """Read one Parquet file, or every Parquet file of a folder (hidden files ignored)."""
        folder = self.path(*parts)
        if self.fs.get_file_info(folder).type == pafs.FileType.File:
            return pq.read_table(folder, filesystem=self.fs)
        files = sorted(
            info.path
            for info in self.fs.get_file_info(pafs.FileSelector(folder, recursive=True))
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith((".", "_"))
        )
        if not files:
            raise FileNotFoundError(f"no Parquet files in {folder}")
        return pa.concat_tables(
            [pq.read_table(f, filesystem=self.fs) for f in files], promote_options="default"
        )

    def append_part(self, table: pa.Table, stage: str) -> str:
        """Durably add one Parquet part to a resumable stage's parts folder."""
        folder = self.path("_parts", stage)
        self.fs.create_dir(folder, recursive=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = f"{folder}/.{name}.tmp"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, f"{folder}/{name}")
        return f"{folder}/{name}"

    def read_parts(self, stage: str) -> pa.Table | None:
        """Every committed part of a resumable stage, or None when there is none."""
        if not self.exists("_parts", stage):
            return None
        try:
            return self.read_table("_parts", stage)
        except FileNotFoundError:
            return None
