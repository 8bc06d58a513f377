"""Prompt templates of MLLM-MSR (see shared/paper/MLLM-MSR.md), as chat messages.

Every stage records ``PROMPT_VERSION`` with its outputs, and both versions enter the
fingerprints of the stages whose output the templates shape (``msr_ray.run.provenance``), so a
new version rebuilds them. Change a version whenever its templates' wording changes, and
record the hash of the new rendering in ``TEMPLATE_SHA256`` (a test renders every template
and fails when the text changed under an old version). ``domain`` is the noun for items
(video, movie, product).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

PROMPT_VERSION = "mllm-msr-v2"
# The recommender's prompt (recorded by train and evaluate): v2 puts the shared part first;
# v3 can show the user's recent items after the preference (unchanged without them).
RECOMMEND_PROMPT_VERSION = "recommend-v3"
# How scores and the training loss are computed from the model (``scoring.py``), versioned
# beside the prompts: train and evaluate fingerprints carry it, so a change rebuilds them.
# fp32-head-1: the answer logits come from the LM head run in fp32 (``fp32_head``).
SCORING_VERSION = "fp32-head-1"
# sha256 of every template of a version rendered with the test's fixed arguments
# (tests/models/test_prompts.py): the summarizers' (PROMPT_VERSION) and the recommender's.
TEMPLATE_SHA256 = {
    "mllm-msr-v1": "a3d058f0b242d11ad6e075829f44617dbb435a4d1495147e874ec73eb688c2c6",
    "mllm-msr-v2": "d7734b69f4e88c317c5f108a879d85b46b62e6c1df2bcde785a32447bcfbed26",
    "recommend-v2": "b4be5531fe681311a072bb6a85e6bc6882c41229afaaa496e529015ff5103595",
    "recommend-v3": "6838bb46b719bb4ebf75177c45a8f62495c85555c79ac2c18eb2ca8ee4172ce2",
}
# Marks where the part of a recommender prompt shared by all of a user's candidates ends;
# removed from the rendered text before tokenizing.
SPLIT = "<<msr-ray:candidate>>"
PREFERENCE_PREFIX = "The user appears to have a preference for"
Messages = list[dict]
RecommendOrder = Literal["shared-prefix", "paper"]
UserPromptStyle = Literal["paper", "recent"]


@dataclass(frozen=True)
class HistoryItem:
    """One line of a user's history: the item's title, its item summary and its own text."""

    title: str
    description: str
    text: str = ""


def first_words(text: str, limit: int | None) -> str:
    """The first ``limit`` words of ``text`` (all of it when ``limit`` is None)."""
    words = text.split()
    if limit is None or len(words) <= limit:
        return text.strip()
    return " ".join(words[:limit]) + " ..."


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


def _history_lines(
    domain: str,
    items: Sequence[HistoryItem],
    start: int,
    style: UserPromptStyle = "paper",
    item_words: int | None = None,
) -> str:
    noun = domain.capitalize()
    if style == "paper":
        return "\n".join(
            f"{start + n}. Title - '{it.title}', {noun} cover description - "
            f"{first_words(it.description, item_words)}"
            for n, it in enumerate(items)
        )
    return "\n".join(
        f"{start + n}. '{it.title}'.{' ' + it.text.strip() if it.text.strip() else ''} "
        f"Description: {first_words(it.description, item_words)}"
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


# The ``recent`` style's worked example (one exchange before the real question), in
# genres the embedded dataset does not use: small models follow an answer's form far
# better from one example than from instructions.
_EXAMPLE_FIRST = [
    HistoryItem("Ocean Facts", "A calm blue cover with a whale.", "A documentary."),
    HistoryItem("Funny Robots", "A bright cartoon robot.", "An animation."),
    HistoryItem("Desert Life", "A sandy cover with a lizard.", "A documentary."),
]
_EXAMPLE_LATER = [
    HistoryItem("Space Cats", "A cartoon cat in a rocket.", "An animation."),
    HistoryItem("Toy Town", "Colourful cartoon toys.", "An animation."),
    HistoryItem("Polar Bears", "A white cover with bears.", "A documentary."),
]
_EXAMPLE_PREVIOUS = f"{PREFERENCE_PREFIX} documentaries about nature."
_EXAMPLE_ANSWERS = (
    f"{PREFERENCE_PREFIX} documentaries, with calm natural covers.",
    f"{PREFERENCE_PREFIX} animations now, with colourful cartoon covers.",
)


def _recent_question(
    domain: str,
    user_id: str,
    block: Sequence[HistoryItem],
    previous_summary: str | None,
    start_index: int,
    item_words: int | None,
) -> str:
    lines = _history_lines(domain, block, start_index, "recent", item_words)
    if previous_summary:
        return (
            f"What we knew of User {user_id}'s taste: {previous_summary}\n"
            f"Then User {user_id} watched these {domain}s, in order:\n{lines}\n"
            f"Tastes change, and the {domain}s just listed count most. In one sentence, "
            f"which kind of {domain}s does this user prefer now? The answer should start "
            f"with '{PREFERENCE_PREFIX}'."
        )
    return (
        f"User {user_id} watched these {domain}s, in order:\n{lines}\n"
        f"In one sentence, which kind of {domain}s does this user prefer? The answer should "
        f"start with '{PREFERENCE_PREFIX}'."
    )


def _recent_prompt(
    domain: str,
    user_id: str,
    block: Sequence[HistoryItem],
    previous_summary: str | None,
    start_index: int,
    item_words: int | None,
) -> Messages:
    """The ``recent`` style: one worked exchange of the same kind, then the question:
    what was known first, then the new block, and the kind of items preferred now."""
    if previous_summary:
        example = _recent_question(domain, "A", _EXAMPLE_LATER, _EXAMPLE_PREVIOUS, 4, None)
        answer = _EXAMPLE_ANSWERS[1]
    else:
        example = _recent_question(domain, "A", _EXAMPLE_FIRST, None, 1, None)
        answer = _EXAMPLE_ANSWERS[0]
    question = _recent_question(domain, user_id, block, previous_summary, start_index, item_words)
    return [
        {"role": "user", "content": example},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": question},
    ]


def user_block_prompt(
    domain: str,
    user_id: str,
    block: Sequence[HistoryItem],
    previous_summary: str | None,
    start_index: int = 1,
    style: UserPromptStyle = "paper",
    item_words: int | None = None,
) -> Messages:
    """One recurrent step: a block of items, with the previous summary after the first block.

    ``paper`` is the paper's prompt (the block, then the previous preference, then the
    instruction). ``recent`` opens with one worked exchange of the same kind, puts the
    previous preference first, shows each item's own text next to its summary and asks
    which kind of items the user prefers now.
    ``item_words`` cuts every item summary to that many words.
    """
    if style == "recent":
        return _recent_prompt(domain, user_id, block, previous_summary, start_index, item_words)
    text = (
        f"Below is a chronological list of {domain}s previously watched by User {user_id}:\n"
        f"{_history_lines(domain, block, start_index, style, item_words)}\n"
    )
    if previous_summary:
        text += f"We also know this user's previous preference. {previous_summary}\n"
    text += _summarize_instruction(domain, with_previous=bool(previous_summary))
    return [{"role": "user", "content": text}]


def user_direct_prompt(
    domain: str,
    user_id: str,
    history: Sequence[HistoryItem],
    style: UserPromptStyle = "paper",
    item_words: int | None = None,
) -> Messages:
    """The non-recurrent ablation: the whole history in one prompt."""
    return user_block_prompt(domain, user_id, history, None, 1, style, item_words)


def _recommend_question(domain: str) -> str:
    return (
        f"As a vision-llm, you will be given the cover image and the title of a {domain} and "
        f"the summarized preference of a user, and your task is to predict whether the user "
        f"would interact with the {domain}. Please only response 'yes' or 'no' based on your "
        f"judgment."
    )


def recent_item_line(title: str, description: str | None, words: int | None) -> str:
    """One recent item as the recommender's prompt shows it: title, then the first
    ``words`` words of its item summary (when there is one)."""
    about = f": {' '.join(description.split()[:words])}" if description else ""
    return f"'{title}'{about}"


def recent_item_lines(
    history: Sequence[str],
    titles: dict[str, str],
    descriptions: dict[str, str],
    count: int,
    words: int | None,
) -> list[str]:
    """The prompt lines of the last ``count`` items of ``history`` (oldest first)."""
    last = history[max(0, len(history) - count) :] if count else []
    return [recent_item_line(titles.get(i) or "", descriptions.get(i), words) for i in last]


def _recent_text(domain: str, recent: Sequence[str]) -> str:
    if not recent:
        return ""
    lines = "; ".join(f"{n}. {_unsplit(line)}" for n, line in enumerate(recent, 1))
    return f" The user's most recent {domain}s, oldest first: {lines}."


def recommend_prompt(
    domain: str,
    preference: str,
    title: str,
    description: str | None = None,
    order: RecommendOrder = "shared-prefix",
    recent: Sequence[str] = (),
) -> Messages:
    """The recommender's question about one candidate: its image, title (and description).

    The text before ``SPLIT`` is what every candidate of one user shares, so it can be
    computed once per user (see ``msr_ray.method.recommender``). ``shared-prefix`` puts the
    instruction and the user's preference first and the candidate last; ``paper`` keeps
    the paper's order (image first, the candidate's title at the very end), which shares
    only the chat template's header. ``description``, when given, is the candidate's item
    summary, appended after its title. ``recent`` (lines of ``recent_item_line``) are the
    user's most recent items, shown right after the preference (beyond the paper).
    """
    # NOTE: the paper puts the candidate's image first and its title last, around the
    # instruction; ``shared-prefix`` (the default) moves the candidate to the end so 21
    # candidates share one prefix (docs/method.md, The recommender's prompt).
    preference = _unsplit(preference) + _recent_text(domain, recent)
    title = _unsplit(title)
    about = f" Its description: {_unsplit(description)}" if description else ""
    if order == "paper":
        return _user(
            [
                _text(SPLIT),
                IMAGE,
                _text(
                    f"{_recommend_question(domain)} Based on the previous interaction history, "
                    f"the user's preference can be summarized as: {preference} Please predict "
                    f"whether this user would interact with the {domain} at the next "
                    f"opportunity. The {domain}'s title is '{title}', and the given image is "
                    f"this {domain}'s cover.{about}"
                ),
            ]
        )
    return _user(
        [
            _text(
                f"{_recommend_question(domain)} Based on the previous interaction history, the "
                f"user's preference can be summarized as: {preference} Please predict whether "
                f"this user would interact with the following {domain} at the next "
                f"opportunity. The given image is this {domain}'s cover."
            ),
            _text(SPLIT),
            IMAGE,
            _text(f" The {domain}'s title is '{title}'.{about}"),
        ]
    )


def _unsplit(text: str) -> str:
    return text.replace(SPLIT, "")


def strip_images(messages: Messages) -> Messages:
    """The same messages without image parts (for a text-only model or a missing image)."""
    result = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [part for part in content if part.get("type") != "image"]
        result.append({**message, "content": content})
    return result
