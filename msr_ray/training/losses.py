"""The training objectives on the recommender's Yes/No answers (``train.objective``).

``pointwise`` (the paper's) is the cross-entropy of each candidate's answer tokens alone;
``listwise`` a softmax over the Yes-vs-No margins of each training group. Both compute
the answer logits with ``models.scoring`` exactly as the scorer does (shared prefixes,
fp32 head), so the loss trains the score that evaluate and serving read.
NOTE: the reference implementation trains on the whole prompt's tokens; here the loss
covers the answer tokens only, the position the scorer reads P(yes) from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from msr_ray.models.frozen_layers import FrozenLayerCache
from msr_ray.models.loading import LoadedModel
from msr_ray.models.scoring import (
    NO,
    YES,
    EncodedPrompts,
    SplitPrompt,
    answer_logits,
    answer_margins,
    answer_tokens,
    encode_prompts,
    fp32_head,
)

IGNORE_INDEX = -100  # the label of a position the loss leaves out


def _check_lengths(encoded: EncodedPrompts, targets: list[list[int]], max_length: int) -> None:
    for owner, suffix, target in zip(encoded.owner, encoded.suffixes, targets, strict=True):
        length = len(encoded.prefixes[owner]) + len(suffix)
        if length + len(target) > max_length:
            raise ValueError(f"prompt of {length} tokens + answer exceeds {max_length}")


class BatchTokens(NamedTuple):
    """The tokens a training batch holds: its distinct prefixes' and its candidate rows'
    (suffix + answer tokens), which the step computes on top of them."""

    prefix: int
    rows: int

    @property
    def total(self) -> int:
        return self.prefix + self.rows


def _tokens(encoded: EncodedPrompts, targets: list[list[int]]) -> BatchTokens:
    return BatchTokens(
        sum(len(p) for p in encoded.prefixes),
        sum(map(len, encoded.suffixes)) + sum(map(len, targets)),
    )


def sft_loss(
    model,
    loaded: LoadedModel,
    prompts: Sequence[SplitPrompt],
    answers: Sequence[bool],
    max_length: int,
    prefix_gradient: bool = True,
    frozen: FrozenLayerCache | None = None,
) -> tuple[torch.Tensor, BatchTokens]:
    """Cross-entropy on the answer tokens only (in fp32), and the tokens the batch holds.

    ``model`` is what runs the forward pass (the PEFT model, or the DeepSpeed engine
    around it). Prompts sharing a prefix compute it once, as at scoring time, so the
    first answer token is predicted from exactly the position the scorer reads. A
    prompt longer than ``max_length`` with its answer raises. ``prefix_gradient=False``
    runs the shared prefixes without gradient: the loss then trains the model through
    the candidates' tokens only, and a step costs about half as much. ``frozen`` replays
    the frozen bottom layers (``FrozenLayerCache``).
    """
    encoded = encode_prompts(loaded, prompts)
    targets = [answer_tokens(loaded, YES if a else NO) for a in answers]
    _check_lengths(encoded, targets, max_length)
    longest = max(len(t) for t in targets)
    pad = loaded.tokenizer.pad_token_id
    with fp32_head(loaded.model):
        logits = answer_logits(
            model, encoded, targets, longest + 1, pad, loaded.device, prefix_gradient, frozen
        )
    labels = torch.tensor(
        [[IGNORE_INDEX] * (longest - len(t)) + t for t in targets], device=logits.device
    )
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )
    return loss, _tokens(encoded, targets)


def listwise_loss(
    model,
    loaded: LoadedModel,
    prompts: Sequence[SplitPrompt],
    answers: Sequence[bool],
    groups: Sequence[str],
    max_length: int,
    prefix_gradient: bool = True,
    frozen: FrozenLayerCache | None = None,
) -> tuple[torch.Tensor, BatchTokens]:
    """Softmax cross-entropy over each candidate list's Yes-vs-No margins, in fp32.

    A candidate's margin is logit(yes) - logit(no) at the answer position, so its score
    P(yes) / (P(yes) + P(no)) is the sigmoid of it: the loss trains the ranking the
    scorer reads. Each group of the batch (one positive and its negatives, sharing the
    user's prefix, computed once) contributes ``logsumexp(margins) - margin(positive)``;
    a group the batch holds without a positive or without a negative is left out.
    Returns the mean over groups and the tokens the batch holds.
    """
    encoded = encode_prompts(loaded, prompts)
    targets = [answer_tokens(loaded, YES if a else NO) for a in answers]
    _check_lengths(encoded, targets, max_length)
    margins = answer_margins(model, loaded, encoded, prefix_gradient, frozen)
    members: dict[str, list[int]] = {}
    for n, group in enumerate(groups):
        members.setdefault(group, []).append(n)
    losses = []
    for rows in members.values():
        positives = [n for n in rows if answers[n]]
        if len(positives) == 1 and len(rows) > 1:
            group_margins = margins[torch.tensor(rows, device=margins.device)]
            losses.append(torch.logsumexp(group_margins, 0) - margins[positives[0]])
    loss = torch.stack(losses).mean() if losses else margins.sum() * 0.0
    return loss, _tokens(encoded, targets)


def objective_loss(
    objective: str,
    model,
    loaded: LoadedModel,
    prompts: Sequence[SplitPrompt],
    answers: Sequence[bool],
    groups: Sequence[str],
    max_length: int,
    prefix_gradient: bool = True,
    frozen: FrozenLayerCache | None = None,
) -> tuple[torch.Tensor, BatchTokens]:
    """The loss ``train.objective`` names (``pointwise`` or ``listwise``) of one
    micro-batch, and the tokens it holds; ``groups`` are the rows' candidate lists."""
    if objective == "listwise":
        return listwise_loss(
            model, loaded, prompts, answers, groups, max_length, prefix_gradient, frozen
        )
    if objective == "pointwise":
        return sft_loss(model, loaded, prompts, answers, max_length, prefix_gradient, frozen)
    raise ValueError(f"unknown train.objective {objective!r}: pointwise or listwise")
