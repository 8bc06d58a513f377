"""The trained recommender as one portable Hugging Face folder (``msr-ray export``).

The folder holds the base MLLM with the LoRA adapter merged (``save_pretrained`` layout),
its processor and chat template, ``msr_ray_recommender.json`` (the prompt settings and
the answer token ids a scorer needs) and a model card (``README.md``). It loads with
``AutoProcessor`` and ``AutoModelForImageTextToText`` from that folder alone, and as
``mllm.name: <folder>`` in an msr-ray config.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from msr_ray.config import PipelineConfig
from msr_ray.method.recommender import Recommender
from msr_ray.models.loading import resolve_model_dir
from msr_ray.models.processors import save_processor
from msr_ray.models.prompts import RECOMMEND_PROMPT_VERSION
from msr_ray.models.scoring import answer_ids

SETTINGS_FILE = "msr_ray_recommender.json"


def export_recommender(
    config: PipelineConfig, adapter: str, built_from: dict[str, Any], out: str
) -> dict[str, Any]:
    """Write the recommender of ``config`` with the adapter at ``adapter`` merged to the
    local folder ``out``; its settings. ``built_from`` holds the train stage's completion
    record (``train``), the dataset's (``dataset``) and the evaluate metrics
    (``metrics``), which the settings and the model card quote.

    ``out`` is checked (and made) before the model loads: a non-empty folder, a link or
    a path that cannot be made raises ``OSError`` at once, and a failed export removes
    the folder it made.
    """
    made = new_folder(out)
    try:
        config = config.model_copy(deep=True)
        config.mllm.dtype = "float32"
        recommender = Recommender.load(config, adapter)
        settings = _write(recommender, config, built_from, out)
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return {"path": out, **settings}


def new_folder(out: str) -> bool:
    """Make ``out`` (True) or accept it as an existing empty real folder (False)."""
    if os.path.islink(out):
        raise FileExistsError(f"{out} is a symbolic link; give a new folder")
    if os.path.isdir(out):
        if os.listdir(out):
            raise FileExistsError(f"{out} exists and is not empty; give a new folder")
        return False
    try:
        os.makedirs(out)
    except OSError as error:
        raise OSError(f"cannot make {out}: {error.strerror or error}") from None
    return True


def _write(
    recommender: Recommender, config: PipelineConfig, built_from: dict[str, Any], out: str
) -> dict[str, Any]:
    """Save the merged model, processor, settings and model card into ``out``; the settings."""
    loaded = recommender.loaded
    ids = answer_ids(loaded)
    loaded.model.save_pretrained(out)
    save_processor(loaded.processor, resolve_model_dir(config.mllm, "mllm"), out)
    train = built_from["train"]
    settings = {
        "prompt_version": RECOMMEND_PROMPT_VERSION,
        "domain": config.domain,
        "recommender": config.recommender.model_dump(mode="json"),
        "answer_token_ids": {"yes": ids.yes, "no": ids.no},
        "base_model": config.mllm.name,
        "fine_tuning": fine_tuning(config),
        "train_fingerprint": train.get("fingerprint"),
        "train_version": train.get("version"),
    }
    metrics, dataset = built_from["metrics"], built_from["dataset"]
    with open(os.path.join(out, SETTINGS_FILE), "w") as f:
        json.dump(settings, f, indent=2)
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(model_card(settings, train, dataset, metrics))
    return settings


def fine_tuning(config: PipelineConfig) -> str:
    """What the recipe trained, in words (``train.trainable``)."""
    cfg = config.train
    if cfg.trainable == "lora":
        return f"LoRA r{cfg.lora_r} on the language model's linear layers"
    if cfg.trainable == "top-layers":
        return f"the top {cfg.top_layers} decoder layers and the final norm in full"
    return "every decoder layer and the final norm in full"


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for model, splits in metrics.items():
        for split, values in splits.items():
            cells = [
                f"{name} {v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
                for name, v in values.items()
                if isinstance(v, dict) and {"mean", "ci_low", "ci_high"} <= set(v)
            ]
            lines.append(f"- {model}, {split} ({values.get('groups')} users): " + "; ".join(cells))
    return lines


def model_card(
    settings: dict[str, Any],
    train: dict[str, Any],
    dataset: dict[str, Any],
    metrics: dict[str, Any],
) -> str:
    """The export's README: what it is, what it was trained on, how well, how to score."""
    ids = settings["answer_token_ids"]
    lines = [
        "# MLLM-MSR recommender (msr-ray export)",
        "",
        f"A multimodal LLM fine-tuned ({settings['fine_tuning']}, merged here) to answer",
        "Yes/No: will this user",
        "interact with this item next, given the user's preference summary and the item's",
        "image and title (MLLM-MSR, Ye et al., AAAI 2025).",
        "",
        "## Built from",
        "",
        f"- base model: `{settings['base_model']}`",
        f"- prompt version: `{settings['prompt_version']}`, order "
        f"`{settings['recommender']['prompt_order']}`, item description shown: "
        f"{settings['recommender']['candidate_description']}",
        f"- data: source `{dataset.get('source')}`, {dataset.get('users')} users, "
        f"{dataset.get('items_kept')} items",
        f"- training: {train.get('train_rows')} rows, {train.get('epochs')} epochs, "
        f"{train.get('num_workers')} workers, ZeRO {train.get('zero_stage')}; "
        f"train fingerprint `{settings['train_fingerprint']}`",
        "",
        "## Metrics",
        "",
        *(_metric_lines(metrics) or ["- not evaluated"]),
        "",
        "## Scoring",
        "",
        "Build the prompt as msr-ray does (`msr_ray.models.prompts.recommend_prompt` with the",
        "settings in `msr_ray_recommender.json`), render it with this folder's chat template",
        "(generation prompt added), and read the logits at the first answer position:",
        f"score = P(yes) / (P(yes) + P(no)) with token ids yes={ids['yes']}, no={ids['no']}.",
        "",
        "```python",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "processor = AutoProcessor.from_pretrained(FOLDER)",
        "model = AutoModelForImageTextToText.from_pretrained(FOLDER)",
        "```",
        "",
        "With msr-ray installed, set `mllm.name: FOLDER` and `Recommender.load(config, None)`",
        "scores candidate rows the way `evaluate` does.",
        "",
    ]
    return "\n".join(lines)
