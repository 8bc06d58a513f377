import re

from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from msr_ray.config import ModelSpec
from msr_ray.models import prompts
from msr_ray.models.embedded import embedded_mllm_dir
from msr_ray.models.generation import ChatRequest, generate
from msr_ray.models.loading import load_model

HISTORY = [
    prompts.HistoryItem("Toy Story (1995)", "An animated comedy about toys that come alive."),
    prompts.HistoryItem(
        "Finding Nemo (2003)", "An animated adventure of a fish looking for his son."
    ),
    prompts.HistoryItem("Shrek (2001)", "An animated fairy-tale comedy with an ogre."),
]


def _english(text: str) -> bool:
    words = re.findall(r"[A-Za-z]+", text)
    return len(words) >= 5 and sum(len(w) for w in words) / max(len(text), 1) > 0.6


def test_embedded_llm_answers_user_summary_as_instructed(embedded_llm):
    spec = ModelSpec(name="embedded", max_new_tokens=40)
    request = ChatRequest(prompts.user_block_prompt("movie", "7", HISTORY, None))
    [answer] = generate(embedded_llm, [request], spec)
    assert answer.text.startswith(prompts.PREFERENCE_PREFIX), answer.text
    assert _english(answer.text)
    assert answer.prompt_tokens > 100 and 0 < answer.generated_tokens <= 40


def test_embedded_mllm_loads_with_auto_classes_and_describes_an_image():
    folder = embedded_mllm_dir()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert 130e6 < model.num_parameters() < 140e6
    loaded = load_model(ModelSpec(name="embedded", max_new_tokens=30), "mllm")
    image = Image.new("RGB", (80, 120), (30, 60, 200))
    request = ChatRequest(
        prompts.item_fused_prompt("movie", "Blue Planet", "A documentary."), [image]
    )
    [answer] = generate(loaded, [request], ModelSpec(name="embedded", max_new_tokens=30))
    assert _english(answer.text), answer.text
    text = processor.apply_chat_template(
        request.messages, tokenize=False, add_generation_prompt=True
    )
    ids = processor(text=[text], images=[image], return_tensors="pt")["input_ids"]
    assert int((ids == model.config.image_token_id).sum()) == 17
