"""What LoRA adapts in each MLLM family: its language model's linear layers, and the
projector, trained in full."""

from __future__ import annotations

import re

from msr_ray.config import TrainConfig

LANGUAGE_MODEL_LINEAR = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)

# The module joining the vision tower to the language model, as each family names it:
# LLaVA and LLaVA-NeXT's projector, Idefics3 / SmolVLM's connector, Qwen2-VL's patch merger.
PROJECTORS = ("multi_modal_projector", "connector", "merger")


def language_model_name(model) -> str:
    """Module path of the model's language model: ``model.language_model`` (LLaVA,
    LLaVA-NeXT, Qwen2-VL), ``model.text_model`` (Idefics3), as ``get_decoder()`` finds it."""
    decoder = model.get_decoder()
    return next(name for name, module in model.named_modules() if module is decoder)


def lora_target(cfg: TrainConfig, model) -> str | list[str]:
    """Module names LoRA adapts: the configured ones, else every linear layer of the
    model's language model (the vision tower is left alone)."""
    if cfg.lora_target_modules:
        return cfg.lora_target_modules
    prefix = re.escape(language_model_name(model))
    return rf"{prefix}\..*\.({'|'.join(LANGUAGE_MODEL_LINEAR)})"


def projector_name(model) -> str:
    """The model's multimodal projector module (one of ``PROJECTORS``)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [name for name in PROJECTORS if name in names]
    if not found:
        raise ValueError(
            f"train.train_projector: {type(model).__name__} has no projector module named "
            f"{' or '.join(PROJECTORS)}; set train.train_projector=false to train LoRA alone"
        )
    return found[0]


def lora_config(cfg: TrainConfig, model):
    """The ``peft.LoraConfig`` of a run on ``model``: rank, alpha, dropout, target
    modules, and the projector when it is trained in full."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=lora_target(cfg, model),
        modules_to_save=[projector_name(model)] if cfg.train_projector else None,
        task_type="CAUSAL_LM",
    )
