"""What each stage's output is built from: fingerprints, and whether an output is current.

A stage's fingerprint hashes the config fields its output depends on (performance knobs
such as thread counts, actor counts and batch sizes left out), the msr-ray version, the
versions of the prompt templates and of the scoring that shape it
(``msr_ray.models.prompts``), the committed versions of the upstream outputs it reads (for ``evaluate`` with
``evaluate.full_catalogue``, the kept baseline that retrieves) and, for ``prepare``, a
listing of the source files (path, size, modification time) or the synthetic generator's
version, and a digest of the items posted online to the run (``online_items/``, left out
while none are, so a run that never had one keeps its fingerprints; a post makes
``dataset/`` stale, and its rebuild reads the posted items back).
The summaries of a run that samples its users also hash which users are summarized (and,
for item summaries, the history window and what picks the candidates), so two samples
that summarize the same users share their summaries.
An output is **current** when its marker carries the fingerprint computed now and every
upstream output is current; **stale** when it was built from something else; **missing**
when never committed. Stages seal with their build's fingerprint, which
the pipeline hands them in a ``BuildContext`` (no build starts without one); outputs committed explicitly without one
(tables imported by hand) count as current, whatever their upstream holds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow.fs as pafs

import msr_ray
from msr_ray.config import PipelineConfig
from msr_ray.data import synthetic
from msr_ray.data.sampling import reads_a_selection, sample_users
from msr_ray.models import prompts
from msr_ray.run.online_items import posted_digest
from msr_ray.run.registry import (
    BASELINES_OUTPUT,
    COMMAND_OF_OUTPUT,
    DATASET_OUTPUT,
    ITEM_SUMMARIES_OUTPUT,
    SAMPLES_OUTPUT,
    STAGES,
    USER_SUMMARIES_OUTPUT,
    Provenance,
)
from msr_ray.run.rundir import MissingFingerprint, MissingStageOutput, RunDir, StaleStageOutput

State = Literal["current", "stale", "missing"]

# Model fields that change speed or placement, not output.
_MODEL_KNOBS = ("num_threads", "cache_dir", "device")

# Every stage's provenance comes from its descriptor; the baselines are not a stage.
PROVENANCE: dict[str, Provenance] = {
    **{stage.output: stage.provenance for stage in STAGES},
    # The provenance name of every baseline (scores/<model>/ and baselines/<model>/).
    BASELINES_OUTPUT: Provenance(
        (
            "seed",
            "baselines",
            "evaluate.ks",
            "evaluate.bootstrap_samples",
            "evaluate.splits",
        ),
        (DATASET_OUTPUT, SAMPLES_OUTPUT),
    ),
}


def code_versions(output: str) -> dict[str, str]:
    """The versions of the code that shapes ``output`` (read at call time): the prompt
    templates' and the scoring's."""
    versions = {
        "summarize": prompts.PROMPT_VERSION,
        "recommend": prompts.RECOMMEND_PROMPT_VERSION,
        "scoring": prompts.SCORING_VERSION,
    }
    return {family: versions[family] for family in PROVENANCE[output].code_versions}


def _field(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        node = node[key]
    return node


def _without(value: Any, dotted: str, ignored: tuple[str, ...]) -> Any:
    if not isinstance(value, dict):
        return value
    out = {}
    for key, child in value.items():
        path = f"{dotted}.{key}"
        if path in ignored or (dotted in ("mllm", "llm") and key in _MODEL_KNOBS):
            continue
        out[key] = _without(child, path, ignored)
    return out


def upstream_of(output: str, config: PipelineConfig) -> tuple[str, ...]:
    """The outputs (folders) that ``output`` is built from under this config."""
    spec = PROVENANCE[output]
    shown = spec.with_descriptions and config.recommender.reads_item_summaries
    upstream = spec.upstream + ((ITEM_SUMMARIES_OUTPUT,) if shown else ())
    full_catalogue = config.evaluate.full_catalogue
    if spec.with_retriever and full_catalogue is not None:
        upstream += (
            f"{BASELINES_OUTPUT}/{config.baselines.output_name(full_catalogue.retriever)}",
        )
    return upstream


def _provenance_of(folder: str) -> str:
    """The provenance name of an output folder: ``baselines`` for ``baselines/<name>``."""
    return BASELINES_OUTPUT if folder.startswith(f"{BASELINES_OUTPUT}/") else folder


def _command_of(folder: str) -> str:
    """The command that builds an output folder."""
    return "baseline" if _provenance_of(folder) == BASELINES_OUTPUT else COMMAND_OF_OUTPUT[folder]


def source_listing(config: PipelineConfig) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of every file of the prepare source."""
    path = config.prepare.path
    if config.prepare.source == "synthetic" or not path:
        return []
    if "://" in path:
        fs, root = pafs.FileSystem.from_uri(path)
    else:
        fs, root = pafs.LocalFileSystem(), path
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        infos = [info]
    elif info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    else:
        return []
    return sorted(
        (i.path[len(root) :].lstrip("/") or i.base_name, i.size or 0, i.mtime_ns or 0)
        for i in infos
        if i.type == pafs.FileType.File
    )


