"""`msr-ray`: one subcommand per pipeline stage (prepare, summarize-items, summarize-users,
build-samples, train, evaluate), `pipeline` and `demo` (all stages), `baseline`, `report`,
`status` and `export`. A stage skips itself when its output is current: built from this
config's relevant settings and today's upstream outputs."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import re
import sys
import typing
import warnings
from pathlib import Path

import click

from msr_ray.config import ConfigError, DeprecatedKey, PipelineConfig, load_config
from msr_ray.data.schemas import DataError
from msr_ray.evaluation.baselines import BASELINES
from msr_ray.evaluation.metrics import TABLE_METRICS, format_table
from msr_ray.models.families import UnsupportedModel
from msr_ray.run.cluster import VERBOSE_ENV
from msr_ray.run.pipeline import (
    current_without_writing,
    run_pipeline,
    run_stage,
    run_status,
)
from msr_ray.run.registry import EVAL_OUTPUT, STAGES, STAGES_BY_COMMAND, CliOption, StageInfo
from msr_ray.run.rundir import (
    MissingStageOutput,
    NotARunDirectory,
    OutsideRunDirectory,
    RunDir,
    RunDirLocked,
)
from msr_ray.run.runlogs import captured

# Errors a user fixes (a missing stage, bad data, a wrong or busy run directory): one line,
# no traceback.
USER_ERRORS = (
    MissingStageOutput,
    DataError,
    NotARunDirectory,
    RunDirLocked,
    OutsideRunDirectory,
    UnsupportedModel,
)

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def _config_options(func):
    """Options that choose the config and the run directory."""

    @click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="Pipeline config YAML (defaults are used for anything it leaves out).",
    )
    @click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one config field, e.g. --set users.block_size=4 (repeatable).",
    )
    @click.option(
        "--run-dir", help="Run directory (local path or s3://... URI); overrides run_dir."
    )
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def _common_options(func):
    """Options every stage command takes: the config ones, --force and --address."""

    @_config_options
    @click.option("--force", is_flag=True, help="Rebuild even if the output is current.")
    @click.option(
        "--address",
        envvar="RAY_ADDRESS",
        help="Ray cluster address (default: $RAY_ADDRESS, else a local instance).",
    )
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def _load(
    config_path: str | None,
    overrides: tuple[str, ...],
    run_dir: str | None,
    extra: list[str] | None = None,
) -> PipelineConfig:
    items = list(overrides) + (extra or [])
    if run_dir:
        items.append(f"run_dir={run_dir}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecatedKey)
            config = load_config(config_path, items)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for warning in caught:
        if issubclass(warning.category, DeprecatedKey):
            click.echo(f"Warning: {warning.message}", err=True)
        else:
            warnings.warn(warning.message, warning.category, stacklevel=2)
    return config


def _print_summary(summary: dict) -> None:
    click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))


def _result_line(summary: dict) -> str:
    """One console line per stage: what it did, its key counts, its time and its output.

    The full summary is in the run's ``summaries/<output>.json``.
    """
    stage = summary["stage"]
    if summary.get("skipped"):
        state = "current, skipped"
    elif summary.get("complete") is False:
        state = "partial (rerun to continue)"
    else:
        state = "done"
    parts = []
    for key in STAGES_BY_COMMAND[stage].status_counts:
        value = summary.get(key)
        if isinstance(value, dict):  # e.g. rows_by_split: "rows train 84 / test 108"
            name = key.split("_by_")[0]
            parts.append(f"{name} " + " / ".join(f"{k} {v}" for k, v in value.items()))
        elif value is not None:
            parts.append(f"{key.replace('_', ' ')} {value}")
    counts = ", ".join(parts)
    seconds = f" in {summary['seconds']:.0f} s" if summary.get("seconds") is not None else ""
    where = f" -> {summary['output']}" if summary.get("output") else ""
    return f"{stage}: {state}{seconds}" + (f" ({counts})" if counts else "") + where


def _run_one(command: str, config: PipelineConfig, force: bool, address: str | None) -> None:
    skipped = None if force else current_without_writing(command, config)
    if skipped:  # nothing is written, not even a log: a read-only run can be "rerun"
        summary = skipped
    else:
        try:
            with captured(RunDir(config.run_dir), command):
                summary = run_stage(command, config, force=force, address=address)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(_result_line(summary))
    if command == "evaluate" and summary.get("output"):
        click.echo(_metrics_table(RunDir(config.run_dir, create=False), config))


def _metrics_table(run: RunDir, config: PipelineConfig) -> str:
    """The metrics of the run's last evaluated split, every model a row; with
    ``evaluate.full_catalogue``, its two rows, HR and NDCG at its largest K, and the
    paired difference."""
    from msr_ray.evaluation.full_catalogue import describe_difference, headline_metrics
    from msr_ray.evaluation.report import collect_full_catalogue, collect_metrics

    split = config.evaluate.splits[-1]
    results = collect_metrics(run)
    full = collect_full_catalogue(run) if split == "test" else None
    if full is None:
        return format_table(results, split=split)
    table = format_table(
        {**results, **full["metrics"]}, split, (*TABLE_METRICS, *headline_metrics(full))
    )
    return f"{table}\n{describe_difference(full)}"


# Filesystem errors a user fixes: errno -> what to do.
FILESYSTEM_ADVICE = {
    errno.EROFS: "the run directory is on a read-only filesystem: give a writable --run-dir",
    errno.ENOSPC: "the disk is full: free space or give a --run-dir on another disk, then "
    "rerun (finished work is kept)",
    errno.EDQUOT: "the disk quota is used up: free space, then rerun (finished work is kept)",
    errno.EACCES: "permission denied: give a --run-dir you can write to",
}


def filesystem_error(exc: OSError) -> str | None:
    """One line for an ``OSError`` a user fixes (read-only, full, not permitted), else None.

    pyarrow's filesystems raise ``OSError`` without ``errno`` and with ``[Errno N]`` in
    the message; both forms are read."""
    code = exc.errno
    if code is None:
        found = re.search(r"\[Errno (\d+)\]", str(exc))
        code = int(found.group(1)) if found else None
    if code not in FILESYSTEM_ADVICE:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    detail = os.strerror(code)
    return f"cannot write{where} ({detail}): {FILESYSTEM_ADVICE[code]}. {str(exc)[:200]}"


class _Commands(click.Group):
    """The command group: filesystem errors a user fixes become one ``Error:`` line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OSError as exc:
            line = filesystem_error(exc)
            if line is None:
                raise
            raise click.ClickException(line) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show Ray's and the workers' logs and library warnings (else: one line per stage).",
)
@click.version_option(package_name="msr-ray")
def main(verbose: bool) -> None:
    """MLLM-MSR on Ray: multimodal sequential recommendation with multimodal LLMs.

    Stages, in order: prepare -> summarize-items -> summarize-users ->
    build-samples -> train -> evaluate. Each reads and writes Parquet tables in
    one run directory and skips itself when its output is current (built from this
    config's relevant settings and today's upstream outputs; `msr-ray status` shows which).
    """
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        level = logging.DEBUG
    else:
        # Libraries' warnings stay off the console; Ray's worker processes inherit this.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", category=FutureWarning)
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _stage_command(stage: StageInfo) -> None:
    """The command of one stage, from its descriptor: the common options, its own
    (each overriding a config key), and its help."""

    def cmd(config_path, overrides, run_dir, force, address, **own):
        extra = [
            f"{option.key}={own[_dest(option)]}"
            for option in stage.options
            if own[_dest(option)] is not None
        ]
        config = _load(config_path, overrides, run_dir, extra)
        _run_one(stage.command, config, force, address)

    cmd.__doc__ = stage.help
    for option in reversed(stage.options):
        choices = _choices(option.key)
        kind = click.Choice(choices) if choices else None
        cmd = click.option(
            option.flag, _dest(option), type=kind, help=f"{option.help} (overrides {option.key})."
        )(cmd)
    main.command(name=stage.command)(_common_options(cmd))


