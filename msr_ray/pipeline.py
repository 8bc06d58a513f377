"""Running stages by name, in order, against one run directory."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from msr_ray.config import PipelineConfig, dump_config
from msr_ray.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageInfo:
    """A pipeline stage: its CLI command, output folder, module and tracking issue."""

    command: str
    output: str
    module: str
    issue: int
    needs_ray: bool


STAGES: list[StageInfo] = [
    StageInfo("prepare", "dataset", "msr_ray.stages.prepare", 3, False),
    StageInfo("summarize-items", "item_summaries", "msr_ray.stages.items", 5, True),
    StageInfo("summarize-users", "user_summaries", "msr_ray.stages.users", 6, True),
    StageInfo("build-samples", "samples", "msr_ray.stages.samples", 7, False),
    StageInfo("train", "train", "msr_ray.stages.train", 7, True),
    StageInfo("evaluate", "eval", "msr_ray.stages.evaluate", 7, True),
]
STAGES_BY_COMMAND = {s.command: s for s in STAGES}


class StageNotAvailable(RuntimeError):
    """The stage's implementation has not landed yet."""


def stage_module(stage: StageInfo):
    """Import a stage's module, or say which issue will provide it."""
    try:
        return importlib.import_module(stage.module)
    except ModuleNotFoundError as exc:
        if exc.name != stage.module:
            raise
        raise StageNotAvailable(
            f"stage '{stage.command}' is not implemented yet (tracked in issue #{stage.issue})"
        ) from None


def is_available(stage: StageInfo) -> bool:
    try:
        stage_module(stage)
    except StageNotAvailable:
        return False
    return True


def open_run(config: PipelineConfig) -> RunDir:
    """Open the run directory and record the resolved config in it."""
    run = RunDir(config.run_dir)
    run.write_text(dump_config(config), "config.yaml")
    return run


def run_stage(
    command: str, config: PipelineConfig, force: bool = False, address: str | None = None
) -> dict[str, Any]:
    """Run one stage; skip it when its complete output exists (unless ``force``)."""
    stage = STAGES_BY_COMMAND[command]
    module = stage_module(stage)
    run = open_run(config)
    if run.is_complete(stage.output) and not force:
        log.info("%s: complete output exists in %s, skipped", command, run.path(stage.output))
        return {"stage": command, "skipped": True, **run.completion(stage.output)}
    if force:
        run.invalidate(stage.output)
    if stage.needs_ray:
        from msr_ray.cluster import init_ray

        init_ray(address)
    start = time.perf_counter()
    summary = module.run(config, run)
    summary = {"stage": command, "skipped": False, **summary}
    summary["seconds"] = round(time.perf_counter() - start, 3)
    run.write_json(summary, "summaries", f"{stage.output}.json")
    return summary


def run_pipeline(
    config: PipelineConfig, force: bool = False, address: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every available stage in order; return their summaries and the missing stages."""
    summaries, missing = [], []
    for stage in STAGES:
        if not is_available(stage):
            missing.append(stage.command)
            continue
        if missing:
            # A later stage cannot run on top of a stage that does not exist yet.
            missing.append(stage.command)
            continue
        summary = run_stage(stage.command, config, force=force, address=address)
        summaries.append(summary)
        if summary.get("complete") is False:
            # Partial output (e.g. a max_items budget): later stages wait for the rest.
            break
    return summaries, missing
