"""Ray Serve app: the fine-tuned recommender ranks a user's candidates and explains the ranking
with the user's preference summary, which online events keep current.

    serve run serve_configs/recommender.yaml
    curl -X POST localhost:8000/recommend -d '{"user_id": "1", "candidates": ["10", "20"]}'

A FastAPI ingress: ``POST /recommend``, ``GET /users/{id}``, ``POST /users/{id}/events``,
``GET /healthz``, ``GET /stats``, the browse page at ``/`` and the OpenAPI docs at
``/docs``. Requests arriving together are scored in one batch (``serve.batch``); replicas
autoscale on ongoing requests (see the serve config). Events go to the single
``ProfileUpdater`` (``serving/updater.py``). Bad requests get a JSON error with status 400
(malformed), 404 (unknown user or item) or 413 (too large), and are counted by reason in
``stats()``. ``user_config`` (run_dir, overrides, batching knobs) is applied by
``reconfigure`` without a redeploy.
"""

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from msr_ray.config import ServeConfig
from msr_ray.data.ids import normalize_id
from msr_ray.rundir import RunDir, absolute_location
from msr_ray.serving import api as schemas
from msr_ray.serving.catalog import Preference, ServingCatalog
from msr_ray.serving.requests import (
    RequestError,
    decode_body,
    error_response,
    parse_events,
    parse_request,
)
from msr_ray.serving.updater import ProfileUpdater, answer

log = logging.getLogger(__name__)

http_api = FastAPI(
    title="msr-ray recommender",
    description="MLLM-MSR: ranks a user's candidate items, explained by the user's "
    "preference summary.",
)


def _json_body(model: type) -> dict[str, Any]:
    """OpenAPI for a route that reads its JSON body itself (limits come before decoding)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


@dataclass(frozen=True)
class Served:
    """What one replica serves now; swapped whole by ``reconfigure``."""

    settings: ServeConfig
    catalog: ServingCatalog
    recommender: Any


def _load(settings: ServeConfig) -> Served:
    """The run's MLLM with the trained adapter merged, its items and summaries."""
    from msr_ray.recommender import Recommender as Scorer
    from msr_ray.recommender import adapter_dir, trained_config

    run = RunDir(settings.run_dir)
    adapter = adapter_dir(run)  # first: a run without a trained adapter cannot serve
    config = trained_config(run, settings.overrides)
    catalog = ServingCatalog.from_run(run, config.recommender.candidate_description)
    return Served(settings, catalog, Scorer.load(config, adapter))


def _page(ids: list[str], offset: int, limit: int) -> dict[str, Any]:
    """One slice of a sorted listing (``limit`` at most 1000); defined before the ingress
    class, which Serve pickles with the globals it sees."""
    offset, limit = max(0, offset), max(0, min(limit, 1000))
    return {"total": len(ids), "ids": ids[offset : offset + limit]}


