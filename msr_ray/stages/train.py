"""Stage `train`: LoRA SFT of the Yes/No recommender on Ray Train with DeepSpeed.

Driver: join the samples with the items (title, image), shuffle (seeded), and start a
``TorchTrainer`` (gloo on CPU, nccl on GPU) whose run lives under
``<run>/_parts/train/<fingerprint>``; rerunning after a crash with the same inputs and
settings restores the latest checkpoint.
Workers: load the MLLM, wrap it in PEFT LoRA (language-model linear layers; projector
trainable by config), ``deepspeed.initialize`` with a ZeRO config built from the stage
config and torch's AdamW, train on the answer tokens only, score validation AUC on rank
0 each epoch, and report a checkpoint holding the PEFT adapter, the DeepSpeed state and
the epoch. The sealed ``train/`` folder holds the final adapter in the standard layout
and the config it was trained with (``config.yaml``, what serving loads).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.config import PipelineConfig, TrainConfig, dump_config
from msr_ray.models.prompts import RECOMMEND_PROMPT_VERSION
from msr_ray.recommender import ADAPTER, CONFIG_FILE, candidate_rows
from msr_ray.rundir import RunDir
from msr_ray.tracking import MlflowTracker, NoTracking, Tracker, flatten

STAGE = "train"
DEEPSPEED_DIR = "deepspeed"
STATE_FILE = "train_state.json"
LANGUAGE_MODEL_LINEAR = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


def deepspeed_config(cfg: TrainConfig, bf16: bool) -> dict[str, Any]:
    """The DeepSpeed config of a run: ZeRO stage, micro-batch, accumulation, clipping."""
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }


def lora_target(cfg: TrainConfig) -> str | list[str]:
    """Module names LoRA adapts: the configured ones, else every language-model linear layer."""
    if cfg.lora_target_modules:
        return cfg.lora_target_modules
    return rf".*language_model\..*\.({'|'.join(LANGUAGE_MODEL_LINEAR)})"


def portable_adapter_config(data: bytes, base_model: str) -> bytes:
    """The adapter config with the base model named as configured (``mllm.name``), not by
    the path of this machine's converted copy."""
    adapter_config = json.loads(data)
    adapter_config["base_model_name_or_path"] = base_model
    return json.dumps(adapter_config, indent=2, sort_keys=True).encode()


def prefix_unit_order(train: pa.Table, seed: int) -> np.ndarray:
    """A seeded row order that keeps rows sharing a prompt prefix next to each other.

    Rows of one user at one summary step share the recommender prompt's prefix; they
    form a unit, units come in random order and rows in random order within each, so
    a micro-batch computes each shared prefix once (``sft_loss``) instead of per row.
    """
    rng = np.random.default_rng(seed)
    units: dict[tuple[str, int], list[int]] = {}
    for n, key in enumerate(
        zip(train["user_id"].to_pylist(), train["step"].to_pylist(), strict=True)
    ):
        units.setdefault(key, []).append(n)
    members = list(units.values())
    return np.array(
        [n for u in rng.permutation(len(members)) for n in rng.permutation(members[u])],
        dtype=np.int64,
    )


