"""Training and scoring loops of the sequence baselines (left-padded, next-item CE)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from msr_ray.evaluation.baselines.data import PAD
from msr_ray.evaluation.baselines.models import item_logits
from msr_ray.models.scoring import left_pad


def recent_items(sequences: list[list[int]], length: int) -> torch.Tensor:
    """The last ``length`` items of each sequence, left-padded with PAD."""
    ids, _ = left_pad([s[-length:] for s in sequences], PAD, width=length)
    return ids


def fit(
    model: nn.Module,
    sequences: list[list[int]],
    max_len: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    name: str,
) -> list[float]:
    """Next-item training on every position of every sequence; returns the loss per epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    usable = [s for s in sequences if len(s) >= 2]
    inputs = recent_items([s[:-1] for s in usable], max_len)
    targets = recent_items([s[1:] for s in usable], max_len)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    losses = []
    for _ in tqdm(range(epochs), desc=f"train {name}", unit="epoch"):
        model.train()
        order = rng.permutation(len(usable))
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            index = torch.from_numpy(order[start : start + batch_size])
            hidden = model(inputs[index])
            logits = item_logits(model, hidden)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                targets[index].reshape(-1),
                ignore_index=PAD,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(index), count + len(index)
        losses.append(total / max(count, 1))
    return losses


@torch.no_grad()
def score(
    model: nn.Module,
    prefixes: list[list[int]],
    candidates: list[int],
    max_len: int,
    batch_size: int = 256,
) -> list[float]:
    """Score of each candidate item given its prefix (hidden state at the last position)."""
    model.eval()
    out: list[float] = []
    for start in range(0, len(prefixes), batch_size):
        batch = recent_items(prefixes[start : start + batch_size], max_len)
        hidden = model(batch)[:, -1, :]
        items = torch.tensor(candidates[start : start + batch_size])
        out += (hidden * model.items(items)).sum(dim=1).tolist()
    return out
