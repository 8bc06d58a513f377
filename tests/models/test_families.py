"""The model families users bring, each a tiny random checkpoint saved as a local folder:
their chat templates, answer tokens, generation, prefix-shared scoring and a LoRA step."""

import pytest
import torch
from PIL import Image

from msr_ray.config import ModelSpec, TrainConfig
from msr_ray.models import prompts
from msr_ray.models.generation import ChatRequest, _eos_ids, generate, render
from msr_ray.models.loading import load_model
from msr_ray.models.lora import lora_config
from msr_ray.models.scoring import (
    answer_ids,
    answer_tokens,
    encode_prompts,
    score_full,
    score_shared,
    split_prompt,
)
from msr_ray.training.losses import sft_loss
from tests.models.families import LLM_FAMILIES, MLLM_FAMILIES

# Sizes whose anyres grids (LLaVA-NeXT) and tile counts (Idefics3) differ.
IMAGES = [
    Image.new("RGB", (40, 80), (200, 30, 30)),
    Image.new("RGB", (130, 50), (30, 30, 200)),
    Image.new("RGB", (200, 200), (30, 200, 30)),
]
END_OF_TURN = {
    "llava": "<|im_end|>",
    "llava-next": "<|im_end|>",  # the template's eos_token, SmolLM2's
    "idefics3": "<end_of_utterance>",
    "qwen2-vl": "<|im_end|>",
    "qwen2.5-vl": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "qwen2": "<|im_end|>",
    "mistral": "<|im_end|>",
}


@pytest.fixture(scope="module", params=sorted(MLLM_FAMILIES))
def mllm(request, tmp_path_factory):
    folder = MLLM_FAMILIES[request.param](tmp_path_factory.mktemp(request.param))
    return request.param, load_model(ModelSpec(name=str(folder), dtype="float32"), "mllm")


@pytest.fixture(scope="module", params=sorted(LLM_FAMILIES))
def llm(request, tmp_path_factory):
    folder = LLM_FAMILIES[request.param](tmp_path_factory.mktemp(request.param))
    spec = ModelSpec(name=str(folder), dtype="float32", max_new_tokens=6)
    return request.param, load_model(spec, "llm")


def _batch(loaded):
    """Two users' prompts over candidates with images of three sizes and one without."""
    batch = []
    for preference in ("Likes red clips.", "A much longer preference about blue clips."):
        for image, title in zip(IMAGES, ("A", "A longer title", "C"), strict=True):
            messages = prompts.recommend_prompt("video", preference, title)
            batch.append(split_prompt(loaded, messages, [image]))
        messages = prompts.strip_images(prompts.recommend_prompt("video", preference, "D"))
        batch.append(split_prompt(loaded, messages, []))
    return batch


