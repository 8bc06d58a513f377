import pytest
import torch
from PIL import Image

from msr_ray.config import ModelSpec
from msr_ray.models import prompts
from msr_ray.models.embedded import tiny_llm_dir
from msr_ray.models.generation import ChatRequest, generate
from msr_ray.models.loading import load_model, resolve_model_dir


def _requests(n: int) -> list[ChatRequest]:
    history = [prompts.HistoryItem(f"Title {i}", "word " * (i * 7 + 1)) for i in range(6)]
    return [
        ChatRequest(prompts.user_block_prompt("video", f"u{k}", history[: k % 6 + 1], None))
        for k in range(n)
    ]


def test_tiny_models_are_small_and_reload_identically(tmp_path, tiny_llm, tiny_mllm):
    assert tiny_llm.model.num_parameters() < 5_000_000
    assert tiny_mllm.model.num_parameters() < 5_000_000
    tiny_llm.model.save_pretrained(tmp_path)
    tiny_llm.tokenizer.save_pretrained(tmp_path)
    again = load_model(ModelSpec(name=str(tmp_path), dtype="float32"), "llm")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(tiny_llm.model(ids).logits, again.model(ids).logits)


@pytest.mark.parametrize("fixture", ["tiny_llm", "embedded_llm"])
def test_batched_generation_equals_one_by_one(request, fixture):
    loaded = request.getfixturevalue(fixture)
    spec = ModelSpec(name=loaded.name, max_new_tokens=12)
    batch = _requests(5)
    together = generate(loaded, batch, spec)
    alone = [generate(loaded, [r], spec)[0] for r in batch]
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.prompt_tokens for g in together] == [g.prompt_tokens for g in alone]
    assert len({g.prompt_tokens for g in together}) > 1  # mixed lengths really padded


def test_sampling_is_seeded(tiny_llm):
    spec = ModelSpec(name="tiny", max_new_tokens=10, do_sample=True, temperature=1.5, seed=3)
    first = generate(tiny_llm, _requests(2), spec)
    assert first == generate(tiny_llm, _requests(2), spec)


def test_multimodal_batch_mixes_image_and_text_only_requests(tiny_mllm):
    spec = ModelSpec(name="tiny", max_new_tokens=5)
    image = Image.new("RGB", (30, 40), "red")
    mixed = [
        ChatRequest(prompts.item_fused_prompt("video", "A", "x"), [image]),
        ChatRequest(prompts.item_text_prompt("video", "B", "y")),
    ]
    assert [g.text for g in generate(tiny_mllm, mixed, spec)] == [
        generate(tiny_mllm, [r], spec)[0].text for r in mixed
    ]


def test_text_model_refuses_images(tiny_llm):
    request = ChatRequest(prompts.item_image_prompt("video"), [Image.new("RGB", (8, 8))])
    with pytest.raises(ValueError, match="text-only"):
        generate(tiny_llm, [request], ModelSpec(name="tiny"))


def test_hub_ids_are_never_downloaded():
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_model_dir(ModelSpec(name="HuggingFaceTB/SmolLM2-135M-Instruct"), "llm")
    assert resolve_model_dir(ModelSpec(name="tiny"), "llm") == tiny_llm_dir()
