"""Running stages by name, in order, against one run directory."""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from msr_ray.config import PipelineConfig, dump_config
from msr_ray.models.families import check_models
from msr_ray.run import provenance
from msr_ray.run.registry import STAGES, STAGES_BY_COMMAND
from msr_ray.run.rundir import NotARunDirectory, RunDir, absolute_location

log = logging.getLogger(__name__)


def run_stage(
    command: str, config: PipelineConfig, force: bool = False, address: str | None = None
) -> dict[str, Any]:
    """Run one stage under the run's writer lock; skip it when its output is current.

    Current means built from this config's relevant fields and today's upstream outputs
    (``msr_ray.run.provenance``); ``force`` rebuilds it anyway. The old output stays readable
    until the new one is committed. ``config.yaml`` records the config of the last stage
    that ran (a skipped stage leaves it alone).
    """
    config = config.model_copy(update={"run_dir": absolute_location(config.run_dir)})
    check_models({"mllm": config.mllm, "llm": config.llm})
    stage = STAGES_BY_COMMAND[command]
    module = importlib.import_module(stage.module)
    run = RunDir(config.run_dir)
    with run.lock():
        skipped = None if force else skipped_summary(command, config, run)
        if skipped:
            log.info("%s: current output in %s, skipped", command, run.uri_of(stage.output))
            return skipped
        provenance.check_upstream(stage.output, config, run)
        context = provenance.build_context(stage.output, config, run)
        if force:
            run.drop_parts(stage.output)
        run.write_text(dump_config(config), "config.yaml")
        if stage.needs_ray:
            from msr_ray.run.cluster import init_ray

            init_ray(address)
        start = time.perf_counter()
        summary = module.build(context)
        summary = {"stage": command, "skipped": False, **summary}
        summary["seconds"] = round(time.perf_counter() - start, 3)
        if summary.get("complete") is not False and run.is_complete(stage.output):
            summary["output"] = run.uri_of(stage.output, run.completion(stage.output)["version"])
        run.write_json(summary, "summaries", f"{stage.output}.json")
        log.info("%s: %s", command, json.dumps(summary, default=str))
        return summary


def skipped_summary(command: str, config: PipelineConfig, run: RunDir) -> dict[str, Any] | None:
    """The summary of skipping ``command`` when its output is current, else None (reads only)."""
    stage = STAGES_BY_COMMAND[command]
    if provenance.state(stage.output, config, run) != "current":
        return None
    marker = {k: v for k, v in run.completion(stage.output).items() if k != "files"}
    output = run.uri_of(stage.output, marker["version"])
    return {**marker, "stage": command, "skipped": True, "output": output}


def current_without_writing(command: str, config: PipelineConfig) -> dict[str, Any] | None:
    """``skipped_summary`` of a run that exists, read without the lock or any write: a
    current stage is then skipped on a read-only filesystem too. None when it must run."""
    try:
        run = RunDir(absolute_location(config.run_dir), create=False)
    except NotARunDirectory:
        return None
    return skipped_summary(command, config, run)


def run_pipeline(
    config: PipelineConfig,
    force: bool = False,
    address: str | None = None,
    on_stage: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every stage in order; stop after one whose output is partial. Their summaries.

    ``on_stage`` is called with each stage's summary as soon as the stage ends.
    """
    summaries = []
    run = RunDir(absolute_location(config.run_dir))
    with run.lock():
        for stage in STAGES:
            summary = run_stage(stage.command, config, force=force, address=address)
            summaries.append(summary)
            if on_stage:
                on_stage(summary)
            if summary.get("complete") is False:
                # Partial output (e.g. a max_items budget): later stages wait for the rest.
                break
    return summaries


def run_status(config: PipelineConfig) -> list[dict[str, Any]]:
    """Every stage of the run: its state (current, stale, missing, or partial: parts of an
    unfinished build and no output), key counts, time, path.

    Reads only; takes no lock and changes nothing (a path that is not a run yet raises
    ``NotARunDirectory`` and stays as it was).
    """
    run = RunDir(absolute_location(config.run_dir), create=False)
    rows = []
    for stage in STAGES:
        state = provenance.state(stage.output, config, run)
        row: dict[str, Any] = {"stage": stage.command, "state": state, "path": None}
        if run.is_complete(stage.output):
            marker = run.completion(stage.output)
            row["path"] = run.uri_of(stage.output, marker["version"])
            row["completed_at"] = marker.get("completed_at")
            row["counts"] = {k: marker[k] for k in stage.status_counts if k in marker}
            if run.exists("summaries", f"{stage.output}.json"):
                row["seconds"] = run.read_json("summaries", f"{stage.output}.json").get("seconds")
        elif run.exists("_parts", stage.output):
            row["state"] = "partial" if state == "missing" else state
        rows.append(row)
    return rows