def _own_forward(loaded, prompt) -> float:
    """P(yes) of one prompt run through the model's own forward, as its processor
    encodes the whole text: no padding, no cache, the model's own position ids."""
    inputs = loaded.processor(
        text=[prompt.prefix + prompt.suffix],
        images=list(prompt.images) or None,
        add_special_tokens=False,
        return_tensors="pt",
    )
    inputs = {k: v.to(loaded.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.inference_mode():
        logits = loaded.model(**inputs).logits[0, -1].float()
    ids = answer_ids(loaded)
    return torch.softmax(torch.stack([logits[ids.no], logits[ids.yes]]), 0)[1].item()


def _turn_tokens(loaded, answer: str) -> list[int]:
    """What the template appends to the generation prompt for an assistant ``answer``."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "Question?"}]}]
    reply = [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    prompt = render(loaded, messages)
    full = render(loaded, messages + reply, add_generation_prompt=False)
    assert full.startswith(prompt)
    return loaded.tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]


def test_llava_next_and_idefics3_give_images_of_different_sizes_their_own_token_counts(mllm):
    family, loaded = mllm
    encoded = encode_prompts(loaded, _batch(loaded)[:3])
    image_id = loaded.processor.image_token_id
    counts = [suffix.count(image_id) for suffix in encoded.suffixes]
    assert (len(set(counts)) > 1) == (family != "llava"), counts  # LLaVA-1.5: fixed
    assert set(encoded.vision) >= {"pixel_values"}


def test_shared_prefix_scores_equal_the_models_own_forward(mllm):
    family, loaded = mllm
    batch = _batch(loaded)
    own = [_own_forward(loaded, p) for p in batch]
    full, shared = score_full(loaded, batch), score_shared(loaded, batch)
    assert full == pytest.approx(own, abs=1e-4), family
    assert shared == pytest.approx(own, abs=1e-4), family
    assert len({round(s, 4) for s in shared}) > 4  # the candidates really differ


def _check_answer_tokens(family, loaded):
    for answer in ("Yes", "No"):
        assert answer_tokens(loaded, answer) == _turn_tokens(loaded, answer), family
    end = loaded.tokenizer.convert_tokens_to_ids(END_OF_TURN[family])
    assert end in answer_tokens(loaded, "Yes"), family  # SFT labels end the turn
    assert end in _eos_ids(loaded), family  # and generation stops there
    assert loaded.tokenizer.decode(answer_tokens(loaded, "Yes")[:1]).strip() == "Yes"


def test_answer_tokens_are_what_each_mllm_familys_template_emits(mllm):
    _check_answer_tokens(*mllm)


def test_answer_tokens_are_what_each_llm_familys_template_emits(llm):
    _check_answer_tokens(*llm)


def test_item_summaries_generate_batched_as_one_by_one(mllm):
    family, loaded = mllm
    spec = ModelSpec(name=loaded.name, max_new_tokens=5)
    requests = [
        ChatRequest(prompts.item_fused_prompt("video", f"Title {n}", "A text."), [image])
        for n, image in enumerate(IMAGES)
    ]
    requests.append(ChatRequest(prompts.item_text_prompt("video", "Text only", "A text.")))
    together = generate(loaded, requests, spec)
    alone = [generate(loaded, [r], spec)[0] for r in requests]
    assert [g.text for g in together] == [g.text for g in alone], family
    assert all(0 < g.generated_tokens <= 5 for g in together)


def test_user_summaries_generate_with_each_llm_familys_template(llm):
    family, loaded = llm
    spec = ModelSpec(name=loaded.name, max_new_tokens=6)
    history = [prompts.HistoryItem(f"Title {n}", f"Item {n} is a clip.") for n in range(3)]
    requests = [
        ChatRequest(prompts.user_block_prompt("video", "u1", history[:k], previous))
        for k, previous in ((1, None), (3, "The user likes clips."))
    ]
    together = generate(loaded, requests, spec)
    assert [g.text for g in together] == [generate(loaded, [r], spec)[0].text for r in requests]
    assert all(g.generated_tokens <= 6 for g in together), family


def test_lora_on_each_family_trains_its_language_model_and_projector(mllm):
    from peft import get_peft_model

    family, loaded = mllm
    model = get_peft_model(loaded.model, lora_config(TrainConfig(), loaded.model))
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in name for name in trained)
    assert not any("vision" in name and "lora" in name for name in trained), family
    assert any(n in name for n in ("projector", "connector", "merger") for name in trained)
    batch, answers = _batch(loaded)[:4], [True, False, False, True]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for _ in range(15):
        loss, _ = sft_loss(model, loaded, batch, answers, 4096)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (family, losses)
    model.unload()  # the module-scoped model is shared with the other tests


def test_a_qwen3_vl_checkpoint_is_refused_with_the_reason_before_any_stage_runs(tmp_path):
    from transformers import Qwen3VLConfig

    from msr_ray.models.families import UnsupportedModel
    from msr_ray.run.pipeline import run_stage
    from tests.stages.conftest import tiny_config

    folder = tmp_path / "qwen3-vl"
    Qwen3VLConfig().save_pretrained(folder)  # what a download's config.json says
    with pytest.raises(UnsupportedModel, match="qwen3_vl checkpoint: untested"):
        load_model(ModelSpec(name=str(folder)), "mllm")
    with pytest.raises(UnsupportedModel, match="deepstack"):
        run_stage("prepare", tiny_config(tmp_path / "run", f"mllm.name={folder}"))
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_a_qwen_vl_processor_without_torchvision_processes_images_as_the_full_one(family, tmp_path):
    from transformers import Qwen2VLImageProcessorPil

    from msr_ray.models.processors import IMAGES_ONLY

    folder = MLLM_FAMILIES[family](tmp_path)
    loaded = load_model(ModelSpec(name=str(folder), dtype="float32"), "mllm")
    processor = loaded.processor
    assert type(processor).__name__ in IMAGES_ONLY.values()  # saved under the real name
    assert "video_processor" not in processor.get_attributes()
    image = IMAGES[1]
    alone = Qwen2VLImageProcessorPil.from_pretrained(loaded.name)(
        images=[image], return_tensors="pt"
    )
    text = render(loaded, prompts.item_fused_prompt("video", "T", "x"))
    batch = processor(text=[text], images=[image], return_tensors="pt")
    assert torch.equal(batch["pixel_values"], alone["pixel_values"])
    assert torch.equal(batch["image_grid_thw"], alone["image_grid_thw"])
    grid = alone["image_grid_thw"][0].prod().item() // 4  # merged 2x2
    assert (batch["input_ids"] == processor.image_token_id).sum().item() == grid
