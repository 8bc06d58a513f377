"""Yes/No answers: the exact answer tokens, P(yes) and the answer logits, with shared prefixes.

The answer tokens are read off the chat template itself: render a conversation
without and with an assistant turn holding "Yes" (or "No") and take the tokens
the turn adds. Training labels and scoring both use these ids, so the model is
scored on exactly the token it was taught to emit.

A recommender prompt is split in two (``SplitPrompt``): the prefix every candidate of a
user shares (instruction + preference summary) and the candidate's part (image, title,
the generation prompt). Both are tokenized separately and concatenated, at training and
at scoring time alike, so a prompt has one token sequence however it is computed: as one
sequence (``score_full``), or as the prefix's KV cache computed once and expanded over
the candidates (``score_shared``), which gives the same scores for a fraction of the work.

Position ids are computed here, not by the model, since a cached prefix and left padding
inside the concatenation are layouts the model's own defaults do not know: 1-D ids that
count real tokens, or, for a model with 3-D rotary positions (M-RoPE, the Qwen2-VL
family), the model's own ``get_rope_index`` over each whole prefix + suffix sequence.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from PIL import Image

from msr_ray.models.frozen_layers import FrozenLayerCache
from msr_ray.models.generation import on_model, render
from msr_ray.models.loading import LoadedModel
from msr_ray.models.prompts import SPLIT, Messages

YES, NO = "Yes", "No"


def answer_tokens(loaded: LoadedModel, answer: str) -> list[int]:
    """Token ids the chat template appends after the generation prompt for ``answer``."""
    # NOTE: the reference implementation takes convert_tokens_to_ids('Yes'), which is not
    # the token a model emits when its tokenizer writes '▁Yes'; these are the emitted ones.
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
    if full_ids[: len(prompt_ids)] == prompt_ids:
        return tuple(full_ids[len(prompt_ids) :])
    # The answer merges with the prompt's last characters (a tokenizer that splits a
    # trailing "\n\n" otherwise than "\n\nYes"): prompts are tokenized on their own at
    # training and scoring alike, so the answer's tokens are its own text's.
    return tuple(tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"])


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


@dataclass(frozen=True)
class SplitPrompt:
    """A rendered recommender prompt cut where its shared part ends.

    prefix: the text every candidate of one user shares (no images in it).
    suffix: the candidate's text through the generation prompt; its image tokens refer
        to ``images``, in order.
    """

    prefix: str
    suffix: str
    images: tuple[Image.Image, ...] = ()


def split_prompt(
    loaded: LoadedModel, messages: Messages, images: Sequence[Image.Image]
) -> SplitPrompt:
    """Render ``messages`` (which hold one ``SPLIT`` text part) and cut them at the split."""
    text = render(loaded, messages)
    if text.count(SPLIT) != 1:
        raise ValueError("a recommender prompt must hold the split marker exactly once")
    prefix, suffix = text.split(SPLIT)
    return SplitPrompt(prefix, suffix, tuple(images))


@dataclass
class EncodedPrompts:
    """Token ids of split prompts: each distinct prefix once, each candidate's suffix.

    owner[i] is the index in ``prefixes`` of candidate i's prefix.
    vision: every other tensor the processor returned for the suffixes' images, as the
        model's forward names them (``pixel_values``; ``image_sizes`` for LLaVA-NeXT's
        anyres tiles; ``pixel_attention_mask`` for Idefics3's), floating ones in the
        model's dtype. The prefixes hold no images, so these go with the suffixes' pass.
    """

    prefixes: list[list[int]]
    owner: list[int]
    suffixes: list[list[int]]
    vision: dict[str, torch.Tensor]


def encode_prompts(loaded: LoadedModel, prompts: Sequence[SplitPrompt]) -> EncodedPrompts:
    """Tokenize prefixes and suffixes separately (image tokens expanded in the suffixes)."""
    tokenizer = loaded.tokenizer
    index: dict[str, int] = {}
    owner = [index.setdefault(p.prefix, len(index)) for p in prompts]
    prefixes = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in index]
    images = [img for p in prompts for img in p.images]
    texts = [p.suffix for p in prompts]
    if loaded.multimodal:
        batch = loaded.processor(
            text=texts,
            images=images or None,
            padding=True,
            add_special_tokens=False,
            return_tensors="pt",
        )
    elif images:
        raise ValueError(f"model '{loaded.name}' is a text-only model: it cannot take images")
    else:
        batch = tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    suffixes = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]
    vision = {
        key: on_model(value, loaded)
        for key, value in batch.items()
        if key not in TEXT_INPUTS and torch.is_tensor(value)
    }
    return EncodedPrompts(prefixes, owner, suffixes, vision)


# What a processor returns for the text, which scoring rebuilds from the token ids.
TEXT_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"})


def left_pad(
    rows: list[list[int]], pad: int, device=None, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids padded on the left with ``pad`` to ``width`` (default: the longest),
    and their attention mask."""
    width = max(len(r) for r in rows) if width is None else width
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