@serve.deployment(name="Recommender", max_ongoing_requests=8)
@serve.ingress(http_api)
class Recommender:
    """One replica: ranks candidates with the run's recommender; events go to the updater."""

    def __init__(self, profiles: DeploymentHandle, args: dict[str, Any]):
        self.profiles = profiles
        self.args = args
        self.served = _load(ServeConfig.model_validate(args))
        self._apply_batching(self.served.settings)
        self.counts: Counter[str] = Counter()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``user_config`` over the app's args: a new run directory or overrides load
        the new run beside the old one, then switch; batching knobs apply at once."""
        settings = ServeConfig.model_validate({**self.args, **user_config})
        settings.run_dir = absolute_location(settings.run_dir)
        now = self.served.settings
        if (settings.run_dir, settings.overrides) != (now.run_dir, now.overrides):
            self.served = await asyncio.to_thread(_load, settings)
            log.info("now serving %s", settings.run_dir)
        else:
            self.served = Served(settings, self.served.catalog, self.served.recommender)
        self._apply_batching(settings)

    def _apply_batching(self, settings: ServeConfig) -> None:
        self._score.set_max_batch_size(settings.max_batch_requests)
        self._score.set_batch_wait_timeout_s(settings.batch_wait_s)

    # -- routes ------------------------------------------------------------------------

    @http_api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(self) -> HTMLResponse:
        """The browse page: users, their history and summary, ranked candidates, events."""
        return HTMLResponse(resources.files("msr_ray.serving").joinpath("page.html").read_text())

    @http_api.post(
        "/recommend",
        response_model=schemas.RecommendAnswer,
        responses=schemas.ERRORS,
        openapi_extra=_json_body(schemas.RecommendBody),
    )
    async def post_recommend(self, http: Request) -> Any:
        """Rank the candidates by P(yes); the user's newest preference summary explains it.

        The body is read and checked here (size, depth, then fields) before any work.
        """
        try:
            return await self.recommend(await self._payload(http))
        except RequestError as exc:
            return error_response(exc)

    @http_api.post(
        "/users/{user_id}/events",
        response_model=schemas.EventsAnswer,
        responses=schemas.ERRORS,
        openapi_extra=_json_body(schemas.EventsBody),
    )
    async def post_events(self, user_id: str, http: Request) -> Any:
        """Append interactions to the user's history; answers once the event and the new
        summary are durable. Events are applied in arrival order, exactly once per event_id."""
        user_id = normalize_id(user_id)
        try:
            payload = await self._payload(http)
            try:
                events = parse_events(payload, self.served.settings.max_candidates)
            except RequestError as exc:
                raise self._refused(exc) from None
            answered = await self._profile_call(
                "append", user_id, list(events.items), events.event_id
            )
            self.counts["events"] += 1
            return answered
        except RequestError as exc:
            return error_response(exc)

    @http_api.get("/users", response_model=schemas.Page)
    def list_users(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """User ids with a preference summary, sorted; ``limit`` at most 1000."""
        return _page(sorted(self.served.catalog.preferences), offset, limit)

    @http_api.get("/users/{user_id}", response_model=schemas.UserProfile, responses=schemas.ERRORS)
    async def get_user(self, user_id: str) -> Any:
        """The user's newest preference summary, the step it covers and their history."""
        user_id = normalize_id(user_id)
        try:
            online = await self._profile_call("latest", user_id)
            return self.served.catalog.profile(user_id, online["online_items"]) | {
                "summary": online["summary"],
                "step": online["step"],
            }
        except RequestError as exc:
            return error_response(exc)

    @http_api.get("/users/{user_id}/candidates", response_model=schemas.Page)
    async def user_candidates(self, user_id: str, n: int = 20) -> Any:
        """``n`` (at most max_candidates) items the user has not interacted with, a fixed
        sample per user: what the browse page ranks."""
        user_id = normalize_id(user_id)
        try:
            online = await self._profile_call("latest", user_id)
            seen = set(self.served.catalog.histories.get(user_id, [])) | set(online["online_items"])
            n = max(1, min(n, self.served.settings.max_candidates))
            ids = self.served.catalog.sample_unseen(user_id, seen, n)
            return {"total": len(ids), "ids": ids}
        except RequestError as exc:
            return error_response(exc)

    @http_api.get("/items", response_model=schemas.Page)
    def list_items(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """Item ids, sorted; ``limit`` at most 1000."""
        return _page(sorted(self.served.catalog.items), offset, limit)

    @http_api.get("/items/{item_id}/image", responses=schemas.ERRORS)
    async def item_image(self, item_id: str) -> Any:
        """The item's image as a PNG thumbnail (a grid when it has several)."""
        item_id = normalize_id(item_id)
        try:
            png = await asyncio.to_thread(self.served.catalog.thumbnail, item_id)
        except RequestError as exc:
            return error_response(exc)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @http_api.get("/healthz")
    def healthz(self) -> dict[str, Any]:
        """Liveness: the replica has loaded its model and catalog."""
        settings = self.served.settings
        return {
            "status": "ok",
            "replica": serve.get_replica_context().replica_id.unique_id,
            "users": len(self.served.catalog.preferences),
            "run_dir": settings.run_dir,
            "max_batch_requests": settings.max_batch_requests,
        }

    @http_api.get("/stats")
    def get_stats(self) -> dict[str, int]:
        """This replica's counters: requests answered and refused by reason."""
        return self.stats()

    # -- work --------------------------------------------------------------------------

    async def _payload(self, http: Request) -> Any:
        """The decoded body, after the size cap (413) and the depth bound (400)."""
        settings = self.served.settings
        try:
            body = await self._body(http, settings.max_body_bytes)
            return decode_body(body, settings.max_body_bytes, settings.max_json_depth)
        except RequestError as exc:
            raise self._refused(exc) from None

    async def _body(self, http: Request, limit: int) -> bytes:
        """The request body, refused (413) as soon as it passes ``limit`` bytes."""
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

    async def _profile_call(self, method: str, user_id: str, *args: Any) -> dict[str, Any]:
        """Call the ProfileUpdater for the run this replica serves; count its refusals."""
        settings = self.served.settings
        reply = await getattr(self.profiles, method).remote(
            settings.run_dir, settings.overrides, user_id, *args
        )
        try:
            return answer(reply)
        except RequestError as exc:
            raise self._refused(exc) from None

    def _refused(self, exc: RequestError) -> RequestError:
        self.counts[exc.reason] += 1
        log.warning("refused request: %s", exc)
        return exc

    async def recommend(self, payload: Any) -> dict[str, Any]:
        """Rank the request's candidates by P(yes); the user's newest summary explains it."""
        served = self.served
        try:
            request = parse_request(payload, served.settings.max_candidates)
            served.catalog.check_candidates(request)
        except RequestError as exc:
            raise self._refused(exc) from None
        online = await self._profile_call("latest", request.user_id)
        preference = Preference(online["summary"], online["step"])
        rows = served.catalog.candidate_rows(request, preference)
        scores = await self._score((served.recommender, rows))
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
    async def _score(self, work: list[tuple[Any, list[dict[str, Any]]]]) -> list[list[float]]:
        """P(yes) of every candidate of the batched requests, off the event loop.

        Each request carries the scorer it was admitted with, so a batch that spans a
        reconfigure scores every request with its own run's model.
        """
        result: list[list[float]] = [[] for _ in work]
        scorers = {id(scorer): scorer for scorer, _ in work}
        for key, scorer in scorers.items():
            mine = [n for n, (s, _) in enumerate(work) if id(s) == key]
            scores = await asyncio.to_thread(scorer.score, [r for n in mine for r in work[n][1]])
            start = 0
            for n in mine:
                result[n] = scores[start : start + len(work[n][1])]
                start += len(work[n][1])
        return result

    def stats(self) -> dict[str, int]:
        """Requests answered and refused (by reason) by this replica."""
        return dict(self.counts)


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application for ``serve run`` / ``serve deploy``: args are a ServeConfig."""
    settings = ServeConfig.model_validate(args)
    settings.run_dir = absolute_location(settings.run_dir)
    return Recommender.bind(ProfileUpdater.bind(), settings.model_dump())
