"""Load a model by spec: ``embedded``, ``tiny`` or a local Hugging Face folder, never the hub."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from msr_ray.config import ModelSpec
from msr_ray.models import embedded, families
from msr_ray.models.cache import build_once
from msr_ray.models.processors import load_processor

Kind = Literal["llm", "mllm"]
# ``dtype: auto`` takes bf16 on a CPU only when its bf16 matmuls are at least this much
# faster than fp32 ones, measured (some CPUs with AVX-512 BF16 run bf16 slower than fp32).
BF16_MIN_SPEEDUP = 1.2
MATMUL_FILE = "matmul.json"
# Model names built into the cache (the MLLMs among them have vision towers without
# pretrained weights).
BUILT_IN_NAMES = ("embedded", "tiny")
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


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gflops(dtype: torch.dtype, seconds: float = 0.15) -> float:
    """One thread's matmul rate at a 135M model's layer shape, best of three windows."""
    a = torch.randn(256, 576, dtype=dtype)
    b = torch.randn(576, 1536, dtype=dtype)
    flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    a @ b
    best = 0.0
    for _ in range(3):
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / 3:
            a @ b
            count += 1
        best = max(best, count * flops / elapsed / 1e9)
    return best


def measure_cpu_matmul() -> dict[str, Any]:
    """fp32 and bf16 matmul GFLOP/s of one thread of this CPU (about half a second)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32, bf16 = _gflops(torch.float32), _gflops(torch.bfloat16)
    finally:
        torch.set_num_threads(threads)
    return {"cpu": _cpu_name(), "torch": torch.__version__, "fp32_gflops": fp32,
            "bf16_gflops": bf16}  # fmt: skip


def cpu_matmul_rates(cache_dir: str | None = None) -> dict[str, Any]:
    """This CPU's measured fp32 and bf16 matmul rates, measured once per CPU model and
    torch version and recorded in the model cache, so every process (every train worker
    above all) reads the same figures and picks the same dtype."""
    key = hashlib.sha256(f"{_cpu_name()}|{torch.__version__}".encode()).hexdigest()[:16]

    def build(folder: Path) -> None:
        (folder / MATMUL_FILE).write_text(json.dumps(measure_cpu_matmul(), indent=2))

    folder = build_once(f"cpu-matmul-{key}", build, cache_dir)
    return json.loads((folder / MATMUL_FILE).read_text())


def cpu_prefers_bf16(cache_dir: str | None = None) -> bool:
    """Whether bf16 is the faster dtype on this CPU: native bf16 (AVX-512 BF16 or AMX)
    and measured bf16 matmuls at least ``BF16_MIN_SPEEDUP`` times fp32's."""
    if not cpu_has_native_bf16():
        return False
    rates = cpu_matmul_rates(cache_dir)
    return rates["bf16_gflops"] >= BF16_MIN_SPEEDUP * rates["fp32_gflops"]


def resolve_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA with bf16 support and on a CPU where bf16 is measured
    faster (``cpu_prefers_bf16``), else fp32."""
    if spec.dtype != "auto":
        return getattr(torch, spec.dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_prefers_bf16(spec.cache_dir):
        return torch.bfloat16
    return torch.float32


def resolve_model_dir(spec: ModelSpec, kind: Kind) -> Path:
    """The local folder a spec names; built-in names are built into the cache first.
    A checkpoint of a refused family raises ``families.UnsupportedModel``."""
    if spec.name in BUILT_IN_NAMES:
        return BUILT_IN[(spec.name, kind)](spec.cache_dir)
    path = Path(spec.name).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model '{spec.name}' is not 'embedded', 'tiny' or a local folder; "
            "msr-ray never downloads from a hub: download the checkpoint first and give its path"
        )
    families.check_family(path, kind, spec.name)
    return path


def load_model(spec: ModelSpec, kind: Kind) -> LoadedModel:
    """Load the model and its processor/tokenizer in eval mode on the spec's device and dtype."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    torch.set_num_threads(spec.num_threads)
    folder = resolve_model_dir(spec, kind)
    device = resolve_device(spec)
    dtype = resolve_dtype(spec, device)
    options = {"local_files_only": True, "trust_remote_code": spec.trust_remote_code}
    if kind == "mllm":
        processor = load_processor(folder, **options)
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
