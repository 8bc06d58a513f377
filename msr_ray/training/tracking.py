"""Optional experiment tracking of training (``train.tracking: mlflow``), no Ray here.

Rank 0 logs the parameters, the loss of every step, the validation AUC of every epoch and
the final adapter. A restarted worker continues the same MLflow run: its id is kept in
the run directory beside the Ray Train checkpoints. The default store is a local file
store under ``<run>/tracking/`` (MLflow's file backend, which MLflow 3 keeps in
maintenance mode: msr-ray opts in for it); ``train.tracking_uri`` can name any other
MLflow store or server.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

from msr_ray.config import PipelineConfig
from msr_ray.run.registry import TRAIN_OUTPUT
from msr_ray.run.rundir import RunDir


class Tracker(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifacts(self, folder: str, path: str) -> None: ...
    def finish(self) -> None: ...


class NoTracking:
    """``train.tracking: off``: nothing is logged anywhere."""

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifacts(self, folder: str, path: str) -> None:
        pass

    def finish(self) -> None:
        pass


class MlflowTracker:
    """One MLflow run, created or resumed by id, logged through ``MlflowClient``."""

    def __init__(self, uri: str, experiment: str, run_name: str, run_id: str | None = None):
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        if run_id is None:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id if found else self.client.create_experiment(experiment)
            )
            run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(
            self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()]
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None],
        )

    def log_artifacts(self, folder: str, path: str) -> None:
        self.client.log_artifacts(self.run_id, folder, path)

    def finish(self) -> None:
        self.client.set_terminated(self.run_id)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lora_r": 8}}`` -> ``{"train.lora_r": 8}`` (MLflow params are flat)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


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
    id_file = ("_parts", TRAIN_OUTPUT, f"{key}.mlflow.json")
    run_id = run.read_json(*id_file)["run_id"] if run.exists(*id_file) else None
    tracker = MlflowTracker(uri, config.train.tracking_experiment, f"train-{key[:12]}", run_id)
    if run_id is None:
        tracker.log_params(flatten(config.model_dump(mode="json")))
        run.write_json({"run_id": tracker.run_id, "uri": uri}, *id_file)
    return tracker
