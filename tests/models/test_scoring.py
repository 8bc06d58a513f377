import math

import pytest
import torch
from PIL import Image

from msr_ray.models import prompts
from msr_ray.models.scoring import (
    answer_ids,
    answer_tokens,
    encode_prompts,
    score_full,
    score_shared,
    split_prompt,
)
from msr_ray.training.losses import listwise_loss, sft_loss

RED, BLUE = Image.new("RGB", (40, 40), (220, 20, 20)), Image.new("RGB", (40, 40), (20, 20, 220))


def _prompt(loaded, image, title="Clip", preference="The user likes clips.", order="shared-prefix"):
    messages = prompts.recommend_prompt("video", preference, title, order=order)
    if image is None:
        return split_prompt(loaded, prompts.strip_images(messages), [])
    return split_prompt(loaded, messages, [image])


def test_answer_tokens_come_from_the_chat_template(tiny_mllm, embedded_llm):
    for loaded in (tiny_mllm, embedded_llm):
        ids = answer_ids(loaded)
        yes_text = loaded.tokenizer.decode(answer_tokens(loaded, "Yes"))
        assert yes_text.startswith("Yes") and ids.yes == answer_tokens(loaded, "Yes")[0]
        assert ids.no == answer_tokens(loaded, "No")[0] and ids.yes != ids.no


def test_prompt_splits_after_the_shared_part(tiny_mllm):
    first = _prompt(tiny_mllm, RED, "First")
    second = _prompt(tiny_mllm, BLUE, "Second")
    assert first.prefix == second.prefix and "The user likes clips." in first.prefix
    assert "<image>" not in first.prefix and first.suffix.startswith("<image>")
    assert "'First'" in first.suffix and first.suffix.endswith("assistant\n")
    paper = _prompt(tiny_mllm, RED, "First", order="paper")
    assert "The user likes clips." in paper.suffix and "clips" not in paper.prefix
    # The marker never reaches the model, even when a title carries it.
    hostile = _prompt(tiny_mllm, RED, f"x{prompts.SPLIT}y")
    assert prompts.SPLIT not in hostile.prefix + hostile.suffix
    encoded = encode_prompts(tiny_mllm, [first, second, paper])
    assert encoded.owner == [0, 0, 1] and len(encoded.prefixes) == 2


@pytest.mark.parametrize("order", ["shared-prefix", "paper"])
def test_shared_prefix_scores_equal_full_prompt_scores(tiny_mllm, order):
    batch = [
        _prompt(tiny_mllm, image, title, preference, order)
        for preference in ("Likes red.", "A much longer preference about blue clips and more.")
        for image, title in ((RED, "A"), (BLUE, "A longer title"), (None, "No image here"))
    ]
    full, shared = score_full(tiny_mllm, batch), score_shared(tiny_mllm, batch)
    assert shared == pytest.approx(full, abs=1e-5)
    assert len(set(round(s, 6) for s in shared)) > 3  # the candidates really differ


def test_sft_loss_teaches_the_answer_the_scorer_reads(tiny_mllm):
    model = tiny_mllm.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batch = [_prompt(tiny_mllm, RED), _prompt(tiny_mllm, BLUE, "Longer title here")]
    before = score_shared(tiny_mllm, batch)
    assert all(0.0 <= p <= 1.0 for p in before)
    with pytest.raises(ValueError, match="exceeds"):
        sft_loss(model, tiny_mllm, batch, [True, False], 10)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(60):
        loss, tokens = sft_loss(model, tiny_mllm, batch, [True, False], 512)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    red, blue = score_shared(tiny_mllm, batch)
    model.load_state_dict(state)
    assert losses[-1] < losses[0] / 4 and tokens.prefix > 10 and tokens.rows > 10
    assert red > 0.9 and blue < 0.1, (before, red, blue)


def test_loss_without_prefix_gradient_has_the_same_value_and_a_cheaper_gradient(tiny_mllm):
    batch = [_prompt(tiny_mllm, RED), _prompt(tiny_mllm, BLUE, "Other")]
    model = tiny_mllm.model
    weight = model.model.language_model.layers[0].self_attn.q_proj.weight
    grads, values = [], []
    for prefix_gradient in (True, False):
        loss, _ = sft_loss(model, tiny_mllm, batch, [True, False], 512, prefix_gradient)
        model.zero_grad()
        loss.backward()
        values.append(loss.item())
        grads.append(weight.grad.clone())
    model.zero_grad()
    assert values[1] == pytest.approx(values[0], abs=1e-6)
    # The queries of the prefix tokens get no gradient any more; the candidates' still do.
    assert grads[1].abs().sum() > 0 and not torch.allclose(grads[0], grads[1])


