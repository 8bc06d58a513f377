"""The model layer on one GPU: a random-weight LLaVA-NeXT of a realistic size, in bf16.

    python bench/gpu_check.py [--tokenizer FOLDER] [--out figures.json]
    python bench/gpu_check.py --preset tiny --device cpu --dtype float32   # what CI runs

Needs torch, transformers, peft, pillow, pydantic and pyyaml; no Ray, no DeepSpeed and
nothing from the network. The model is built from its config on the device (``7b``:
llava-v1.6-mistral-7b's shapes, a CLIP ViT-L/14 at 336 pixels and a Mistral-7B language
model, with the tokenizer's vocabulary), never saved. It runs the three things the
stages do with an MLLM, through msr-ray's own model layer, and prints for each:

  items:   item-summary generation (``generate``): a batch of poster + title prompts;
           generated tokens/s and prompt tokens/s.
  sft:     LoRA SFT steps (``sft_loss`` + AdamW, as a train worker runs them): one
           user's prefix shared by a target and its negatives; tokens/s, and the MFU
           of the step.
  scoring: prefix-shared scoring (``score_shared``) of 21-candidate lists, against
           whole-prompt scoring (``score_full``) of the same lists; candidates/s, the
           speed-up and the largest score difference.

MFU counts the language model's matmuls only: 2N FLOPs per token forward and 2N per
token backward where the loss needs gradients (input gradients: frozen weights take
none; LoRA's own are negligible), N = its parameters without the embeddings. Attention
and the vision tower are not counted, so the figure understates the device's work.
``--peak-tflops`` is the device's dense bf16 peak (989 for an H100 or H200 SXM).
The tokenizer is SmolLM2's (the embedded model's, ``--tokenizer`` to give a folder).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from msr_ray.config import ModelSpec, TrainConfig
from msr_ray.models import prompts
from msr_ray.models.embedded import CHAT_TEMPLATE, IMAGE_TOKEN, embedded_llm_dir
from msr_ray.models.generation import ChatRequest, generate
from msr_ray.models.loading import LoadedModel
from msr_ray.models.lora import lora_config
from msr_ray.models.scoring import score_full, score_shared, split_prompt
from msr_ray.training.losses import sft_loss

PRESETS = {
    # llava-v1.6-mistral-7b-hf's shapes.
    "7b": {
        "text": dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=32768,
        ),
        "vision": dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        ),
        "pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        "poster": (228, 336),  # a MovieLens poster at recommender.max_image_side
    },
    # The same code on 2 CPU cores in seconds (the test of this script).
    "tiny": {
        "text": dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
        ),
        "vision": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=56,
            patch_size=28,
        ),
        "pinpoints": [[56, 112], [112, 56], [112, 112]],
        "poster": (38, 56),
    },
}
REVIEW = "A long night of a detective in a city that never sleeps; tense, dark and witty."
PREFERENCE = (
    "The user appears to have a preference for tense crime dramas and dark thrillers with "
    "sharp dialogue, and lately for older black-and-white detective films."
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run, device: torch.device, repeats: int) -> tuple[float, object]:
    """Mean seconds of ``run()`` over ``repeats`` calls after one warm-up; its last result."""
    result = run()
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        result = run()
    _sync(device)
    return (time.perf_counter() - started) / repeats, result


def build(preset: str, tokenizer_dir: Path, device: torch.device, dtype) -> LoadedModel:
    """A random LLaVA-NeXT of ``preset``'s shapes on ``device``, with its processor."""
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        MistralConfig,
    )

    shapes = PRESETS[preset]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    tokenizer.padding_side = "left"
    side = shapes["vision"]["image_size"]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**shapes["vision"]),
        text_config=MistralConfig(vocab_size=len(tokenizer), **shapes["text"]),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_grid_pinpoints=shapes["pinpoints"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaNextForConditionalGeneration._from_config(config, dtype=dtype)
    model.eval()
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
            image_grid_pinpoints=shapes["pinpoints"],
        ),
        tokenizer=tokenizer,
        patch_size=shapes["vision"]["patch_size"],
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    return LoadedModel(model, processor, tokenizer, True, device, dtype, f"random-{preset}")


