"""The HTTP API's request and response models (pydantic), shown at ``/docs``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from msr_ray.config import RetrieverName


class RecommendBody(BaseModel):
    """POST /recommend: rank ``candidates`` for ``user_id``; without them (two-stage),
    ``retriever``'s top ``n`` of the whole catalogue, the user's history left out."""

    user_id: str = Field(min_length=1, examples=["u0"])
    candidates: list[str] | None = Field(None, min_length=1, examples=[["i3", "i42", "i7"]])
    top_k: int | None = Field(None, ge=1, description="return the best top_k (default: all)")
    n: int | None = Field(
        None, ge=1, description="no candidates: items retrieved (default: the serve config's)"
    )
    retriever: RetrieverName | None = Field(
        None, description="no candidates: the kept baseline that retrieves (default: config's)"
    )


class RankedItem(BaseModel):
    rank: int
    item_id: str
    title: str
    score: float = Field(
        description="P(yes): will the user interact with this item next (the rerank score)"
    )
    retrieval_rank: int | None = Field(
        None, description="two-stage: the item's rank in the retriever's list (else null)"
    )
    retrieval_score: float | None = Field(
        None, description="two-stage: the retriever's score of the item (else null)"
    )
    fresh: bool = Field(
        False, description="two-stage: a newest posted item, from the fresh-items slot"
    )


class RecommendAnswer(BaseModel):
    user_id: str
    explanation: str = Field(description="the user's latest preference summary")
    summary_covers_items: int = Field(description="history items the summary covers")
    candidates: int
    retriever: str | None = Field(
        None,
        description="two-stage: what proposed the candidates, e.g. `sasrec` or "
        "`popularity (fallback: empty history)`; null when the request named them",
    )
    ranking: list[RankedItem]


class HistoryItem(BaseModel):
    item_id: str
    title: str


class UserProfile(BaseModel):
    """GET /users/{user_id}: what the recommender knows about a user."""

    user_id: str
    summary: str
    step: int = Field(description="history items the summary covers")
    history: list[HistoryItem] = Field(
        description="the user's training history, then the items added online, oldest first"
    )
    online_items: int = Field(description="history items added by POST /users/{id}/events")


class EventsBody(BaseModel):
    """POST /users/{user_id}/events: the user interacted with ``items``, in this order."""

    items: list[str] = Field(min_length=1, examples=[["i3"]])
    event_id: str | None = Field(
        None,
        max_length=128,
        description="idempotency key: a retried post with the same id is not applied twice",
    )


class EventsAnswer(BaseModel):
    """The event is durable and the summary covers it."""

    user_id: str
    event_id: str
    duplicate: bool = Field(description="true when this event_id had already been applied")
    summary: str
    step: int
    online_items: list[str]
    events: int = Field(description="online events accepted for this user so far")


class ItemBody(BaseModel):
    """POST /items: a new item, checked like the dataset's items."""

    item_id: str = Field(min_length=1, max_length=256, examples=["new-1"])
    title: str = Field(min_length=1, max_length=1000, examples=["Bright red clip"])
    text: str = Field("", max_length=1000)
    image_base64: str | None = Field(
        None, description="the image (JPEG, PNG, WEBP, GIF or BMP), base64-encoded"
    )


class ItemAnswer(BaseModel):
    """An item and its summary (POST /items answers once it is durable)."""

    item_id: str
    title: str
    text: str | None = None
    summary: str | None = Field(
        description="the summarize-items summary (dataset items: when the served "
        "recommender reads item summaries)"
    )
    error: str | None = Field(None, description="why the summary fell back to text, or is empty")
    model: str | None = None
    online: bool = Field(description="true for an item posted by POST /items")
    has_image: bool
    posted_at: float | None = None
    stored_at: str | None = Field(None, description="the item's record in the run directory")


class Page(BaseModel):
    """A slice of a listing: ``total`` ids exist."""

    total: int
    ids: list[str]


class ErrorAnswer(BaseModel):
    error: str
    reason: str


# Where API keys are configured: writes, and reads with keys_on_reads.
KEY_ERRORS = {
    401: {"model": ErrorAnswer, "description": "no API key (`Authorization: Bearer <key>`)"},
    403: {"model": ErrorAnswer, "description": "an API key this service does not accept"},
}
ERRORS = {
    400: {"model": ErrorAnswer, "description": "malformed or too deeply nested request"},
    **KEY_ERRORS,
    404: {"model": ErrorAnswer, "description": "unknown user or item, or an item with no image"},
    413: {"model": ErrorAnswer, "description": "body over max_body_bytes"},
}
RECOMMEND_ERRORS = {
    **ERRORS,
    503: {
        "model": ErrorAnswer,
        "description": "no candidates, and the run kept no model of the retriever",
    },
}
ITEM_ERRORS = {
    **ERRORS,
    409: {"model": ErrorAnswer, "description": "the run already holds this item id"},
    413: {"model": ErrorAnswer, "description": "body over max_item_bytes, or image too large"},
}
