"""Frozen bottom layers replayed from their recorded outputs: the same step, less work."""

import pytest
import torch
from peft import get_peft_model

from msr_ray.config import ModelSpec, TrainConfig
from msr_ray.models.frozen_layers import FrozenLayerCache
from msr_ray.models.loading import load_model
from msr_ray.models.lora import lora_config
from msr_ray.models.scoring import SplitPrompt
from msr_ray.training.losses import listwise_loss, sft_loss


def _prompts(loaded) -> list[SplitPrompt]:
    template = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "PREFIX CANDIDATE"}], tokenize=False,
        add_generation_prompt=True,
    )  # fmt: skip
    head, tail = template.split("CANDIDATE")
    prefixes = [head.replace("PREFIX", "The user likes red clips."),
                head.replace("PREFIX", "The user likes long blue films and rainy days.")]  # fmt: skip
    titles = ["Red clip", "A much longer blue title", "Green", "Red film"]
    return [SplitPrompt(prefix, f"{title}{tail}") for prefix in prefixes for title in titles]


def _step(model, loaded, loss_fn, frozen):
    model.zero_grad()
    loss, _ = loss_fn(model, loaded, frozen)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


@pytest.mark.parametrize("objective", ["pointwise", "listwise"])
@pytest.mark.parametrize("prefix_gradient", [False, True])
def test_a_replayed_step_equals_the_uncached_step(objective, prefix_gradient):
    torch.manual_seed(0)
    loaded = load_model(ModelSpec(name="tiny", dtype="float32"), "mllm")
    cfg = TrainConfig(trainable="top-layers", top_layers=1, train_projector=False)
    model = get_peft_model(loaded.model, lora_config(cfg, loaded.model))
    loaded.model = model
    prompts, answers = _prompts(loaded), [True, False, False, False] * 2
    groups = ["a"] * 4 + ["b"] * 4

    def loss_fn(model, loaded, frozen):
        if objective == "listwise":
            return listwise_loss(
                model, loaded, prompts, answers, groups, 512, prefix_gradient, frozen
            )
        return sft_loss(model, loaded, prompts, answers, 512, prefix_gradient, frozen)

    plain_loss, plain_grads = _step(model, loaded, loss_fn, None)
    cache = FrozenLayerCache.for_model(model, 1)
    bottom_calls = []
    hook = cache.layers[0].mlp.register_forward_hook(lambda *a: bottom_calls.append(1))
    recorded_loss, _ = _step(model, loaded, loss_fn, cache)
    assert (cache.recorded, cache.replayed, len(bottom_calls)) == (2, 0, 2)
    replayed_loss, replayed_grads = _step(model, loaded, loss_fn, cache)
    assert (cache.recorded, cache.replayed, len(bottom_calls)) == (2, 2, 2)  # not run again
    hook.remove()
    assert recorded_loss == pytest.approx(plain_loss, abs=1e-6)
    assert replayed_loss == pytest.approx(plain_loss, abs=1e-5)
    assert replayed_grads.keys() == plain_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(replayed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # The layers are themselves again after a replay.
    assert "forward" not in vars(cache.layers[0])


def test_a_batch_holding_an_unrecorded_row_records_again():
    loaded = load_model(ModelSpec(name="tiny", dtype="float32"), "mllm")
    prompts = _prompts(loaded)
    cache = FrozenLayerCache.for_model(loaded.model, 1)
    with torch.no_grad():
        sft_loss(loaded.model, loaded, prompts[:4], [True] * 4, 512, frozen=cache)
        sft_loss(loaded.model, loaded, prompts[:5], [True] * 5, 512, frozen=cache)
    assert (cache.recorded, cache.replayed) == (4, 0)
    with torch.no_grad():
        sft_loss(loaded.model, loaded, prompts[2:5], [True] * 3, 512, frozen=cache)
    assert (cache.recorded, cache.replayed) == (4, 2)