def _choices(key: str) -> list[str]:
    """The values a config key allows when its field is a Literal (else none)."""
    section, name = key.split(".")
    field = PipelineConfig.model_fields[section].annotation.model_fields[name]
    if typing.get_origin(field.annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(field.annotation)]
    return []


def _dest(option: CliOption) -> str:
    return "own_" + option.flag.lstrip("-").replace("-", "_")


for _stage in STAGES:
    _stage_command(_stage)


def _run_all(
    config: PipelineConfig, force: bool, address: str | None, compare: bool = False
) -> None:
    """Run the pipeline; with ``compare``, also score the baselines and write the report."""
    from msr_ray.evaluation.baselines.kept import cli_name
    from msr_ray.evaluation.baselines.runner import refresh_baseline
    from msr_ray.evaluation.report import build_report

    full_catalogue = config.evaluate.full_catalogue
    retriever = cli_name(full_catalogue.retriever) if full_catalogue else None

    def on_stage(summary: dict) -> None:
        click.echo(_result_line(summary))
        if retriever and summary["stage"] == "build-samples":
            # evaluate reads the retriever: train it as soon as its inputs exist.
            trained = refresh_baseline(config, run, retriever, force)
            state = f"done in {trained['train_seconds']:.0f} s" if trained else "current"
            click.echo(f"baseline {retriever} (evaluate's retriever): {state}")

    try:
        run = RunDir(config.run_dir)
        with captured(run, "demo" if compare else "pipeline"):
            run_pipeline(config, force=force, address=address, on_stage=on_stage)
            if compare and run.is_complete(EVAL_OUTPUT):
                with run.lock():
                    for model in BASELINES:
                        if model != retriever:  # trained above, read by eval since
                            refresh_baseline(config, run, model, force)
                    click.echo(f"Report: {build_report(run)['path']}")
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    if run.is_complete(EVAL_OUTPUT):
        click.echo(_metrics_table(run, config))
    click.echo(f"Run directory: {run.root} (logs in {run.path('logs')})")


