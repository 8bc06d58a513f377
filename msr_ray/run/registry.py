"""The stage registry: one descriptor per stage (imports nothing).

A stage's CLI command, output folder, module, config section, the config fields and
outputs its output is built from (its provenance), the counts its console line and
`msr-ray status` show, and its command-line help all live in its ``StageInfo``. The
pipeline runs stages from it, the CLI makes one command per stage from it, and
``RunDir.require`` and provenance name the command to run from it. Every output folder
of the run directory is named once, by a ``*_OUTPUT`` constant here.

Adding a stage: write its module (a ``build(context)`` returning its summary), give it a
config section, and add its output folder's ``*_OUTPUT`` constant and its ``StageInfo``
here, in pipeline order. Nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Provenance:
    """What an output is built from: the config fields it depends on, the outputs it
    reads, and the versioned code that shapes it (``msr_ray.run.provenance``): the prompt
    templates (``summarize``, ``recommend``) and the scoring (``scoring``)."""

    fields: tuple[str, ...]
    upstream: tuple[str, ...]
    # item_summaries is read only when the recommender's prompt shows item summaries.
    with_descriptions: bool = False
    # The kept baseline ``evaluate.full_catalogue.retriever`` is read only when that is on.
    with_retriever: bool = False
    # Items posted online to the run (``online_items/``) are read too (``prepare``).
    with_posted_items: bool = False
    ignored: tuple[str, ...] = ()
    code_versions: tuple[str, ...] = ()
    # Fields left out of the fingerprint while they are None (a feature that is off), so
    # that outputs built before the feature existed stay current.
    unset_left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class CliOption:
    """A stage command's own option: ``--flag VALUE`` overrides config key ``key`` (its
    choices, if any, are the config field's)."""

    flag: str
    key: str
    help: str


@dataclass(frozen=True)
class StageInfo:
    """A pipeline stage: everything about it that is not its code."""

    command: str
    output: str
    module: str
    needs_ray: bool
    section: str
    provenance: Provenance
    status_counts: tuple[str, ...]
    help: str
    options: tuple[CliOption, ...] = ()


# The run directory's output folders, by name. These constants are the only spelling of
# each name in the code: every read, write, ``require`` and provenance name uses them
# (``tests/run/test_stage_names.py`` fails on a literal). The stages' own outputs:
DATASET_OUTPUT = "dataset"
ITEM_SUMMARIES_OUTPUT = "item_summaries"
USER_SUMMARIES_OUTPUT = "user_summaries"
SAMPLES_OUTPUT = "samples"
TRAIN_OUTPUT = "train"
EVAL_OUTPUT = "eval"
# Folders that are no stage's output: every model's scores (``scores/<model>/``, the
# evaluate stage's and each baseline's), the kept baselines (``baselines/<model>/``, also
# their provenance name), the report, and what serving writes without the lock.
SCORES_OUTPUT = "scores"
BASELINES_OUTPUT = "baselines"
REPORT_OUTPUT = "report"
PROFILES_OUTPUT = "profiles"
ONLINE_ITEMS_OUTPUT = "online_items"
OUTPUT_FOLDERS = (
    DATASET_OUTPUT,
    ITEM_SUMMARIES_OUTPUT,
    USER_SUMMARIES_OUTPUT,
    SAMPLES_OUTPUT,
    TRAIN_OUTPUT,
    EVAL_OUTPUT,
    SCORES_OUTPUT,
    BASELINES_OUTPUT,
    REPORT_OUTPUT,
    PROFILES_OUTPUT,
    ONLINE_ITEMS_OUTPUT,
)

# The recommender's settings: what train, evaluate and serving must agree on.
RECOMMENDER_FIELDS = (
    "domain",
    "mllm",
    "recommender.prompt_order",
    "recommender.candidate_description",
    "recommender.description_words",
    "recommender.candidate_image",
    "recommender.recent_items",
    "recommender.recent_words",
    "recommender.max_image_side",
)

