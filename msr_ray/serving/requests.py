"""Recommendation requests: parsing and checking a JSON payload (no Ray)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class RequestError(ValueError):
    """A request that cannot be answered: HTTP ``status`` and a ``reason`` to count it by."""

    def __init__(self, message: str, status: int = 400, reason: str = "malformed"):
        super().__init__(message)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class RecommendRequest:
    """Rank ``candidates`` for ``user_id``; return the best ``top_k`` (None = all)."""

    user_id: str
    candidates: tuple[str, ...]
    top_k: int | None = None


def _ids(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise RequestError(f"'{field}' must be a non-empty list of item ids")
    if not all(isinstance(v, str) and v for v in value):
        raise RequestError(f"'{field}' must hold non-empty strings only")
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise RequestError(f"'{field}' repeats item ids {duplicates[:5]}")
    return tuple(value)


def parse_request(payload: Any, max_candidates: int) -> RecommendRequest:
    """Check a decoded JSON body: {"user_id": str, "candidates": [str, ...], "top_k": int?}."""
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object")
    unknown = sorted(set(payload) - {"user_id", "candidates", "top_k"})
    if unknown:
        raise RequestError(f"unknown fields {unknown}; expected user_id, candidates, top_k")
    user_id = payload.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise RequestError("'user_id' must be a non-empty string")
    candidates = _ids(payload.get("candidates"), "candidates")
    if len(candidates) > max_candidates:
        raise RequestError(f"{len(candidates)} candidates; at most {max_candidates} per request")
    top_k = payload.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise RequestError("'top_k' must be a positive integer")
    return RecommendRequest(user_id, candidates, top_k)
