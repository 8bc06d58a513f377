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