def _positions(mask: torch.Tensor, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Position ids counting real tokens only (padding gets 1, as in generate)."""
    positions = (
        mask.long().cumsum(dim=1) - 1 + (start if isinstance(start, int) else start[:, None])
    )
    return positions.masked_fill(mask == 0, 1)


def _rope_index_owner(model):
    """The module that computes M-RoPE positions (``get_rope_index``), or None."""
    model = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
    return next((m for m in model.modules() if hasattr(m, "get_rope_index")), None)


def _mrope_positions(owner, ids: torch.Tensor, mask: torch.Tensor, vision: dict) -> torch.Tensor:
    """(3, batch, length) M-RoPE position ids of ``ids``, real tokens only (``mask``),
    as the model computes them for its own whole-sequence forward."""
    image_token = owner.config.image_token_id
    positions, _ = owner.get_rope_index(
        ids,
        (ids == image_token).int(),
        image_grid_thw=vision.get("image_grid_thw"),
        attention_mask=mask,
    )
    return positions


def _text_config(model):
    model = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
    config = model.config
    return getattr(config, "text_config", config)


def answer_logits(
    model,
    encoded: EncodedPrompts,
    tails: list[list[int]],
    keep: int,
    pad: int,
    device,
    prefix_gradient: bool = True,
    frozen: FrozenLayerCache | None = None,
) -> torch.Tensor:
    """Logits at the last ``keep`` positions of every prefix + suffix + tail sequence.

    The prefixes run once (left-padded); their KV cache is gathered per candidate and the
    suffixes (+ tails, left-padded) run on top of it with position ids that continue each
    prefix, so every candidate sees exactly its own prefix + suffix sequence. ``frozen``
    replays the frozen bottom layers' recorded outputs instead of computing them.
    """
    from transformers import DynamicCache

    prefix_ids, prefix_mask = left_pad(encoded.prefixes, pad, device)
    rows = [s + t for s, t in zip(encoded.suffixes, tails, strict=True)]
    prefix_keys = [tuple(p) for p in encoded.prefixes]
    row_keys = [(*prefix_keys[o], -1, *r) for o, r in zip(encoded.owner, rows, strict=True)]
    width = prefix_ids.shape[1]
    with (
        torch.set_grad_enabled(prefix_gradient and torch.is_grad_enabled()),
        frozen.call(prefix_keys, list(map(len, encoded.prefixes)), width)
        if frozen
        else nullcontext(),
    ):
        prefix = model(
            input_ids=prefix_ids,
            attention_mask=prefix_mask,
            position_ids=_positions(prefix_mask),
            use_cache=True,
            logits_to_keep=1,
        )
    owner = torch.tensor(encoded.owner, device=device)
    cache = DynamicCache(
        ddp_cache_data=[
            (layer.keys.index_select(0, owner), layer.values.index_select(0, owner))
            for layer in prefix.cache.layers
        ],
        config=_text_config(model),
    )
    suffix_ids, suffix_mask = left_pad(rows, pad, device)
    prefix_mask = prefix_mask.index_select(0, owner)
    mask = torch.cat([prefix_mask, suffix_mask], dim=1)
    positions = _positions(suffix_mask, prefix_mask.sum(dim=1))
    if (rope := _rope_index_owner(model)) is not None:
        whole = torch.cat([prefix_ids.index_select(0, owner), suffix_ids], dim=1)
        width = prefix_ids.shape[1]
        positions = _mrope_positions(rope, whole, mask, encoded.vision)[:, :, width:]
    inputs: dict[str, Any] = {
        "input_ids": suffix_ids,
        "attention_mask": mask,
        "position_ids": positions,
        "cache": cache,
        "logits_to_keep": keep,
        **encoded.vision,
    }
    if frozen is None:
        return model(**inputs).logits
    with frozen.call(row_keys, list(map(len, rows)), suffix_ids.shape[1]):
        return model(**inputs).logits


def _full_logits(model, encoded: EncodedPrompts, pad: int, device) -> torch.Tensor:
    """Logits at the last position of every prefix + suffix, run as whole sequences."""
    rows = [encoded.prefixes[o] + s for o, s in zip(encoded.owner, encoded.suffixes, strict=True)]
    ids, mask = left_pad(rows, pad, device)
    positions = _positions(mask)
    if (rope := _rope_index_owner(model)) is not None:
        positions = _mrope_positions(rope, ids, mask, encoded.vision)
    inputs: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions,
        "logits_to_keep": 1,
        **encoded.vision,
    }
    return model(**inputs).logits


@contextmanager
def fp32_head(model) -> Iterator[None]:
    """Inside the block, the model's LM head computes its logits in fp32.

    A bf16 head rounds logits of magnitude 16-32 to steps of 0.125, so two candidates'
    Yes-vs-No margins tie whenever they differ by less: on MovieLens with the embedded
    MLLM, 300 lists of 21 scored only 2-5 distinct values each, and the pessimistic
    tie rule then put HR@5 below chance. The head's input (the final hidden state) is
    recomputed against the fp32 weight for the few positions kept, which costs one
    vocabulary-sized matmul per position.
    """
    head = model.get_output_embeddings()
    if head is None or head.weight.dtype == torch.float32:
        yield
        return

    def in_fp32(module, inputs, output):
        bias = None if module.bias is None else module.bias.float()
        return torch.nn.functional.linear(inputs[0].float(), module.weight.float(), bias)

    handle = head.register_forward_hook(in_fp32)
    try:
        yield
    finally:
        handle.remove()


def _p_yes(loaded: LoadedModel, last_logits: torch.Tensor) -> list[float]:
    ids = answer_ids(loaded)
    logits = last_logits.float()
    pair = torch.stack([logits[:, ids.no], logits[:, ids.yes]], dim=1)
    return torch.softmax(pair, dim=1)[:, 1].tolist()


def score_shared(loaded: LoadedModel, prompts: Sequence[SplitPrompt]) -> list[float]:
    """P(yes) / (P(yes) + P(no)) of every prompt, each distinct prefix computed once."""
    if not prompts:
        return []
    encoded = encode_prompts(loaded, prompts)
    pad = loaded.tokenizer.pad_token_id
    with torch.inference_mode(), fp32_head(loaded.model):
        logits = answer_logits(loaded.model, encoded, [[] for _ in prompts], 1, pad, loaded.device)
    return _p_yes(loaded, logits[:, -1])


def score_full(loaded: LoadedModel, prompts: Sequence[SplitPrompt]) -> list[float]:
    """The same scores as ``score_shared``, every prompt run as one whole sequence."""
    if not prompts:
        return []
    encoded = encode_prompts(loaded, prompts)
    with torch.inference_mode(), fp32_head(loaded.model):
        logits = _full_logits(loaded.model, encoded, loaded.tokenizer.pad_token_id, loaded.device)
    return _p_yes(loaded, logits[:, -1])


def answer_margins(
    model,
    loaded: LoadedModel,
    encoded: EncodedPrompts,
    prefix_gradient: bool = True,
    frozen: FrozenLayerCache | None = None,
) -> torch.Tensor:
    """logit(yes) - logit(no) at every encoded prompt's answer position, in fp32 (with
    gradient when enabled; the shared prefixes with it only if ``prefix_gradient``)."""
    pad = loaded.tokenizer.pad_token_id
    tails: list[list[int]] = [[] for _ in encoded.suffixes]
    with fp32_head(loaded.model):
        logits = answer_logits(
            model, encoded, tails, 1, pad, loaded.device, prefix_gradient, frozen
        )
    ids = answer_ids(loaded)
    last = logits[:, -1].float()
    return last[:, ids.yes] - last[:, ids.no]
