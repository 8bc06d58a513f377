"""Yes/No answers: the exact answer tokens, the SFT targets built from them, and P(yes).

The answer tokens are read off the chat template itself: render a conversation
without and with an assistant turn holding "Yes" (or "No") and take the tokens
the turn adds. Training labels and scoring both use these ids, so the model is
scored on exactly the token it was taught to emit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from msr_ray.models.generation import ChatRequest, encode, render
from msr_ray.models.loading import LoadedModel

YES, NO = "Yes", "No"
IGNORE_INDEX = -100


def answer_tokens(loaded: LoadedModel, answer: str) -> list[int]:
    """Token ids the chat template appends after the generation prompt for ``answer``."""
    return list(_answer_tokens(loaded.processor, answer))


@cache
def _answer_tokens(processor, answer: str) -> tuple[int, ...]:
    messages = [{"role": "user", "content": [{"type": "text", "text": "Question?"}]}]
    tokenizer = getattr(processor, "tokenizer", processor)
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(
        [*messages, {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
        tokenize=False,
    )
    if not full.startswith(prompt):
        raise ValueError(
            "the chat template does not continue the generation prompt with the answer"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the answer changes how the prompt tokenizes; cannot locate its tokens")
    return tuple(full_ids[len(prompt_ids) :])


@dataclass(frozen=True)
class AnswerIds:
    """The first token of each answer: what the scorer reads and the loss teaches."""

    yes: int
    no: int


def answer_ids(loaded: LoadedModel) -> AnswerIds:
    yes, no = answer_tokens(loaded, YES)[0], answer_tokens(loaded, NO)[0]
    if yes == no:
        raise ValueError("'Yes' and 'No' start with the same token; cannot score them")
    return AnswerIds(yes, no)


def score_yes_no(loaded: LoadedModel, requests: list[ChatRequest]) -> list[float]:
    """P(yes) / (P(yes) + P(no)) at the answer position of every request, in one forward pass."""
    if not requests:
        return []
    ids = answer_ids(loaded)
    texts = [render(loaded, r.messages) for r in requests]
    batch = encode(loaded, texts, [img for r in requests for img in r.images])
    with torch.inference_mode():
        logits = loaded.model(**batch).logits[:, -1, :].float()
    pair = torch.stack([logits[:, ids.no], logits[:, ids.yes]], dim=1)
    return torch.softmax(pair, dim=1)[:, 1].tolist()


def sft_batch(
    loaded: LoadedModel, requests: list[ChatRequest], answers: list[bool], max_length: int
) -> dict[str, torch.Tensor]:
    """A training batch: prompt + answer tokens, labels on the answer tokens only.

    Sequences are left-padded like at scoring time, so the first answer token sits at
    the position the scorer reads. Prompts longer than ``max_length`` raise.
    """
    texts = [render(loaded, r.messages) for r in requests]
    images = [img for r in requests for img in r.images]
    prompts = encode(loaded, texts, images)
    pad = loaded.tokenizer.pad_token_id
    rows, labels = [], []
    for input_ids, mask, answer in zip(
        prompts["input_ids"], prompts["attention_mask"], answers, strict=True
    ):
        prompt = input_ids[mask.bool()].tolist()
        target = answer_tokens(loaded, YES if answer else NO)
        if len(prompt) + len(target) > max_length:
            raise ValueError(f"prompt of {len(prompt)} tokens + answer exceeds {max_length}")
        rows.append(prompt + target)
        labels.append([IGNORE_INDEX] * len(prompt) + target)
    width = max(len(r) for r in rows)
    batch = {
        "input_ids": torch.tensor([[pad] * (width - len(r)) + r for r in rows]),
        "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows]),
        "labels": torch.tensor([[IGNORE_INDEX] * (width - len(lab)) + lab for lab in labels]),
    }
    batch = {k: v.to(loaded.device) for k, v in batch.items()}
    if "pixel_values" in prompts:
        batch["pixel_values"] = prompts["pixel_values"]
    return batch