def poster(preset: str, n: int) -> Image.Image:
    colour = ((n * 70) % 256, (n * 130) % 256, (n * 40) % 256)
    return Image.new("RGB", PRESETS[preset]["poster"], colour)


def language_model_parameters(model) -> int:
    """N of the MFU: the language model's parameters without its embeddings."""
    decoder = model.get_decoder()
    embeddings = decoder.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in decoder.parameters()) - embeddings


def check_items(loaded: LoadedModel, args) -> dict:
    spec = ModelSpec(name=loaded.name, max_new_tokens=args.new_tokens)
    requests = [
        ChatRequest(
            prompts.item_fused_prompt("movie", f"Film {n} (1958)", REVIEW), [poster(args.preset, n)]
        )
        for n in range(args.item_batch)
    ]
    seconds, answers = timed(lambda: generate(loaded, requests, spec), loaded.device, args.repeats)
    generated = sum(a.generated_tokens for a in answers)
    prompt = sum(a.prompt_tokens for a in answers)
    return {
        "batch": len(requests),
        "prompt_tokens": prompt,
        "generated_tokens": generated,
        "seconds": seconds,
        "generated_tokens_per_s": generated / seconds,
        "prompt_tokens_per_s": prompt / seconds,
    }


def _user_list(loaded: LoadedModel, preset: str, user: int, candidates: int):
    preference = f"{PREFERENCE} (user {user})"
    return [
        split_prompt(
            loaded,
            prompts.recommend_prompt("movie", preference, f"Film {user}-{k}"),
            [poster(preset, user * candidates + k)],
        )
        for k in range(candidates)
    ]


def check_sft(loaded: LoadedModel, args) -> dict:
    from peft import get_peft_model

    base = loaded.model
    n = language_model_parameters(base)  # before LoRA adds its own
    model = get_peft_model(base, lora_config(TrainConfig(lora_r=8, lora_alpha=32), base))
    if args.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = _user_list(loaded, args.preset, 0, args.sft_candidates)
    answers = [k == 0 for k in range(len(batch))]

    def step() -> int:
        loss, tokens = sft_loss(model, loaded, batch, answers, 1 << 20)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return tokens.total

    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(loaded.device)
    seconds, tokens = timed(step, loaded.device, args.repeats)
    flops = 4 * n * tokens  # prefix gradient on: every token
    figures = {
        "candidates": len(batch),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / (args.peak_tflops * 1e12) if args.peak_tflops else None,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if loaded.device.type == "cuda":
        figures["peak_memory_gib"] = torch.cuda.max_memory_allocated(loaded.device) / 2**30
    model.unload()
    base.eval()
    return figures


def check_scoring(loaded: LoadedModel, args) -> dict:
    lists = [_user_list(loaded, args.preset, u, args.candidates) for u in range(args.users)]
    flat = [p for lst in lists for p in lst]
    shared_s, shared = timed(
        lambda: [s for lst in lists for s in score_shared(loaded, lst)], loaded.device, args.repeats
    )
    full_s, full = timed(
        lambda: [s for lst in lists for s in score_full(loaded, lst)], loaded.device, args.repeats
    )
    return {
        "lists": len(lists),
        "candidates": len(flat),
        "shared_seconds": shared_s,
        "full_seconds": full_s,
        "shared_candidates_per_s": len(flat) / shared_s,
        "full_candidates_per_s": len(flat) / full_s,
        "speedup": full_s / shared_s,
        "max_score_difference": max(abs(a - b) for a, b in zip(shared, full, strict=True)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder")
    parser.add_argument("--item-batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--sft-candidates", type=int, default=4, help="a target + negatives")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    started = time.perf_counter()
    loaded = build(args.preset, args.tokenizer or embedded_llm_dir(), device, dtype)
    figures: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "preset": args.preset,
        "dtype": args.dtype,
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "language_model_parameters": language_model_parameters(loaded.model),
        "build_seconds": time.perf_counter() - started,
    }
    print(json.dumps(figures))
    for name, check in (("items", check_items), ("sft", check_sft), ("scoring", check_scoring)):
        figures[name] = check(loaded, args)
        print(name, json.dumps(figures[name]), flush=True)
    figures["seconds"] = time.perf_counter() - started
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
