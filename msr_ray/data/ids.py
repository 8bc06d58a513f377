"""Which user and item ids are valid: what a dataset keeps must be servable and readable.

An id is normalised to Unicode NFC (``e`` + combining acute and ``é`` are one id), then
refused (quarantined as ``bad_id``) when it

- holds a control character (Unicode category Cc: newlines, NUL, escapes), a format
  character (Cf: zero-width spaces and joiners, bidi overrides: ``u\\u200b1`` would look
  like ``u1`` everywhere), a surrogate, or a private-use or unassigned code point;
- holds ``/`` or ``\\`` (a path separator: ``GET /users/a%2Fb`` is not one path segment
  on every proxy), or is ``.`` or ``..`` (a URL path resolves them away);
- has surrounding whitespace (readers strip it; an id made of it alone is missing), or
  is longer than ``MAX_ID_CHARS``.

Everything else is kept: spaces inside, punctuation (``?#%&+'"<>``), any script, emoji.
Serving normalises the ids it is sent the same way.
"""

from __future__ import annotations

import unicodedata

MAX_ID_CHARS = 256
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}
_PATH_CHARACTERS = {"/", "\\"}


def normalize_id(text: str) -> str:
    """The id in Unicode NFC."""
    return unicodedata.normalize("NFC", text)


def id_problem(text: str) -> str | None:
    """Why ``text`` (already normalised) is not a valid id, or None when it is."""
    if not text or text != text.strip():
        return "empty or surrounded by whitespace"
    if len(text) > MAX_ID_CHARS:
        return f"longer than {MAX_ID_CHARS} characters"
    if text in {".", ".."}:
        return "a bare '.' or '..'"
    for char in text:
        if char in _PATH_CHARACTERS:
            return f"holds the path character {char!r}"
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return f"holds U+{ord(char):04X} ({unicodedata.category(char)})"
    return None
