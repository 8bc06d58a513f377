"""The fine-tuning recipes: what each trains, and that its adapter reloads merged."""

import pytest
import torch
from peft import PeftModel, get_peft_model

from msr_ray.config import ModelSpec, TrainConfig
from msr_ray.models.loading import load_model
from msr_ray.models.lora import decoder_layer_names, lora_config
from msr_ray.models.scoring import SplitPrompt, score_shared
from msr_ray.training.losses import sft_loss


def _prompts(loaded) -> list[SplitPrompt]:
    tokenizer = loaded.tokenizer
    prefix = tokenizer.apply_chat_template(
        [{"role": "user", "content": "The user likes red clips. Next: X"}],
        tokenize=False,
        add_generation_prompt=True,
    ).split("X")[0]
    return [SplitPrompt(prefix, f"{title}<|im_end|>\n<|im_start|>assistant\n") for title in
            ("Red clip", "Blue clip", "Green clip", "Red film")]  # fmt: skip


@pytest.mark.parametrize(
    ("trainable", "expected_layers"),
    [("top-layers", {1}), ("language-model", {0, 1}), ("lora", {0, 1})],
)
def test_each_recipe_trains_what_it_says_and_reloads_merged(tmp_path, trainable, expected_layers):
    loaded = load_model(ModelSpec(name="tiny", dtype="float32"), "mllm")
    cfg = TrainConfig(trainable=trainable, top_layers=1, train_projector=False)
    layers = decoder_layer_names(loaded.model)
    assert len(layers) == 2
    model = get_peft_model(loaded.model, lora_config(cfg, loaded.model))
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    touched = {n for n, layer in enumerate(layers) if any(f"{layer}." in t for t in trained)}
    assert touched == expected_layers
    assert not any("vision" in name or "embed" in name for name in trained)
    assert any("norm" in name and "layers" not in name for name in trained) == (trainable != "lora")
    loaded.model = model
    batch, answers = _prompts(loaded), [True, False, False, True]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        loss, _ = sft_loss(model, loaded, batch, answers, 512)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    model.eval()
    trained_scores = score_shared(loaded, batch)
    model.save_pretrained(tmp_path / "adapter")

    fresh = load_model(ModelSpec(name="tiny", dtype="float32"), "mllm")
    base_scores = score_shared(fresh, batch)
    fresh.model = PeftModel.from_pretrained(fresh.model, tmp_path / "adapter").merge_and_unload()
    assert score_shared(fresh, batch) == pytest.approx(trained_scores, abs=1e-5)
    assert score_shared(fresh, batch) != pytest.approx(base_scores, abs=1e-3)


def test_top_layers_beyond_the_model_is_refused():
    loaded = load_model(ModelSpec(name="tiny", dtype="float32"), "mllm")
    with pytest.raises(ValueError, match="top_layers: 3 exceeds the model's 2"):
        lora_config(TrainConfig(trainable="top-layers", top_layers=3), loaded.model)