def summarized_users(output: str, config: PipelineConfig, run: RunDir) -> dict[str, Any] | None:
    """What a sampled run's summaries depend on beyond their config fields: a digest of
    the users summarized and, for item summaries, what selects the items (None when the
    run summarizes every user and item, or has no dataset yet)."""
    if output not in (ITEM_SUMMARIES_OUTPUT, USER_SUMMARIES_OUTPUT) or not reads_a_selection(
        config
    ):
        return None
    if not run.is_complete(DATASET_OUTPUT):
        return None
    users = run.read_table(DATASET_OUTPUT, "sequences.parquet", columns=["user_id"])["user_id"]
    sample = sample_users(users.unique().to_pylist(), config.samples)
    window = config.users.history_window
    if output == USER_SUMMARIES_OUTPUT and not sample.is_sampled:
        return None
    if output == ITEM_SUMMARIES_OUTPUT and not sample.is_sampled and window is None:
        return None
    chosen = None
    if sample.is_sampled:
        summarized = sorted(u for u in users.unique().to_pylist() if sample.summarizes(u))
        chosen = hashlib.sha256("\n".join(summarized).encode()).hexdigest()[:20]
    reads: dict[str, Any] = {"users": chosen}
    if output == ITEM_SUMMARIES_OUTPUT:
        reads["history_window"] = window
        if config.recommender.candidate_description:
            reads["candidates"] = {
                "samples": config.samples.model_dump(mode="json"),
                "block_size": config.users.block_size,
            }
    return reads


def fingerprint(output: str, config: PipelineConfig, run: RunDir) -> str:
    """The fingerprint ``output`` gets when built now (from this config and run)."""
    spec = PROVENANCE[output]
    data = config.model_dump(mode="json")
    fields = {
        f: _without(_field(data, f), f, spec.ignored)
        for f in spec.fields
        if not (f in spec.unset_left_out and _field(data, f) is None)
    }
    upstream = {
        name: run.completion(name)["version"] if run.is_complete(name) else None
        for name in upstream_of(output, config)
    }
    is_synthetic = output == DATASET_OUTPUT and config.prepare.source == "synthetic"
    record = {
        "output": output,
        "msr_ray": msr_ray.__version__,
        "prompts": code_versions(output),  # the key of the fingerprints runs hold
        "generator": synthetic.GENERATOR_VERSION if is_synthetic else None,
        "config": fields,
        "upstream": upstream,
        "source": source_listing(config) if output == DATASET_OUTPUT else [],
    }
    reads = summarized_users(output, config, run)
    if reads is not None:
        record["reads"] = reads
    posted = posted_digest(run) if spec.with_posted_items else None
    if posted is not None:
        record["posted_items"] = posted
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class BuildContext:
    """What one build of a stage's output is given: the config, the run, and the
    fingerprint it seals its output with and keys its resumable parts by.

    Nothing else carries a fingerprint: a build without one cannot be started, since an
    output sealed without one would count as current whatever it was built from.
    """

    config: PipelineConfig
    run: RunDir
    output: str
    fingerprint: str

    def __post_init__(self) -> None:
        if not self.fingerprint:
            raise MissingFingerprint(
                f"no fingerprint for a build of {self.output}/ in {self.run.root}: build "
                "stages with msr_ray.run.pipeline.run_stage, or give "
                "msr_ray.run.provenance.build_context(output, config, run)"
            )

    @property
    def parts_key(self) -> str:
        """The key of the parts this build resumes from (its fingerprint)."""
        return self.fingerprint


def build_context(output: str, config: PipelineConfig, run: RunDir) -> BuildContext:
    """The context of building ``output`` now: its fingerprint computed from this config
    and run (``provenance`` name ``baselines`` for every baseline)."""
    return BuildContext(config, run, output, fingerprint(output, config, run))


def state(output: str, config: PipelineConfig, run: RunDir, folder: str | None = None) -> State:
    """``current``, ``stale`` or ``missing`` (see the module docstring).

    ``folder``: where the output lives when it differs from its provenance name
    (``baselines/sasrec`` for ``baselines``).
    """
    folder = folder or output
    if not run.is_complete(folder):
        return "missing"
    recorded = run.completion(folder).get("fingerprint")
    if recorded is None:
        return "current"  # committed outside the pipeline: nothing to compare with
    if recorded != fingerprint(output, config, run):
        return "stale"
    if any(
        state(_provenance_of(name), config, run, name) != "current"
        for name in upstream_of(output, config)
    ):
        return "stale"
    return "current"


def check_upstream(output: str, config: PipelineConfig, run: RunDir) -> None:
    """Raise MissingStageOutput (StaleStageOutput for a stale one) unless every output that
    ``output`` reads is current."""
    for name in upstream_of(output, config):
        found = state(_provenance_of(name), config, run, name)
        if found == "missing":
            raise MissingStageOutput(
                f"no complete {name}/ in {run.root}: run `msr-ray {_command_of(name)}` first"
            )
        if found == "stale":
            raise StaleStageOutput(
                f"{name}/ in {run.root} was built from other inputs or settings than this "
                f"config's: run `msr-ray {_command_of(name)}` first (a current stage is skipped)"
            )
