"""Recommendation requests: parsing and checking a JSON payload (no Ray)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, get_args

from msr_ray.config import RetrieverName
from msr_ray.data.ids import normalize_id


class RequestError(ValueError):
    """A request that cannot be answered: HTTP ``status``, a ``reason`` to count it by and
    the response's extra ``headers``."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        reason: str = "malformed",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.reason, self.headers = status, reason, headers or {}


def unknown_user(user_id: str) -> RequestError:
    """The 404 for a user with no preference summary in the served run."""
    return RequestError(
        f"user {user_id!r} has no preference summary in this run", 404, "unknown_user"
    )


def unknown_items(unknown: list[str]) -> RequestError:
    """The 404 for item ids the served run does not know."""
    return RequestError(f"{len(unknown)} unknown item ids, e.g. {unknown[:5]}", 404, "unknown_item")


@dataclass(frozen=True)
class RecommendRequest:
    """Rank ``candidates`` for ``user_id``; return the best ``top_k`` (None = all). No
    candidates: ``retriever`` proposes its top ``n`` of the catalogue (None: the served
    defaults) and those are ranked."""

    user_id: str
    candidates: tuple[str, ...]
    top_k: int | None = None
    n: int | None = None
    retriever: str | None = None


def error_response(exc: RequestError) -> Any:
    """The JSON response of a refused request: ``{"error", "reason"}`` with its status
    and headers."""
    from starlette.responses import JSONResponse

    body = {"error": str(exc), "reason": exc.reason}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


# Bodies larger than this are refused (413) before they are decoded.
MAX_BODY_BYTES = 64 * 1024
# JSON nested deeper than this is refused (400) before it is decoded.
MAX_JSON_DEPTH = 8


def json_depth(body: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in a JSON text (strings skipped), in one pass."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def decode_body(
    body: bytes, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """The decoded JSON body: 413 when over ``max_bytes``, 400 when too deep or invalid."""
    if len(body) > max_bytes:
        raise RequestError(
            f"the body has more than {max_bytes} bytes", status=413, reason="too_large"
        )
    if json_depth(body) > max_depth:
        raise RequestError(f"the JSON nests deeper than {max_depth} levels", reason="too_deep")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise RequestError("the body is not valid JSON") from None


def _ids(value: Any, field: str, limit: int) -> tuple[str, ...]:
    """The ids of a list field, checked in one pass; the length cap comes first."""
    if not isinstance(value, list) or not value:
        raise RequestError(f"'{field}' must be a non-empty list of item ids")
    if len(value) > limit:
        raise RequestError(f"{len(value)} {field}; at most {limit} per request")
    seen: set[str] = set()
    duplicates: set[str] = set()
    for v in value:
        if not isinstance(v, str) or not v:
            raise RequestError(f"'{field}' must hold non-empty strings only")
        v = normalize_id(v)
        (duplicates if v in seen else seen).add(v)
    if duplicates:
        raise RequestError(f"'{field}' repeats item ids {sorted(duplicates)[:5]}")
    return tuple(normalize_id(v) for v in value)


def _count(value: Any, field: str, limit: int | None = None) -> int | None:
    """An optional positive integer field (at most ``limit``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"'{field}' must be a positive integer")
    if limit is not None and value > limit:
        raise RequestError(f"'{field}' is {value}; at most {limit} per request")
    return value


RETRIEVERS = get_args(RetrieverName)
FIELDS = ("user_id", "candidates", "top_k", "n", "retriever")


def parse_request(payload: Any, max_candidates: int) -> RecommendRequest:
    """Check a decoded JSON body: {"user_id": str, "candidates": [str, ...], "top_k": int?}
    or, two-stage, {"user_id": str, "n": int?, "retriever": str?, "top_k": int?}."""
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise RequestError(f"unknown fields {unknown[:5]}; expected {', '.join(FIELDS)}")
    user_id = payload.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise RequestError("'user_id' must be a non-empty string")
    top_k = _count(payload.get("top_k"), "top_k")
    if payload.get("candidates") is not None:
        if payload.keys() & {"n", "retriever"}:
            raise RequestError("'n' and 'retriever' apply only to a request without candidates")
        candidates = _ids(payload["candidates"], "candidates", max_candidates)
        return RecommendRequest(normalize_id(user_id), candidates, top_k)
    retriever = payload.get("retriever")
    if retriever is not None and retriever not in RETRIEVERS:
        raise RequestError(f"'retriever' must be one of {', '.join(RETRIEVERS)}")
    n = _count(payload.get("n"), "n", max_candidates)
    return RecommendRequest(normalize_id(user_id), (), top_k, n, retriever)


MAX_EVENT_ID_CHARS = 128


@dataclass(frozen=True)
class EventsRequest:
    """Append ``items`` to a user's history; ``event_id`` makes a retried post a no-op."""

    items: tuple[str, ...]
    event_id: str | None


def parse_events(payload: Any, max_items: int) -> EventsRequest:
    """Check a decoded JSON body: {"items": [str, ...], "event_id": str?}."""
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object")
    unknown = sorted(set(payload) - {"items", "event_id"})
    if unknown:
        raise RequestError(f"unknown fields {unknown[:5]}; expected items, event_id")
    items = _ids(payload.get("items"), "items", max_items)
    event_id = payload.get("event_id")
    if event_id is not None and (
        not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID_CHARS
    ):
        raise RequestError(f"'event_id' must be a string of 1 to {MAX_EVENT_ID_CHARS} characters")
    return EventsRequest(items, event_id)
