"""A trained baseline as ``msr-ray baseline`` keeps it in ``baselines/<name>/<version>/``.

``model.json``: the model's kind (``popularity``, ``sasrec``, ``gru4rec``), the
``baselines`` config it was trained with, the msr-ray version, and the catalogue in index
order (``items[n]`` is item index ``n + 1``; 0 pads); Popularity adds each item's count in
the training sequences. ``model.pt``: the SASRec / GRU4Rec state dict. Both are written in
the baseline's stage output, so they commit with its marker (version, fingerprint) or not
at all.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import msr_ray
from msr_ray.evaluation.baselines import BASELINES
from msr_ray.evaluation.baselines.models import item_logits, sequence_model
from msr_ray.evaluation.baselines.training import recent_items
from msr_ray.run.registry import BASELINES_OUTPUT
from msr_ray.run.rundir import MissingStageOutput, RunDir, StageOutput

MODEL_FILE = "model.json"
WEIGHTS_FILE = "model.pt"
# The baseline settings that shape the network (the others only shape its training).
ARCHITECTURE = ("hidden_size", "num_layers", "num_heads", "dropout", "max_len")


@dataclass
class KeptBaseline:
    """A trained baseline: its kind, catalogue and hyperparameters, and what it learned
    (Popularity's ``counts`` per item in catalogue order, or the sequence model ``net``)."""

    kind: str
    items: list[str]
    hyperparameters: dict[str, Any]
    counts: list[int] | None = None
    net: nn.Module | None = None

    def write(self, out: StageOutput) -> None:
        """Write ``model.json`` (and ``model.pt``) into a baseline's output being built."""
        description = {
            "kind": self.kind,
            "msr_ray": msr_ray.__version__,
            "hyperparameters": self.hyperparameters,
            "items": self.items,
        }
        if self.counts is not None:
            description["counts"] = self.counts
        out.write_bytes(json.dumps(description).encode(), MODEL_FILE)
        if self.net is not None:
            weights = io.BytesIO()
            torch.save(self.net.state_dict(), weights)
            out.write_bytes(weights.getvalue(), WEIGHTS_FILE)

    @classmethod
    def read(cls, run: RunDir, name: str) -> KeptBaseline:
        """The baseline ``msr-ray baseline`` kept as ``baselines/<name>/``."""
        folder = f"{BASELINES_OUTPUT}/{name}"
        if not (run.is_complete(folder) and MODEL_FILE in run.completion(folder)["files"]):
            raise MissingStageOutput(
                f"no kept model in {folder}/ of {run.root} (none trained, or trained before "
                f"baselines kept their model): run `msr-ray baseline --model {cli_name(name)}`"
            )
        description = run.read_json(folder, MODEL_FILE)
        kept = cls(
            description["kind"],
            description["items"],
            description["hyperparameters"],
            counts=description.get("counts"),
        )
        if kept.kind != "popularity":
            shape = {k: kept.hyperparameters[k] for k in ARCHITECTURE}
            kept.net = sequence_model(kept.kind, len(kept.items), **shape)
            state = torch.load(io.BytesIO(run.read_bytes(folder, WEIGHTS_FILE)), weights_only=True)
            kept.net.load_state_dict(state)
        return kept

    @torch.no_grad()
    def catalogue_scores(self, histories: list[list[int]]) -> torch.Tensor:
        """Scores (users, items) of every catalogue item after each history of item
        indices; column ``n`` is ``items[n]``."""
        if self.net is None:
            counts = torch.tensor(self.counts, dtype=torch.float32)
            return counts.expand(len(histories), -1)
        self.net.eval()
        batch = recent_items(histories, self.hyperparameters["max_len"])
        hidden = self.net(batch)[:, -1, :]
        return item_logits(self.net, hidden)[:, 1:]


def cli_name(name: str) -> str:
    """The ``msr-ray baseline --model`` value that trains the baseline kept as ``name``."""
    kind = name.removesuffix("-sampled")
    return next((flag for flag, output in BASELINES.items() if output == kind), kind)
