"""Stage `train`: fine-tune the Yes/No recommender on Ray Train with DeepSpeed (what it
trains is ``train.trainable``'s: LoRA, the top decoder layers or the whole language model).

Driver only: join the samples with the items (title, image), order the training rows
(seeded, rows sharing a prompt prefix together), and start a ``TorchTrainer`` (gloo on
CPU, nccl on GPU) whose workers run ``msr_ray.training.recipe``. The training rows are split
evenly across workers; the validation rows are split too, every row scored once, and
every rank computes the epoch's AUC from the all-gathered scores. The trainer's run lives
under ``<run>/_parts/train/<fingerprint>``: rerunning after a crash with the same inputs
and settings restores the latest checkpoint. The sealed ``train/`` folder holds the final
adapter in the standard layout and the config it was trained with (``config.yaml``, what
serving loads); once it is sealed, the checkpoints are deleted.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ray.train import DataConfig

from msr_ray.config import dump_config
from msr_ray.data.schemas import DataError
from msr_ray.method.recommender import with_image_setting_resolved
from msr_ray.models.prompts import RECOMMEND_PROMPT_VERSION
from msr_ray.run.blocks import dataset_in_groups
from msr_ray.run.method_inputs import ADAPTER, CONFIG_FILE, candidate_rows
from msr_ray.run.provenance import BuildContext
from msr_ray.run.registry import SAMPLES_OUTPUT, TRAIN_OUTPUT
from msr_ray.run.rundir import RunDir
from msr_ray.training.progress import PROGRESS_EVERY_S, progress_file
from msr_ray.training.recipe import train_loop_per_worker
from msr_ray.training.row_order import prefix_unit_order
from msr_ray.training.tracking import tracking_uri

# Validation blocks per worker: the split hands out whole blocks.
VALID_BLOCKS_PER_WORKER = 4


class EveryValidRowOnce(DataConfig):
    """Hands every worker the whole ``train`` dataset, in the driver's order, from which
    each takes its own micro-batch of every global batch (the same rows at every epoch,
    as the frozen-layer cache needs, and the same number of steps on every worker, as
    DeepSpeed's collectives need), and splits ``valid`` without dropping rows (an even
    split would drop up to ``world_size - 1`` of them and change the AUC)."""

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        """``DataConfig.configure`` for every dataset but ``valid``; ``valid`` is split
        unevenly, each block going to one worker."""
        others = {name: ds for name, ds in datasets.items() if name != "valid"}
        output = super().configure(others, world_size, worker_handles, worker_node_ids, **kwargs)
        if "valid" in datasets:
            valid = datasets["valid"].copy(datasets["valid"])
            valid.context.execution_options = self._resolve_execution_options("valid")
            splits = valid.streaming_split(world_size, equal=False)
            for rank, split in enumerate(splits):
                output[rank]["valid"] = split
        return output


def in_order():
    """This Ray Data context's execution options, in the dataset's order (a copy: Ray
    Train's ``default_ingest_options`` sets a deprecated field and warns on the console)."""
    import copy

    from ray.data import DataContext

    options = copy.copy(DataContext.get_current().execution_options)
    options.preserve_order = True
    return options


def portable_adapter_config(data: bytes, base_model: str) -> bytes:
    """The adapter config with the base model named as configured (``mllm.name``), not by
    the path of this machine's converted copy."""
    adapter_config = json.loads(data)
    adapter_config["base_model_name_or_path"] = base_model
    return json.dumps(adapter_config, indent=2, sort_keys=True).encode()


@contextmanager
def shown_progress(run: RunDir, key: str, steps_per_epoch: int, epochs: int) -> Iterator[None]:
    """A console progress bar of the training steps (rank 0's) while the block runs."""
    from tqdm import tqdm

    done = threading.Event()
    bar = tqdm(total=steps_per_epoch * epochs, desc="train", unit="step")

    def follow() -> None:
        shown = None
        while not done.wait(PROGRESS_EVERY_S):
            try:
                latest = run.read_json(*progress_file(key))
            except (OSError, ValueError):  # not written yet, or being replaced
                continue
            if latest == shown:
                continue
            shown = latest
            bar.set_postfix(epoch=latest["epoch"] + 1, loss=f"{latest['loss']:.4f}", refresh=False)
            bar.update(latest["epoch"] * steps_per_epoch + latest["step"] - bar.n)

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    finished = False
    try:
        yield
        finished = True
    finally:
        done.set()
        watcher.join()
        if finished:
            bar.update(bar.total - bar.n)
        bar.close()


def build(context: BuildContext) -> dict[str, Any]:
    """Fine-tune on the training samples; seal ``train/`` with the final adapter."""
    config, run = context.config, context.run
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run.require(SAMPLES_OUTPUT)
    cfg = config.train
    tracking = tracking_uri(config, run)  # a bad tracking setting fails before any work
    train = candidate_rows(run, config, ("train",))
    available = train.num_rows
    order = prefix_unit_order(train, cfg.seed)
    # Every worker must take the same number of steps: keep a multiple of the global batch.
    global_batch = cfg.num_workers * cfg.micro_batch_size
    usable = (train.num_rows // global_batch) * global_batch
    if usable == 0:
        raise DataError(
            run.output_path(SAMPLES_OUTPUT),
            f"{train.num_rows} training rows: fewer than one global batch of {global_batch} "
            "(train.num_workers x train.micro_batch_size). Lower those, or build more "
            "training rows (longer histories, more samples.train_negatives)",
        )
    train = train.take(pa.array(order[:usable]))
    valid = candidate_rows(run, config, ("valid",))
    groups = sorted(set(valid["group"].to_pylist()))[: cfg.max_valid_groups]
    valid = valid.filter(pc.is_in(valid["group"], value_set=pa.array(groups, pa.string())))
    valid_blocks = cfg.num_workers * VALID_BLOCKS_PER_WORKER
    micro_steps = usable // global_batch
    resources = {"CPU": cfg.resources.num_cpus}
    if cfg.use_gpu:
        resources["GPU"] = cfg.resources.num_gpus
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "pipeline": config.model_dump(mode="json"),
            "optimizer_steps_per_epoch": max(1, micro_steps // cfg.gradient_accumulation_steps),
            "micro_steps_per_epoch": micro_steps,
            "key": context.parts_key,
        },
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker=resources,
            placement_strategy=cfg.placement_strategy,
        ),
        run_config=RunConfig(
            # Keyed by the stage's fingerprint: a changed setting or new samples train
            # afresh, an unchanged rerun (a drill, a resumed job) restores its checkpoints,
            # and --force drops them with the stage's other parts.
            name=context.parts_key,
            **run.ray_storage("_parts", TRAIN_OUTPUT),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={
            "train": ray.data.from_arrow(train),
            "valid": dataset_in_groups(valid, "group", max(1, -(-len(groups) // valid_blocks))),
        },
        dataset_config=EveryValidRowOnce(
            datasets_to_split=[],
            execution_options={"train": in_order()},
        ),
    )
    with shown_progress(run, context.parts_key, micro_steps, cfg.epochs):
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint: {result.error}")
    summary = {
        "train_rows": usable,
        "train_rows_dropped": available - usable,
        "valid_groups": len(groups),
        "valid_rows": valid.num_rows,
        "epochs": cfg.epochs,
        "num_workers": cfg.num_workers,
        "zero_stage": cfg.zero_stage,
        "prompt_version": RECOMMEND_PROMPT_VERSION,
        "recommender": config.recommender.model_dump(),
        "final": result.metrics,
        "tracking_uri": tracking,
    }
    fingerprint = context.fingerprint
    with (
        run.stage_output(TRAIN_OUTPUT, fingerprint=fingerprint) as out,
        result.checkpoint.as_directory() as folder,
    ):
        for name in os.listdir(os.path.join(folder, ADAPTER)):
            with open(os.path.join(folder, ADAPTER, name), "rb") as src:
                data = src.read()
            if name == "adapter_config.json":
                data = portable_adapter_config(data, config.mllm.name)
            out.write_bytes(data, f"{ADAPTER}/{name}")
        out.write_bytes(dump_config(with_image_setting_resolved(config)).encode(), CONFIG_FILE)
        out.metadata.update(summary)
    # Sealed: the final adapter is in train/, so the trainer's checkpoints (hundreds of MB
    # each) have nothing left to resume.
    run.drop_parts(TRAIN_OUTPUT)
    return summary
