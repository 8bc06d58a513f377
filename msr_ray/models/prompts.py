"""Prompt templates of MLLM-MSR (see shared/paper/MLLM-MSR.md), as chat messages.

Every stage records ``PROMPT_VERSION`` with its outputs; change it whenever a
template's wording changes. ``domain`` is the noun for items (video, movie, product).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PROMPT_VERSION = "mllm-msr-v1"
PREFERENCE_PREFIX = "The user appears to have a preference for"
Messages = list[dict]


@dataclass(frozen=True)
class HistoryItem:
    """One line of a user's history: the item's title and its item summary."""

    title: str
    description: str


def _user(parts: list[dict]) -> Messages:
    return [{"role": "user", "content": parts}]


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


IMAGE = {"type": "image"}


def item_image_prompt(domain: str) -> Messages:
    """The paper's image-description prompt (image only)."""
    return _user(
        [
            IMAGE,
            _text(
                f"Please describe this image, which is a cover of a {domain}. Provide a "
                "detailed description in one continuous paragraph, including content "
                "information and visual features such as colors, objects, text, and any "
                "notable elements present in the image."
            ),
        ]
    )


def item_fused_prompt(domain: str, title: str, text: str) -> Messages:
    """Image and title/text fused into one item description."""
    about = f" Its description: {text}" if text else ""
    return _user(
        [
            IMAGE,
            _text(
                f"This image is the cover of a {domain} titled '{title}'.{about} Describe "
                f"the {domain} in one continuous paragraph, combining what the title and "
                "description say with the visual features of the cover such as colors, "
                "objects, text and any notable elements."
            ),
        ]
    )


def item_text_prompt(domain: str, title: str, text: str) -> Messages:
    """Text only (no image): used by the ablation and as the fallback for bad images."""
    about = f" Its description: {text}" if text else ""
    return _user(
        [
            _text(
                f"A {domain} is titled '{title}'.{about} Describe this {domain} in one "
                "continuous paragraph: its content, topic and style."
            )
        ]
    )


def _history_lines(domain: str, items: Sequence[HistoryItem], start: int) -> str:
    noun = domain.capitalize()
    return "\n".join(
        f"{start + n}. Title - '{it.title}', {noun} cover description - {it.description}"
        for n, it in enumerate(items)
    )


def _summarize_instruction(domain: str, with_previous: bool) -> str:
    basis = f"Based on the content and visual style of {domain}s listed above"
    if with_previous:
        basis += " as well as the known aspects of user's preference"
    return (
        f"{basis}, please summarize the user's preferences in one continuous paragraph. "
        f"Only provide information about the user's preferences; do not repeat details "
        f"about the previously watched {domain}s. Do not repeat the question in your "
        f"answer, and keep clear and concise. The answer should start with "
        f"'{PREFERENCE_PREFIX}'."
    )


def user_block_prompt(
    domain: str,
    user_id: str,
    block: Sequence[HistoryItem],
    previous_summary: str | None,
    start_index: int = 1,
) -> Messages:
    """One recurrent step: a block of items, with the previous summary after the first block."""
    text = (
        f"Below is a chronological list of {domain}s previously watched by User {user_id}:\n"
        f"{_history_lines(domain, block, start_index)}\n"
    )
    if previous_summary:
        text += f"We also know this user's previous preference. {previous_summary}\n"
    text += _summarize_instruction(domain, with_previous=bool(previous_summary))
    return [{"role": "user", "content": text}]


def user_direct_prompt(domain: str, user_id: str, history: Sequence[HistoryItem]) -> Messages:
    """The non-recurrent ablation: the whole history in one prompt."""
    return user_block_prompt(domain, user_id, history, None)


def recommend_prompt(domain: str, preference: str, title: str) -> Messages:
    """The recommender's question about one candidate (its image, title, the user's summary)."""
    return _user(
        [
            IMAGE,
            _text(
                f"As a vision-llm, you will be given the cover image and the title of a "
                f"{domain} and the summarized preference of a user, and your task is to "
                f"predict whether the user would interact with the {domain}. Please only "
                f"response 'yes' or 'no' based on your judgment. Based on the previous "
                f"interaction history, the user's preference can be summarized as: "
                f"{preference} Please predict whether this user would interact with the "
                f"{domain} at the next opportunity. The {domain}'s title is '{title}', and "
                f"the given image is this {domain}'s cover."
            ),
        ]
    )


def strip_images(messages: Messages) -> Messages:
    """The same messages without image parts (for a text-only model or a missing image)."""
    result = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [part for part in content if part.get("type") != "image"]
        result.append({**message, "content": content})
    return result