def _margin(p: float) -> float:
    return math.log(p / (1 - p))


def test_listwise_loss_is_the_softmax_of_each_groups_margins(tiny_mllm):
    """Its value is computed from the very scores the scorer gives (score = sigmoid of the
    Yes-vs-No margin); a group without a positive or a negative is left out."""
    batch = [
        _prompt(tiny_mllm, RED, "A", "Likes red."),
        _prompt(tiny_mllm, BLUE, "B", "Likes red."),
        _prompt(tiny_mllm, BLUE, "C", "Likes red."),
        _prompt(tiny_mllm, RED, "D", "Likes blue."),
        _prompt(tiny_mllm, BLUE, "E", "Likes blue."),
        _prompt(tiny_mllm, RED, "F", "Alone."),
    ]
    answers = [True, False, False, False, True, True]
    groups = ["g1", "g1", "g1", "g2", "g2", "g3"]
    with torch.no_grad():
        loss, _ = listwise_loss(tiny_mllm.model, tiny_mllm, batch, answers, groups, 512)
    m = [_margin(p) for p in score_shared(tiny_mllm, batch)]
    g1 = math.log(sum(math.exp(x) for x in m[:3])) - m[0]
    g2 = math.log(sum(math.exp(x) for x in m[3:5])) - m[4]
    assert loss.item() == pytest.approx((g1 + g2) / 2, abs=1e-4)


def test_listwise_loss_teaches_the_ranking(tiny_mllm):
    model = tiny_mllm.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batch = [
        _prompt(tiny_mllm, RED, "Clip"),
        _prompt(tiny_mllm, BLUE, "Clip"),
        _prompt(tiny_mllm, BLUE, "Other clip"),
        _prompt(tiny_mllm, RED, "Other clip"),
    ]
    answers, groups = [True, False, False, True], ["first", "first", "second", "second"]
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(40):
        loss, _ = listwise_loss(model, tiny_mllm, batch, answers, groups, 512)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    red, blue, other_blue, other_red = score_shared(tiny_mllm, batch)
    model.load_state_dict(state)
    assert losses[-1] < losses[0] / 4
    assert red > blue and other_red > other_blue


def test_a_bf16_model_scores_from_fp32_answer_logits():
    """A bf16 head rounds large logits to coarse steps, so candidates tie; the scorer
    runs the head in fp32 on the final hidden states instead."""
    from msr_ray.config import ModelSpec
    from msr_ray.models.loading import load_model

    loaded = load_model(ModelSpec(name="tiny", dtype="bfloat16"), "mllm")
    head, ids = loaded.model.get_output_embeddings(), answer_ids(loaded)
    batch = [_prompt(loaded, image, f"Title {n}") for n in range(8) for image in (RED, BLUE)]
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    score_shared(loaded, batch)
    # Move both answer logits up by about 25 (the margin stays): bf16 steps there are 0.125.
    mean = captured[-1][:, -1].float().mean(dim=0)
    with torch.no_grad():
        head.weight[[ids.yes, ids.no]] += (25 * mean / mean.square().sum()).bfloat16()
    scores = score_shared(loaded, batch)
    hook.remove()
    hidden = captured[-1][:, -1].float()  # the suffix pass: the answer position
    weight = head.weight.float()
    assert (hidden @ weight[ids.yes]).min() > 16
    margins = hidden @ (weight[ids.yes] - weight[ids.no])
    assert scores == pytest.approx(torch.sigmoid(margins).tolist(), abs=1e-5)
    logits = (hidden.bfloat16() @ head.weight.T).float()  # what a bf16 head returns
    rounded = torch.sigmoid(logits[:, ids.yes] - logits[:, ids.no])
    assert (rounded - torch.tensor(scores)).abs().max() > 1e-3
    assert head.weight.dtype == torch.bfloat16  # the model itself is left as it was
