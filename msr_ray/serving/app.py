"""Ray Serve app: the fine-tuned recommender ranks a user's candidates and explains the ranking
with the user's preference summary.

    serve run serve_configs/recommender.yaml
    curl -X POST localhost:8000/recommend -d '{"user_id": "1", "candidates": ["10", "20"]}'

A FastAPI ingress: ``POST /recommend``, ``GET /users/{id}``, ``GET /healthz``,
``GET /stats`` and the OpenAPI docs at ``/docs``. Requests arriving together are scored in
one batch (``serve.batch``); replicas autoscale on ongoing requests (see the serve
config). Bad requests get a JSON error with status 400 (malformed), 404 (unknown user or
item) or 413 (too large), and are counted by reason in ``stats()``.
"""

import asyncio
import logging
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from ray import serve

from msr_ray.config import ServeConfig
from msr_ray.rundir import RunDir, absolute_location
from msr_ray.serving import api as schemas
from msr_ray.serving.catalog import ServingCatalog
from msr_ray.serving.requests import RequestError, decode_body, error_response, parse_request

log = logging.getLogger(__name__)

http_api = FastAPI(
    title="msr-ray recommender",
    description="MLLM-MSR: ranks a user's candidate items, explained by the user's "
    "preference summary.",
)


@serve.deployment(name="Recommender", max_ongoing_requests=8)
@serve.ingress(http_api)
class Recommender:
    """One replica: the run's MLLM with the trained adapter merged, its items and summaries."""

    def __init__(self, args: dict[str, Any]):
        from msr_ray.recommender import Recommender, adapter_dir, trained_config

        self.settings = ServeConfig.model_validate(args)
        run = RunDir(self.settings.run_dir)
        adapter = adapter_dir(run)  # first: a run without a trained adapter cannot serve
        self.config = trained_config(run, self.settings.overrides)
        self.catalog = ServingCatalog.from_run(run, self.config.recommender.candidate_description)
        self.recommender = Recommender.load(self.config, adapter)
        self._score.set_max_batch_size(self.settings.max_batch_requests)
        self._score.set_batch_wait_timeout_s(self.settings.batch_wait_s)
        self.counts: Counter[str] = Counter()

    @http_api.post(
        "/recommend",
        response_model=schemas.RecommendAnswer,
        responses=schemas.ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schemas.RecommendBody.model_json_schema()}
                },
            }
        },
    )
    async def post_recommend(self, http: Request) -> Any:
        """Rank the candidates by P(yes); the user's preference summary explains it.

        The body is read and checked here (size, depth, then fields) before any work.
        """
        try:
            try:
                body = await self._body(http)
                payload = decode_body(
                    body, self.settings.max_body_bytes, self.settings.max_json_depth
                )
            except RequestError as exc:
                raise self._refused(exc) from None
            return await self.recommend(payload)
        except RequestError as exc:
            return error_response(exc)

    @http_api.get("/users/{user_id}", response_model=schemas.UserProfile, responses=schemas.ERRORS)
    def get_user(self, user_id: str) -> Any:
        """The user's latest preference summary, the step it covers and their history."""
        try:
            return self.catalog.profile(user_id)
        except RequestError as exc:
            return error_response(self._refused(exc))

    @http_api.get("/healthz")
    def healthz(self) -> dict[str, Any]:
        """Liveness: the replica has loaded its model and catalog."""
        return {"status": "ok", "users": len(self.catalog.preferences)}

    @http_api.get("/stats")
    def get_stats(self) -> dict[str, int]:
        """This replica's counters: requests answered and refused by reason."""
        return self.stats()

    async def _body(self, http: Request) -> bytes:
        """The request body, refused (413) as soon as it passes ``max_body_bytes``."""
        limit = self.settings.max_body_bytes
        too_large = RequestError(
            f"the body has more than {limit} bytes", status=413, reason="too_large"
        )
        declared = http.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in http.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _refused(self, exc: RequestError) -> RequestError:
        self.counts[exc.reason] += 1
        log.warning("refused request: %s", exc)
        return exc

    async def recommend(self, payload: Any) -> dict[str, Any]:
        """Rank the request's candidates by P(yes); the user's summary is the explanation."""
        try:
            request = parse_request(payload, self.settings.max_candidates)
            preference, rows = self.catalog.candidate_rows(request)
        except RequestError as exc:
            raise self._refused(exc) from None
        scores = await self._score(rows)
        ranked = sorted(zip(rows, scores, strict=True), key=lambda pair: -pair[1])
        ranking = [
            {"rank": n, "item_id": row["item_id"], "title": row["title"], "score": score}
            for n, (row, score) in enumerate(ranked[: request.top_k], start=1)
        ]
        self.counts["answered"] += 1
        return {
            "user_id": request.user_id,
            "explanation": preference.summary,
            "summary_covers_items": preference.covers_items,
            "candidates": len(rows),
            "ranking": ranking,
        }

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def _score(self, requests: list[list[dict[str, Any]]]) -> list[list[float]]:
        """P(yes) of every candidate of the batched requests, off the event loop."""
        flat = [row for rows in requests for row in rows]
        scores = await asyncio.to_thread(self.recommender.score, flat)
        result, start = [], 0
        for rows in requests:
            result.append(scores[start : start + len(rows)])
            start += len(rows)
        return result

    def stats(self) -> dict[str, int]:
        """Requests answered and refused (by reason) by this replica."""
        return dict(self.counts)


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application for ``serve run`` / ``serve deploy``: args are a ServeConfig."""
    settings = ServeConfig.model_validate(args)
    settings.run_dir = absolute_location(settings.run_dir)
    return Recommender.bind(settings.model_dump())