def _scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    import torch

    warmup = max(1, int(cfg.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _validation_auc(recommender, rows: list[dict]) -> float | None:
    from msr_ray.metrics import per_group

    if not rows:
        return None
    table = pa.table(
        {
            "group": [r["group"] for r in rows],
            "label": [r["label"] for r in rows],
            "score": recommender.score(rows),
        }
    )
    return float(per_group(table, [1])["auc"].mean())


def _crash_once(run: RunDir, epoch: int) -> None:
    """The fault drill: this worker's process dies mid-epoch, once per run directory.

    A real crash (SIGKILL, as on an OOM kill or a lost node), not a Python exception;
    Ray Train restarts the worker group from the last checkpoint its controller has
    registered. The controller collects reports when it polls the workers, so the drill
    first waits out a few poll intervals: the previous epoch's checkpoint is then the one
    the restart must use (a crash before that poll would lose it, as on a real cluster).
    """
    if not run.exists(f"_train_failure_injected_{epoch}"):
        run.write_text("injected", f"_train_failure_injected_{epoch}")
        interval = float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2"))
        time.sleep(2.5 * interval)
        os.kill(os.getpid(), signal.SIGKILL)


def tracking_uri(config: PipelineConfig, run: RunDir) -> str | None:
    """The MLflow store of this run (None when tracking is off)."""
    cfg = config.train
    if cfg.tracking == "off":
        return None
    if cfg.tracking_uri:
        return cfg.tracking_uri
    if not run.local:
        raise ValueError(
            "train.tracking: mlflow needs train.tracking_uri when the run directory is not local"
        )
    return Path(run.path("tracking")).as_uri()


def open_tracker(config: PipelineConfig, run: RunDir, key: str) -> Tracker:
    """Rank 0's tracker: a new MLflow run with the config as params, or the one a
    restarted worker had (its id is kept beside the checkpoints)."""
    uri = tracking_uri(config, run)
    if uri is None:
        return NoTracking()
    id_file = ("_parts", STAGE, f"{key}.mlflow.json")
    run_id = run.read_json(*id_file)["run_id"] if run.exists(*id_file) else None
    tracker = MlflowTracker(uri, config.train.tracking_experiment, f"train-{key[:12]}", run_id)
    if run_id is None:
        tracker.log_params(flatten(config.model_dump(mode="json")))
        run.write_json({"run_id": tracker.run_id, "uri": uri}, *id_file)
    return tracker


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: LoRA + DeepSpeed SFT with per-epoch validation and checkpoints."""
    import deepspeed
    import ray.train
    import torch
    from peft import LoraConfig, get_peft_model

    from msr_ray.models.loading import load_model
    from msr_ray.models.scoring import sft_loss
    from msr_ray.recommender import Recommender

    config = PipelineConfig.model_validate(loop_config["pipeline"])
    cfg = config.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)
    spec = config.mllm.model_copy(update={"device": str(device)})
    loaded = load_model(spec, "mllm")
    bf16 = loaded.dtype == torch.bfloat16
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=lora_target(cfg),
        modules_to_save=["multi_modal_projector"] if cfg.train_projector else None,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(loaded.model, lora)
    loaded.model = model
    recommender = Recommender(loaded, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = loop_config["optimizer_steps_per_epoch"]
    scheduler = _scheduler(optimizer, cfg, steps_per_epoch * cfg.epochs)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(cfg, bf16),
    )
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            engine.load_checkpoint(os.path.join(folder, DEEPSPEED_DIR), tag="state")
            with open(os.path.join(folder, STATE_FILE)) as f:
                start_epoch = json.load(f)["epoch"] + 1
    run = RunDir(config.run_dir)
    tracker = open_tracker(config, run, loop_config["key"]) if rank == 0 else NoTracking()
    micro_steps = loop_config["micro_steps_per_epoch"]
    shard = ray.train.get_dataset_shard("train")
    valid_rows = loop_config["valid_rows"] if rank == 0 else []
    for epoch in range(start_epoch, cfg.epochs):
        engine.train()
        log, samples, tokens, started = [], 0, 0, time.perf_counter()
        for batch in shard.iter_batches(
            batch_size=cfg.micro_batch_size, batch_format="pyarrow", drop_last=True
        ):
            rows = batch.to_pylist()
            answers = [bool(r["label"]) for r in rows]
            loss, batch_tokens = sft_loss(
                engine,
                loaded,
                recommender.prompts(rows),
                answers,
                cfg.max_length,
                cfg.prefix_gradient,
            )
            engine.backward(loss)
            engine.step()
            if log and cfg.fail_once_at_epoch == epoch and rank == world - 1:
                _crash_once(run, epoch)
            samples += len(rows)
            tokens += batch_tokens
            elapsed = time.perf_counter() - started
            entry = {
                "epoch": epoch,
                "step": len(log),
                "resumed_at_epoch": start_epoch,
                "rank": rank,
                "loss": loss.item(),
                "lr": scheduler.get_last_lr()[0],
                "samples_per_s": samples / elapsed,
                "tokens_per_s": tokens / elapsed,
            }
            log.append(entry)
            tracker.log_metrics(
                {"loss": entry["loss"], "lr": entry["lr"]}, epoch * micro_steps + entry["step"]
            )
        run.write_text(
            "".join(json.dumps(r) + "\n" for r in log),
            "train_logs",
            f"epoch-{epoch:03d}-rank-{rank}.jsonl",
        )
        engine.eval()
        valid_auc = _validation_auc(recommender, valid_rows) if rank == 0 else None
        metrics = {
            "epoch": epoch,
            "train_loss": float(np.mean([r["loss"] for r in log])) if log else None,
            "valid_auc": valid_auc,
            "samples": samples,
        }
        tracker.log_metrics(
            {"valid_auc": valid_auc, "train_loss": metrics["train_loss"]},
            (epoch + 1) * micro_steps,
        )
        with tempfile.TemporaryDirectory() as folder:
            engine.save_checkpoint(os.path.join(folder, DEEPSPEED_DIR), tag="state")
            if rank == 0:
                model.save_pretrained(os.path.join(folder, ADAPTER))
                with open(os.path.join(folder, STATE_FILE), "w") as f:
                    json.dump(metrics, f)
                if epoch == cfg.epochs - 1:
                    tracker.log_artifacts(os.path.join(folder, ADAPTER), ADAPTER)
                    tracker.finish()
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def build(config: PipelineConfig, run: RunDir) -> dict[str, Any]:
    """Fine-tune on the training samples; seal ``train/`` with the final adapter."""
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run.require("samples")
    cfg = config.train
    tracking = tracking_uri(config, run)  # a bad tracking setting fails before any work
    train = candidate_rows(run, config, ("train",))
    available = train.num_rows
    order = prefix_unit_order(train, cfg.seed)
    # Every worker must take the same number of steps: keep a multiple of the global batch.
    global_batch = cfg.num_workers * cfg.micro_batch_size
    usable = (train.num_rows // global_batch) * global_batch
    if usable == 0:
        raise RuntimeError(
            f"{train.num_rows} training rows: fewer than one global batch of {global_batch}"
        )
    train = train.take(pa.array(order[:usable]))
    valid = candidate_rows(run, config, ("valid",))
    groups = sorted(set(valid["group"].to_pylist()))[: cfg.max_valid_groups]
    valid = valid.filter(pc.is_in(valid["group"], value_set=pa.array(groups, pa.string())))
    micro_steps = usable // global_batch
    resources = {"CPU": config.train.resources.num_cpus}
    if cfg.use_gpu:
        resources["GPU"] = max(1.0, config.train.resources.num_gpus)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "pipeline": config.model_dump(mode="json"),
            "optimizer_steps_per_epoch": max(1, micro_steps // cfg.gradient_accumulation_steps),
            "micro_steps_per_epoch": micro_steps,
            "key": run.parts_key(STAGE),
            "valid_rows": valid.to_pylist(),
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
            name=run.parts_key(STAGE),
            storage_path=run.path("_parts", STAGE),
            storage_filesystem=None if run.local else run.fs,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={"train": ray.data.from_arrow(train)},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint: {result.error}")
    summary = {
        "train_rows": usable,
        "train_rows_dropped": available - usable,
        "valid_groups": len(groups),
        "epochs": cfg.epochs,
        "num_workers": cfg.num_workers,
        "zero_stage": cfg.zero_stage,
        "prompt_version": RECOMMEND_PROMPT_VERSION,
        "recommender": config.recommender.model_dump(),
        "final": result.metrics,
        "tracking_uri": tracking,
    }
    with run.stage_output(STAGE) as out, result.checkpoint.as_directory() as folder:
        out.fs.create_dir(f"{out.path}/{ADAPTER}")
        for name in os.listdir(os.path.join(folder, ADAPTER)):
            with open(os.path.join(folder, ADAPTER, name), "rb") as src:
                data = src.read()
            if name == "adapter_config.json":
                data = portable_adapter_config(data, config.mllm.name)
            out.write_bytes(data, f"{ADAPTER}/{name}")
        out.write_bytes(dump_config(config).encode(), CONFIG_FILE)
        out.metadata.update(summary)
    return summary
