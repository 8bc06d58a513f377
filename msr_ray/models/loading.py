"""Load a model by spec: ``embedded``, ``tiny`` or a local Hugging Face folder, never the hub."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from msr_ray.config import ModelSpec
from msr_ray.models import embedded

Kind = Literal["llm", "mllm"]
BUILT_IN = {
    ("embedded", "llm"): embedded.embedded_llm_dir,
    ("embedded", "mllm"): embedded.embedded_mllm_dir,
    ("tiny", "llm"): embedded.tiny_llm_dir,
    ("tiny", "mllm"): embedded.tiny_mllm_dir,
}


@dataclass
class LoadedModel:
    """A model ready for generation or scoring, with what encodes its inputs.

    processor: the multimodal processor (MLLM) or the tokenizer (LLM).
    name: the spec's name, recorded with every output.
    """

    model: Any
    processor: Any
    tokenizer: Any
    multimodal: bool
    device: torch.device
    dtype: torch.dtype
    name: str


def resolve_device(spec: ModelSpec) -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec.device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), read off the CPU.

    Without it, bf16 matmuls are emulated and far slower than fp32 (measured on an AVX2
    EPYC: 1.1 vs 55 GFLOP/s), so ``dtype: auto`` must not pick bf16 there.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    found = [getattr(torch.cpu, name, None) for name in probes]
    if all(probe is not None for probe in found):
        return any(probe() for probe in found)
    try:  # an older or newer torch without the probes: the kernel's CPU flags
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA with bf16 support and on a CPU with native bf16, else fp32."""
    if spec.dtype != "auto":
        return getattr(torch, spec.dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def resolve_model_dir(spec: ModelSpec, kind: Kind) -> Path:
    """The local folder a spec names; built-in names are built into the cache first."""
    if spec.name in ("embedded", "tiny"):
        return BUILT_IN[(spec.name, kind)](spec.cache_dir)
    path = Path(spec.name).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model '{spec.name}' is not 'embedded', 'tiny' or a local folder; "
            "msr-ray never downloads from a hub: download the checkpoint first and give its path"
        )
    return path


def load_model(spec: ModelSpec, kind: Kind) -> LoadedModel:
    """Load the model and its processor/tokenizer in eval mode on the spec's device and dtype."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    torch.set_num_threads(spec.num_threads)
    folder = resolve_model_dir(spec, kind)
    device = resolve_device(spec)
    dtype = resolve_dtype(spec, device)
    options = {"local_files_only": True, "trust_remote_code": spec.trust_remote_code}
    if kind == "mllm":
        processor = AutoProcessor.from_pretrained(folder, **options)
        tokenizer = processor.tokenizer
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype, **options)
    else:
        processor = tokenizer = AutoTokenizer.from_pretrained(folder, **options)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **options)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return LoadedModel(model, processor, tokenizer, kind == "mllm", device, dtype, spec.name)
