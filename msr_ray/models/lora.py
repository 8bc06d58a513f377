"""What fine-tuning trains in each MLLM family, as one PEFT adapter whatever the recipe.

``train.trainable`` picks it: ``lora`` (the paper's) adapts every linear layer of the
language model; ``top-layers`` trains the top ``train.top_layers`` decoder layers and the
final norm in full; ``language-model`` trains every decoder layer and the final norm in
full. Full-trained modules are PEFT's ``modules_to_save`` (of a LoRA config with no LoRA
targets, PEFT's dummy target), so every recipe saves, loads, merges and serves as the same
adapter folder. The projector is trained in full when ``train.train_projector`` is on.
"""

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


def decoder_layer_names(model) -> list[str]:
    """Module paths of the language model's decoder layers, bottom to top."""
    layers = model.get_decoder().layers
    return [f"{language_model_name(model)}.layers.{n}" for n in range(len(layers))]


def full_trained_modules(cfg: TrainConfig, model) -> list[str]:
    """Module paths trained in full: the recipe's decoder layers and final norm (none for
    LoRA), then the projector when ``train_projector`` is on."""
    layers = decoder_layer_names(model)
    # NOTE: the paper fine-tunes with LoRA alone (``lora``, the default); on the demo world
    # LoRA sat at the label prior, and the top decoder layers trained in full learn
    # (docs/method.md, The recipe).
    if cfg.trainable == "top-layers":
        if cfg.top_layers > len(layers):
            raise ValueError(
                f"train.top_layers: {cfg.top_layers} exceeds the model's {len(layers)} "
                "decoder layers"
            )
        modules = [*layers[len(layers) - cfg.top_layers :], f"{language_model_name(model)}.norm"]
    elif cfg.trainable == "language-model":
        modules = [*layers, f"{language_model_name(model)}.norm"]
    else:
        modules = []
    return modules + ([projector_name(model)] if cfg.train_projector else [])


def frozen_layers(cfg: TrainConfig, model) -> int:
    """How many bottom decoder layers no recipe parameter reaches (all of them are frozen
    below the lowest trained layer; LoRA trains every layer)."""
    if cfg.trainable == "top-layers":
        return len(decoder_layer_names(model)) - cfg.top_layers
    return 0


def lora_config(cfg: TrainConfig, model):
    """The ``peft.LoraConfig`` of a run on ``model``: for ``lora`` the rank, alpha,
    dropout and target modules; for the full-training recipes no LoRA target; and the
    modules trained in full (``full_trained_modules``)."""
    from peft import LoraConfig
    from peft.utils.constants import DUMMY_TARGET_MODULES

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=(
            lora_target(cfg, model) if cfg.trainable == "lora" else DUMMY_TARGET_MODULES
        ),
        modules_to_save=full_trained_modules(cfg, model) or None,
        task_type="CAUSAL_LM",
    )
