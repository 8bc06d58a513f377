"""The model families msr-ray is tested with, and those it refuses, with the reason.

A local checkpoint's family is its ``config.json`` ``model_type``. The README's model
matrix lists the same families; ``tests/models/families.py`` builds a tiny checkpoint of
each tested one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# MLLM families whose every stage (item summaries, SFT, prefix-shared scoring, serving,
# export) is tested, by model_type.
TESTED_MLLMS = {
    "llava": "LLaVA-1.5: a CLIP tower, a fixed number of image tokens per image",
    "llava_next": "LLaVA-NeXT (LLaVA-1.6): anyres tiles, a token count per image size",
    "idefics3": "Idefics3 / SmolVLM: image splitting into tiles plus a global image",
    "qwen2_vl": "Qwen2-VL: a patch grid per image size, 3-D rotary positions (M-RoPE)",
    "qwen2_5_vl": "Qwen2.5-VL: as Qwen2-VL, with windowed attention in the vision tower",
}
# LLM families tested as the user-preference summarizer.
TESTED_LLMS = {"llama": "Llama (2, 3)", "qwen2": "Qwen2, Qwen2.5", "mistral": "Mistral"}
REFUSED = {
    "qwen3_vl": (
        "untested: its vision tower feeds several language-model layers (deepstack) "
        "and its positions carry timestamps; use Qwen2.5-VL, LLaVA-NeXT or Idefics3/SmolVLM"
    )
}


class UnsupportedModel(ValueError):
    """A checkpoint of a family msr-ray refuses to run, with the reason."""


def model_type(folder: Path) -> str | None:
    """The checkpoint's ``model_type`` from its ``config.json``, None when unreadable."""
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def check_family(folder: Path, kind: str, name: str | None = None) -> str | None:
    """The checkpoint's family; raises ``UnsupportedModel`` for a refused one, and logs
    a warning for one outside the tested matrix."""
    family = model_type(folder)
    label = name or str(folder)
    if family in REFUSED:
        raise UnsupportedModel(f"model '{label}' is a {family} checkpoint: {REFUSED[family]}")
    tested = TESTED_MLLMS if kind == "mllm" else TESTED_LLMS
    if family is not None and family not in tested:
        log.warning(
            "model '%s' is a %s checkpoint, outside the tested families (%s)",
            label,
            family,
            ", ".join(sorted(tested)),
        )
    return family


def check_models(specs: dict[str, object]) -> None:
    """Refuse, before any stage runs, a local checkpoint of a refused family (``specs``:
    kind -> ``ModelSpec``; a folder this machine cannot see is checked where a stage
    loads it)."""
    for kind, spec in specs.items():
        name = spec.name
        path = Path(name).expanduser()
        if name not in ("embedded", "tiny") and path.is_dir():
            check_family(path, kind, name)