@main.command()
@_config_options
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    type=click.Choice(list(BASELINES)),
    help="Baseline to train and score (repeatable).",
)
def baseline(config_path, overrides, run_dir, models):
    """Train a sequential baseline and score the samples' valid/test candidates.

    Popularity, SASRec or GRU4Rec, trained on the train split, scored on exactly the
    candidate lists the MLLM is scored on. Writes scores/<model>/ and baselines/<model>/
    (metrics.json, and the trained model: model.json, model.pt).
    """
    from msr_ray.evaluation.baselines.runner import run_baseline

    config = _load(config_path, overrides, run_dir)
    results = {}
    try:
        run = RunDir(config.run_dir)
        with run.lock():
            for model in models:
                summary = run_baseline(config, run, model)
                results[summary["model"]] = summary["metrics"]
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_table(results, split=config.evaluate.splits[-1]))


@main.command()
@_config_options
@click.option("--max-users", default=6, show_default=True, help="User cards to show.")
def report(config_path, overrides, run_dir, max_users):
    """Render <run>/report/<version>/index.html: dataset, metrics with CIs, plots, user cards.

    Sections appear for whatever the run holds; images are copied so it opens offline.
    """
    from msr_ray.evaluation.report import build_report

    config = _load(config_path, overrides, run_dir)
    try:
        run = RunDir(config.run_dir)
        with run.lock():
            _print_summary(build_report(run, max_users))
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@_config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(config_path, overrides, run_dir, as_json):
    """Each stage of a run: current, stale, partial or missing, with counts, time and path.

    current: built from this config and the current upstream outputs; stale: built from
    other inputs or settings (the next run rebuilds it); partial: resumable parts exist.
    Without --config the run is compared with its own config.yaml.
    """
    from msr_ray.config import parse_config

    try:
        if config_path or not run_dir:
            config = _load(config_path, overrides, run_dir)
        else:
            run = RunDir(run_dir, create=False)
            text = run.read_text("config.yaml") if run.exists("config.yaml") else ""
            config = parse_config(text, run.path("config.yaml"), [*overrides, f"run_dir={run_dir}"])
        rows = run_status(config)
    except (*USER_ERRORS, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo(f"Run directory: {config.run_dir}")
    for row in rows:
        counts = ", ".join(f"{k} {v}" for k, v in (row.get("counts") or {}).items())
        seconds = f"{row['seconds']:.0f} s" if row.get("seconds") is not None else ""
        click.echo(
            f"{row['stage']:<16} {row['state']:<8} {seconds:>7}  {counts}"
            + (f"\n{'':<16} {row['path']}" if row["path"] else "")
        )


@main.command()
@click.option("--run-dir", required=True, help="A run whose train stage is complete.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New local folder.")
def export(run_dir, out):
    """Write the trained recommender as one Hugging Face folder (adapter merged).

    Loadable with AutoProcessor + AutoModelForImageTextToText from the folder alone;
    holds msr_ray_recommender.json (prompt settings, answer token ids) and a model card.
    """
    from msr_ray.export import export_model

    try:
        result = export_model(RunDir(run_dir, create=False), out)
    except (*USER_ERRORS, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Exported the recommender to {result['path']}")


@main.command()
@_common_options
def pipeline(config_path, overrides, run_dir, force, address):
    """Run every stage in order from one config, skipping current ones."""
    _run_all(_load(config_path, overrides, run_dir), force, address)


@main.command()
@_common_options
def demo(config_path, overrides, run_dir, force, address):
    """Run the pipeline on the embedded synthetic dataset with the embedded models.

    Then scores the Popularity, SASRec and GRU4Rec baselines on the same candidates,
    writes the HTML report and prints the metrics table. Needs no downloads and no data
    outside the package; writes runs/demo/ by default.
    The base config is msr_ray/configs/demo.yaml (--config replaces it, --set adjusts it).
    """
    config = _load(config_path or str(DEMO_CONFIG), overrides, run_dir)
    _run_all(config, force, address, compare=True)


if __name__ == "__main__":
    sys.exit(main())
