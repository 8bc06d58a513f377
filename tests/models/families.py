"""Tiny random checkpoints of the model families users bring, saved as local HF folders.

Each builder writes what a user's download holds (config, weights, processor or
tokenizer, the family's own chat template and special tokens) into ``out`` in seconds.
The tokenizers are SmolLM2's (the embedded model's, no download) with the family's
special tokens added, and every language model is the ``tiny`` built-in's size
(``TINY_TEXT``); the templates follow the families' published ones, so the answer
tokens, the image tokens and the end-of-turn token are the family's own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from msr_ray.models.embedded import TINY_TEXT, embedded_llm_dir, tiny_mllm_dir

# llava-v1.6-mistral's template: "[INST] <image>\n... [/INST]", answers end with "</s>".
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% if message['content'] is string %}{{ ' ' + message['content'] }}{% else %}"
    "{% for part in message['content'] %}{{ ' ' + part['text'] }}{% endfor %}{% endif %}"
    "{{ eos_token }}{% endif %}{% endfor %}"
)

# SmolVLM / Idefics3: "User:<image>...<end_of_utterance>\nAssistant:".
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Qwen2 / Qwen2-VL ChatML, with Qwen2-VL's vision tokens around each image.
QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Llama 3: header tokens around each role, "<|eot_id|>" ends a turn.
LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

IDEFICS3_TILE_TOKENS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
]


def _tokenizer(special: list[str], **named):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_llm_dir(), local_files_only=True)
    tokenizer.add_tokens(special, special_tokens=True)
    for attribute, token in named.items():
        setattr(tokenizer, attribute, token)
    return tokenizer


def _clip(image_size: int, patch_size: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )


def _save(out: Path, model, processor, tokenizer, eos_token: str) -> Path:
    eos = tokenizer.convert_tokens_to_ids(eos_token)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = eos
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_llava_next(out: Path) -> Path:
    """LLaVA-NeXT (llava-v1.6-mistral's layout): anyres tiles of 28-pixel patches over a
    56-pixel base, so a 56x112 image and a 112x56 one get different token counts."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        MistralConfig,
    )

    tokenizer = _tokenizer(["<image>"])
    pinpoints = [[56, 112], [112, 56], [112, 112]]
    config = LlavaNextConfig(
        vision_config=_clip(56, 28),
        text_config=MistralConfig(vocab_size=len(tokenizer), **TINY_TEXT),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 56},
        crop_size={"height": 56, "width": 56},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=28,
        vision_feature_select_strategy="default",
        chat_template=MISTRAL_TEMPLATE,
        num_additional_image_tokens=1,
    )
    return _save(out, model, processor, tokenizer, tokenizer.eos_token)


def build_llava(out: Path) -> Path:
    """LLaVA-1.5: the ``tiny`` built-in's folder (a CLIP tower at 56 pixels, 5 image
    tokens per image whatever its size), copied as a user's own checkpoint."""
    shutil.copytree(tiny_mllm_dir(), out, dirs_exist_ok=True)
    return out


def build_idefics3(out: Path) -> Path:
    """Idefics3 / SmolVLM: images split into up to 2x2 tiles of 56 pixels plus a global
    one, each tile 4 image tokens after pixel shuffle; a 56x112 image and a 112x112 one
    get different tile counts."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tokenizer = _tokenizer(IDEFICS3_TILE_TOKENS)
    vision = Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
    )
    config = Idefics3Config(
        vision_config=vision,
        text_config=LlamaConfig(vocab_size=len(tokenizer), **TINY_TEXT),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 112}, max_image_size={"longest_edge": 56}
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=IDEFICS3_TEMPLATE,
    )
    return _save(out, model, processor, tokenizer, "<end_of_utterance>")


QWEN2_VL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def _build_qwen_vl(out: Path, model_class, config_class, vision: dict) -> Path:
    """A Qwen-VL checkpoint: 14-pixel patches merged 2x2, so a 40x80 image and a 130x50
    one get their own grids (``image_grid_thw``) and 3-D rotary positions (M-RoPE).
    Saved as a download holds it; without torchvision, ``load_model`` builds its
    processor for images only (``msr_ray.models.processors``)."""
    from transformers import Qwen2VLImageProcessorPil

    tokenizer = _tokenizer(QWEN2_VL_TOKENS)
    tokenizer.chat_template = QWEN_TEMPLATE
    rope = {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0}
    text = dict(
        TINY_TEXT,
        vocab_size=len(tokenizer),
        rope_parameters=rope,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    ids = {
        f"{name}_token_id": tokenizer.convert_tokens_to_ids(f"<|{name}|>")
        for name in ("vision_start", "vision_end", "image_pad", "video_pad")
    }
    ids["image_token_id"], ids["video_token_id"] = (
        ids.pop("image_pad_token_id"),
        ids.pop("video_pad_token_id"),
    )
    config = config_class(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    torch.manual_seed(0)
    model = model_class(config)
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    )
    image_processor.save_pretrained(out)
    # A download's video-processor config (its class needs torchvision to be built).
    video = {"video_processor_type": "Qwen2VLVideoProcessor", "patch_size": 14,
             "temporal_patch_size": 2, "merge_size": 2}  # fmt: skip
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    return _save(out, model, tokenizer, tokenizer, "<|im_end|>")


def build_qwen2_vl(out: Path) -> Path:
    """Qwen2-VL (see ``_build_qwen_vl``)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2)
    return _build_qwen_vl(out, Qwen2VLForConditionalGeneration, Qwen2VLConfig, vision)


def build_qwen2_5_vl(out: Path) -> Path:
    """Qwen2.5-VL (see ``_build_qwen_vl``): windowed attention in the vision tower."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=32,
        window_size=56,
        fullatt_block_indexes=[1],
    )
    return _build_qwen_vl(out, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig, vision)


def _build_llm(out: Path, model_class, config_class, template: str, special, eos: str):
    tokenizer = _tokenizer(special)
    tokenizer.chat_template = template
    torch.manual_seed(0)
    model = model_class(config_class(vocab_size=len(tokenizer), **TINY_TEXT))
    return _save(out, model, tokenizer, tokenizer, eos)


def build_llama3(out: Path) -> Path:
    """A Llama with Llama 3's chat template: header tokens, "<|eot_id|>" ends a turn."""
    from transformers import LlamaConfig, LlamaForCausalLM

    special = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    return _build_llm(out, LlamaForCausalLM, LlamaConfig, LLAMA3_TEMPLATE, special, "<|eot_id|>")


def build_qwen2(out: Path) -> Path:
    """A Qwen2 with Qwen's ChatML template (a default system turn, "<|im_end|>")."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _build_llm(out, Qwen2ForCausalLM, Qwen2Config, QWEN_TEMPLATE, [], "<|im_end|>")


def build_mistral(out: Path) -> Path:
    """A Mistral with the "[INST] ... [/INST]" template; answers end with "</s>"."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    eos = AutoTokenizer.from_pretrained(embedded_llm_dir(), local_files_only=True).eos_token
    return _build_llm(out, MistralForCausalLM, MistralConfig, MISTRAL_TEMPLATE, [], eos)


MLLM_FAMILIES = {
    "llava": build_llava,
    "llava-next": build_llava_next,
    "idefics3": build_idefics3,
    "qwen2-vl": build_qwen2_vl,
    "qwen2.5-vl": build_qwen2_5_vl,
}
LLM_FAMILIES = {"llama3": build_llama3, "qwen2": build_qwen2, "mistral": build_mistral}
