import hashlib
import json

import pytest

from msr_ray.models import prompts


def _text(messages):
    content = messages[0]["content"]
    return (
        content if isinstance(content, str) else " ".join(p.get("text", "<img>") for p in content)
    )


def test_recurrent_prompts_carry_previous_summary_only_after_first_block():
    block = [prompts.HistoryItem("A", "desc a"), prompts.HistoryItem("B", "desc b")]
    first = _text(prompts.user_block_prompt("movie", "9", block, None))
    later = _text(prompts.user_block_prompt("movie", "9", block, "The user likes X.", 4))
    assert "User 9" in first and "1. Title - 'A', Movie cover description - desc a" in first
    assert "previous preference" not in first and "The user likes X." in later
    assert "4. Title - 'A'" in later and "known aspects of user's preference" in later
    assert first.endswith(f"'{prompts.PREFERENCE_PREFIX}'.")


def test_domain_noun_and_images():
    fused = prompts.item_fused_prompt("product", "Rattle", "For babies.")
    assert fused[0]["content"][0] == prompts.IMAGE and "product" in _text(fused)
    assert prompts.item_text_prompt("product", "Rattle", "")[0]["content"][0]["type"] == "text"
    recommend = prompts.recommend_prompt("movie", "Likes comedies.", "Heat")
    assert "title is 'Heat'" in _text(recommend) and "Likes comedies." in _text(recommend)
    assert all(p["type"] == "text" for p in prompts.strip_images(recommend)[0]["content"])
    assert prompts.PROMPT_VERSION


def _rendered(family: str) -> str:
    """Every template of a family rendered with fixed arguments (what its version names)."""
    block = [prompts.HistoryItem("A", "desc a", "text a"), prompts.HistoryItem("B", "desc b")]
    if family == "summarize":
        messages = [
            prompts.item_image_prompt("movie"),
            prompts.item_fused_prompt("movie", "Heat", "A crime film."),
            prompts.item_text_prompt("movie", "Heat", "A crime film."),
            *(
                prompts.user_block_prompt("movie", "9", block, previous, 4, style, words)
                for previous in (None, "The user likes X.")
                for style in ("paper", "recent")
                for words in (None, 1)
            ),
            prompts.user_direct_prompt("movie", "9", block),
            prompts.user_direct_prompt("movie", "9", block, "recent"),
        ]
    else:
        messages = [
            prompts.recommend_prompt("movie", "Likes X.", "Heat", description, order, recent)
            for order in ("shared-prefix", "paper")
            for description in (None, "A crime film.")
            for recent in ((), (prompts.recent_item_line("Up", "A film about a house.", 2),))
        ]
    return json.dumps(messages, sort_keys=True)


@pytest.mark.parametrize(
    "family, version",
    [("summarize", "PROMPT_VERSION"), ("recommend", "RECOMMEND_PROMPT_VERSION")],
)
def test_a_reworded_template_gets_a_new_version(family, version):
    """Versions enter the fingerprints (a new one rebuilds what the template shapes), so a
    template's text may change only with its version: bump the version, then record the
    new hash in ``prompts.TEMPLATE_SHA256``."""
    current = getattr(prompts, version)
    digest = hashlib.sha256(_rendered(family).encode()).hexdigest()
    assert prompts.TEMPLATE_SHA256.get(current) == digest, (
        f"the {family} templates render differently from what {version}={current!r} "
        f"recorded: bump {version} and record {digest!r} for it in TEMPLATE_SHA256"
    )
