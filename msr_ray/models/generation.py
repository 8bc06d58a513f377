"""Batched chat generation: many (images, messages) requests in one left-padded call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from msr_ray.config import ModelSpec
from msr_ray.models.loading import LoadedModel
from msr_ray.models.prompts import SPLIT, Messages


@dataclass
class ChatRequest:
    """One prompt: chat messages, and the images their image parts refer to, in order."""

    messages: Messages
    images: list[Image.Image] = field(default_factory=list)


@dataclass
class Generated:
    """One generated answer and its token counts (for tokens/s reporting)."""

    text: str
    prompt_tokens: int
    generated_tokens: int


# Put inside a special token that appears in data text, so it no longer matches it.
WORD_JOINER = "\u2060"


def neutralise(text: str, special_tokens: Sequence[str]) -> str:
    """``text`` with every special token (``<image>``, ``<|im_end|>``...) broken up.

    Titles, item texts and generated summaries are data: a special token inside them
    would become an image slot or end the chat turn. A word joiner after the token's
    first character keeps it readable and stops the tokenizer from matching it.
    """
    for token in special_tokens:
        if len(token) > 1 and token in text:
            text = text.replace(token, token[0] + WORD_JOINER + token[1:])
    return text


def special_tokens(loaded: LoadedModel) -> tuple[str, ...]:
    """Every special token string of the model's tokenizer (image token included)."""
    tokenizer = loaded.tokenizer
    tokens = set(tokenizer.all_special_tokens)
    tokens.update(str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values())
    image_token = getattr(loaded.processor, "image_token", None)
    if image_token:
        tokens.add(str(image_token))
    return tuple(sorted(tokens, key=len, reverse=True))


def render(loaded: LoadedModel, messages: Messages, add_generation_prompt: bool = True) -> str:
    """The chat template's text for ``messages`` (the processor's template for an MLLM).

    Special tokens (and the recommender's split marker) inside the messages' text are
    neutralised first; images enter only as ``{"type": "image"}`` parts, and the split
    marker only as a text part of its own.
    """
    tokens = (*special_tokens(loaded), SPLIT)
    safe = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            content = neutralise(content, tokens)
        else:
            content = [
                {**part, "text": neutralise(part["text"], tokens)}
                if part.get("type") == "text" and part["text"] != SPLIT
                else part
                for part in content
            ]
        safe.append({**message, "content": content})
    return loaded.processor.apply_chat_template(
        safe, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def encode(
    loaded: LoadedModel, texts: list[str], images: list[Image.Image], max_length: int | None = None
) -> dict[str, Any]:
    """Tokenize rendered prompts (left-padded) with their images, on the model's device."""
    if loaded.multimodal:
        # Image tokens must stay whole, so multimodal prompts are never truncated.
        batch = loaded.processor(
            text=texts, images=images or None, padding=True, return_tensors="pt"
        )
    else:
        if images:
            raise ValueError(f"model '{loaded.name}' is a text-only model: it cannot take images")
        batch = loaded.tokenizer(
            texts,
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            add_special_tokens=False,
            return_tensors="pt",
        )
    return {k: on_model(v, loaded) if torch.is_tensor(v) else v for k, v in batch.items()}


def on_model(value: torch.Tensor, loaded: LoadedModel) -> torch.Tensor:
    """``value`` on the model's device, and in its dtype when floating (pixels)."""
    value = value.to(loaded.device)
    return value.to(loaded.dtype) if value.is_floating_point() else value


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids = loaded.model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    ids.add(loaded.tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def generate(loaded: LoadedModel, requests: list[ChatRequest], spec: ModelSpec) -> list[Generated]:
    """Generate an answer for every request in one batched call (greedy unless configured)."""
    if not requests:
        return []
    texts = [render(loaded, r.messages) for r in requests]
    images = [img for r in requests for img in r.images]
    batch = encode(loaded, texts, images, spec.max_input_tokens)
    options: dict[str, Any] = {
        "max_new_tokens": spec.max_new_tokens,
        "do_sample": spec.do_sample,
        "pad_token_id": loaded.tokenizer.pad_token_id,
    }
    if spec.do_sample:
        torch.manual_seed(spec.seed)
        options.update(temperature=spec.temperature, top_p=spec.top_p)
    else:
        options.update(temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        output = loaded.model.generate(**batch, **options)
    prompt_length = batch["input_ids"].shape[1]
    prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
    eos = _eos_ids(loaded)
    results = []
    for row, n_prompt in zip(output[:, prompt_length:].tolist(), prompt_tokens, strict=True):
        end = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
        text = loaded.tokenizer.decode(row[:end], skip_special_tokens=True).strip()
        results.append(Generated(text, int(n_prompt), end))
    return results
