"""The stage registry: each stage's command, output folder and module (imports nothing).

The one place that names a stage's output and the command that makes it; the pipeline
runs stages from it, and ``RunDir.require`` and provenance name the command to run from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageInfo:
    """A pipeline stage: its CLI command, output folder, module, and whether it needs Ray."""

    command: str
    output: str
    module: str
    needs_ray: bool


STAGES: list[StageInfo] = [
    StageInfo("prepare", "dataset", "msr_ray.stages.prepare", False),
    StageInfo("summarize-items", "item_summaries", "msr_ray.stages.items", True),
    StageInfo("summarize-users", "user_summaries", "msr_ray.stages.users", True),
    StageInfo("build-samples", "samples", "msr_ray.stages.samples", False),
    StageInfo("train", "train", "msr_ray.stages.train", True),
    StageInfo("evaluate", "eval", "msr_ray.stages.evaluate", True),
]
STAGES_BY_COMMAND = {s.command: s for s in STAGES}
COMMAND_OF_OUTPUT = {s.output: s.command for s in STAGES}
