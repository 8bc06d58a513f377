import pytest
import torch
from PIL import Image

from msr_ray.models import prompts
from msr_ray.models.generation import ChatRequest
from msr_ray.models.scoring import IGNORE_INDEX, answer_ids, answer_tokens, score_yes_no, sft_batch

RED, BLUE = Image.new("RGB", (40, 40), (220, 20, 20)), Image.new("RGB", (40, 40), (20, 20, 220))


def _request(image, title="Clip"):
    return ChatRequest(prompts.recommend_prompt("video", "The user likes clips.", title), [image])


def test_answer_tokens_come_from_the_chat_template(tiny_mllm, embedded_llm):
    for loaded in (tiny_mllm, embedded_llm):
        ids = answer_ids(loaded)
        yes_text = loaded.tokenizer.decode(answer_tokens(loaded, "Yes"))
        assert yes_text.startswith("Yes") and ids.yes == answer_tokens(loaded, "Yes")[0]
        assert ids.no == answer_tokens(loaded, "No")[0] and ids.yes != ids.no


def test_sft_labels_cover_only_the_answer_and_match_scorer(tiny_mllm):
    batch = sft_batch(
        tiny_mllm, [_request(RED), _request(BLUE, "Longer title here")], [True, False], 512
    )
    ids = answer_ids(tiny_mllm)
    for labels, expected in zip(batch["labels"], [ids.yes, ids.no], strict=True):
        taught = labels[labels != IGNORE_INDEX].tolist()
        assert taught == answer_tokens(tiny_mllm, "Yes" if expected == ids.yes else "No")
        assert taught[0] == expected
    with pytest.raises(ValueError, match="exceeds"):
        sft_batch(tiny_mllm, [_request(RED)], [True], 10)


def test_scores_in_unit_interval_and_training_separates_patterns(tiny_mllm):
    model = tiny_mllm.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    requests = [_request(RED), _request(BLUE)]
    before = score_yes_no(tiny_mllm, requests)
    assert all(0.0 <= p <= 1.0 for p in before)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    batch = sft_batch(tiny_mllm, requests, [True, False], 512)
    for _ in range(80):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    red, blue = score_yes_no(tiny_mllm, requests)
    model.load_state_dict(state)
    assert red > 0.9 and blue < 0.1, (before, red, blue)
