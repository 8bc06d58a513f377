"""Rank 0's training progress in the run directory, which the driver shows on the console
while ``fit`` runs (no Ray here)."""

from __future__ import annotations

import time

from msr_ray.run.rundir import RunDir

PROGRESS_EVERY_S = 2.0


def progress_file(key: str) -> tuple[str, str]:
    """Where rank 0 writes the progress of the training build ``key``, in the run."""
    return ("train_logs", f"progress-{key}.json")


class ProgressFile:
    """Rank 0's latest step, written at most every ``PROGRESS_EVERY_S`` (the driver shows
    it on the console while ``fit`` runs)."""

    def __init__(self, run_dir: RunDir, key: str):
        self.run_dir, self.key, self.written = run_dir, key, 0.0

    def update(self, epoch: int, step: int, loss: float) -> None:
        now = time.monotonic()
        if now - self.written >= PROGRESS_EVERY_S:
            record = {"epoch": epoch, "step": step, "loss": loss}
            self.run_dir.write_json(record, *progress_file(self.key))
            self.written = now