STAGES: list[StageInfo] = [
    StageInfo(
        "prepare",
        DATASET_OUTPUT,
        "msr_ray.stages.prepare",
        needs_ray=False,
        section="prepare",
        provenance=Provenance(("prepare",), (), with_posted_items=True),
        status_counts=("users", "items_kept"),
        help="""Read a dataset into the run's tables: items, interactions, splits, quarantine.

    Writes <run>/dataset/ and a summary that accounts for every input row.""",
        options=(
            CliOption("--source", "prepare.source", "Dataset format"),
            CliOption("--path", "prepare.path", "Input folder of the source"),
        ),
    ),
    StageInfo(
        "summarize-items",
        ITEM_SUMMARIES_OUTPUT,
        "msr_ray.stages.items",
        needs_ray=True,
        section="items",
        provenance=Provenance(
            ("domain", "mllm", "items.mode", "items.on_error", "items.max_image_side"),
            (DATASET_OUTPUT,),
            code_versions=("summarize",),
        ),
        status_counts=("items",),
        help="""Describe every item with the MLLM (Ray Data actor pool).

    Writes <run>/item_summaries/: item_id, summary, error, model, prompt_version.""",
    ),
    StageInfo(
        "summarize-users",
        USER_SUMMARIES_OUTPUT,
        "msr_ray.stages.users",
        needs_ray=True,
        section="users",
        provenance=Provenance(
            (
                "domain",
                "llm",
                "users.mode",
                "users.block_size",
                "users.prompt",
                "users.item_words",
                "users.history_window",
            ),
            (DATASET_OUTPUT, ITEM_SUMMARIES_OUTPUT),
            code_versions=("summarize",),
        ),
        status_counts=("users", "summaries"),
        help="""Summarize each user's preferences block by block (shard actors).

    Writes <run>/user_summaries/: one row per user and block boundary.""",
    ),
    StageInfo(
        "build-samples",
        SAMPLES_OUTPUT,
        "msr_ray.stages.samples",
        needs_ray=False,
        section="samples",
        provenance=Provenance(
            ("samples",),
            (DATASET_OUTPUT, USER_SUMMARIES_OUTPUT),
            code_versions=("summarize",),
        ),
        status_counts=("rows_by_split",),
        help="""Build training pairs and valid/test candidate lists.

    Writes <run>/samples/: split, user_id, item_id, label, group.""",
    ),
    StageInfo(
        "train",
        TRAIN_OUTPUT,
        "msr_ray.stages.train",
        needs_ray=True,
        section="train",
        provenance=Provenance(
            (*RECOMMENDER_FIELDS, "train"),
            (DATASET_OUTPUT, SAMPLES_OUTPUT),
            with_descriptions=True,
            ignored=(
                "train.resources",
                "train.placement_strategy",
                "train.max_failures",
                "train.fail_once_at_epoch",
                "train.cache_frozen_layers",
                "train.tracking",
                "train.tracking_uri",
                "train.tracking_experiment",
            ),
            code_versions=("summarize", "recommend", "scoring"),
        ),
        status_counts=("train_rows", "epochs"),
        help="""Fine-tune the Yes/No recommender with Ray Train + DeepSpeed.

    What it trains is train.trainable's: lora (LoRA on the language model's linear
    layers), top-layers (the top train.top_layers decoder layers in full) or
    language-model (every decoder layer in full). Writes <run>/train/ with the weights of
    the last checkpoint as one PEFT adapter (the full-trained layers as its
    modules_to_save) and the config it was trained with.""",
    ),
    StageInfo(
        "evaluate",
        EVAL_OUTPUT,
        "msr_ray.stages.evaluate",
        needs_ray=True,
        section="evaluate",
        provenance=Provenance(
            (
                *RECOMMENDER_FIELDS,
                "seed",
                "evaluate.ks",
                "evaluate.bootstrap_samples",
                "evaluate.splits",
                "evaluate.full_catalogue",
            ),
            (DATASET_OUTPUT, SAMPLES_OUTPUT, TRAIN_OUTPUT),
            with_descriptions=True,
            with_retriever=True,
            code_versions=("summarize", "recommend", "scoring"),
            unset_left_out=("evaluate.full_catalogue",),
        ),
        status_counts=("candidates", "rerank_candidates"),
        help="""Score every valid/test candidate and compute AUC, HR@K, NDCG@K, MRR@K.

    Writes <run>/scores/ and <run>/eval/metrics.json; with evaluate.full_catalogue also
    eval/full_catalogue.json (a kept baseline's top N of the whole catalogue, reranked).""",
    ),
]
STAGES_BY_COMMAND = {s.command: s for s in STAGES}
COMMAND_OF_OUTPUT = {s.output: s.command for s in STAGES}
