"""Ray Serve app: the fine-tuned recommender ranks a user's candidates and explains the ranking
with the user's preference summary, which online events keep current.

    serve run serve_configs/recommender.yaml
    curl -X POST localhost:8000/recommend -d '{"user_id": "1", "candidates": ["10", "20"]}'
    curl -X POST localhost:8000/recommend -d '{"user_id": "1", "n": 20}'   # two-stage

A FastAPI ingress: ``POST /recommend``, ``GET /users/{id}``, ``POST /users/{id}/events``,
``POST /items``, ``GET /items/{id}``, ``GET /healthz``, ``GET /stats``, the browse page at
``/`` and the OpenAPI docs at ``/docs``. The ingress holds the catalog and builds each
request's candidate rows; the ``Scorer`` deployment (``serving/scorer.py``) holds the model
and scores requests arriving together in one batch. A request without ``candidates`` is
two-stage: a baseline the run kept (``retriever`` in the config, or the request's) proposes
its top N of the whole catalogue, the user's history left out, and those are ranked as a
request's candidates are; the retriever is a small CPU model loaded in the ingress replica
beside the catalog (``serving/retrieval.py``). A scoring call whose replica dies is retried
once (on another replica: Serve's router drops a dead one), so a lost replica fails no
request. Both autoscale on ongoing requests (see the serve config). Events and new items go
to the single ``ProfileUpdater`` (``serving/updater.py``), which writes both. The replica
that took a new item adds it to its catalog at once; the others fetch it from the updater
when a request names an item they do not know, or before a listing every ``items_sync_s``
(``serving/items.py``). Bad requests get a JSON error with status 400 (malformed), 404
(unknown user or item), 409 (a posted item id the run holds), 413 (too large) or 503 (a
two-stage request whose retriever the run did not keep), and are counted by reason in
``stats()``. ``user_config`` (run_dir, overrides, batching knobs, key settings) is applied
by ``reconfigure`` without a redeploy.

With API keys configured (``serving/keys.py``), writes need one, and reads too with
``keys_on_reads``: 401 without a key, 403 with a wrong one, counted like other refusals.
An app that Serve's HTTP host exposes beyond loopback without keys refuses to start
unless its args say ``open_without_keys`` (checked in ``build_app`` and again by each
ingress replica as it starts: ``serving/instance.py`` reads the host from Serve).

The deployments' defaults in code are those of ``serve_configs/recommender.yaml``
(ingress 0 CPUs, Scorer 1, ProfileUpdater 1), so ``serve run
msr_ray.serving.app:build_app run_dir=...`` starts on a 2-CPU Ray instance; an ingress
whose app asks for more than the cluster has says so in one warning line.
"""

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from msr_ray.config import ServeConfig
from msr_ray.data.ids import normalize_id
from msr_ray.run.rundir import RunDir, absolute_location
from msr_ray.serving import api as schemas
from msr_ray.serving.catalog import ServingCatalog
from msr_ray.serving.instance import http_host, replica_view
from msr_ray.serving.items import newest_items, parse_item
from msr_ray.serving.keys import ApiKeys, check_exposure
from msr_ray.serving.requests import (
    RecommendRequest,
    RequestError,
    decode_body,
    error_response,
    parse_events,
    parse_request,
)
from msr_ray.serving.retrieval import Proposal, ServedRetrieval
from msr_ray.serving.scorer import Scorer, run_key
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
    keys: ApiKeys
    retrieval: ServedRetrieval


def _keys(settings: ServeConfig, host: str | None) -> ApiKeys:
    """The API keys ``settings`` name; refuses a key source without keys, and serving
    beyond loopback without keys (unless ``open_without_keys``)."""
    keys = ApiKeys.from_settings(settings)
    check_exposure(host, settings)
    return keys


def _load(settings: ServeConfig, host: str | None) -> Served:
    """The keys, then the run's items and summaries (the run must hold a trained adapter:
    the Scorer deployment loads it) and its default retriever (when kept)."""
    from msr_ray.run.method_inputs import trained_config

    keys = _keys(settings, host)
    run = RunDir(settings.run_dir)
    config = trained_config(run, settings.overrides)  # refuses a run without `train`
    catalog = ServingCatalog.from_run(run, config.recommender)
    retrieval = ServedRetrieval(run, config.baselines, catalog)
    retrieval.preload(settings.retriever)
    return Served(settings, catalog, keys, retrieval)


def _page(ids: list[str], offset: int, limit: int) -> dict[str, Any]:
    """One slice of a sorted listing (``limit`` at most 1000); defined before the ingress
    class, which Serve pickles with the globals it sees."""
    offset, limit = max(0, offset), max(0, min(limit, 1000))
    return {"total": len(ids), "ids": ids[offset : offset + limit]}


def _retrieved(
    retrieved: dict[str, tuple[int, float]], fresh: set[str], item: str
) -> dict[str, Any]:
    """Where a two-stage item came from: its retrieval rank and score, or the fresh-items
    slot (nulls and false when the request named the candidates)."""
    rank, score = retrieved.get(item, (None, None))
    return {"retrieval_rank": rank, "retrieval_score": score, "fresh": item in fresh}


@serve.deployment(
    name="Recommender",
    num_replicas=1,
    max_ongoing_requests=8,
    max_queued_requests=32,
    ray_actor_options={"num_cpus": 0, "num_gpus": 0},
)
@serve.ingress(http_api)
class RecommenderIngress:
    """One ingress replica: checks requests (and their API keys), builds candidate rows
    from the catalog and has the Scorer rank them; events go to the updater."""

    async def __init__(
        self, profiles: DeploymentHandle, scorer: DeploymentHandle, args: dict[str, Any]
    ):
        self.profiles = profiles
        self.scorer = scorer
        self.args = args
        self.host, shortfall = await replica_view()  # Serve's HTTP host: fixed while it runs
        if shortfall:
            log.warning("%s", shortfall)
        self.served = await asyncio.to_thread(_load, ServeConfig.model_validate(args), self.host)
        self.counts: Counter[str] = Counter()
        self.items_synced = time.monotonic()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``user_config`` over the app's args: a new run directory or overrides load
        the new run's catalog beside the old one, then switch (the Scorer loads its model
        on the first request for it); batching knobs go with every scoring call; the API
        keys are read again."""
        settings = ServeConfig.model_validate({**self.args, **user_config})
        settings.run_dir = absolute_location(settings.run_dir)
        now = self.served.settings
        if (settings.run_dir, settings.overrides) != (now.run_dir, now.overrides):
            self.served = await asyncio.to_thread(_load, settings, self.host)
            log.info("now serving %s", settings.run_dir)
        else:
            served = self.served
            self.served = Served(
                settings, served.catalog, _keys(settings, self.host), served.retrieval
            )

    # -- routes ------------------------------------------------------------------------

    @http_api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(self) -> HTMLResponse:
        """The browse page: users, their history and summary, ranked candidates, events."""
        return HTMLResponse(resources.files("msr_ray.serving").joinpath("page.html").read_text())

    @http_api.post(
        "/recommend",
        response_model=schemas.RecommendAnswer,
        responses=schemas.RECOMMEND_ERRORS,
        openapi_extra=_json_body(schemas.RecommendBody),
    )
    async def post_recommend(self, http: Request) -> Any:
        """Rank the candidates by P(yes); the user's newest preference summary explains it.
        Without candidates: a retriever's top ``n`` of the catalogue, reranked.

        The body is read and checked here (key, size, depth, then fields) before any work.
        """
        try:
            self._authorize(http)
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
            self._authorize(http, write=True)
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

    @http_api.get("/users", response_model=schemas.Page, responses=schemas.KEY_ERRORS)
    def list_users(self, http: Request, offset: int = 0, limit: int = 100) -> Any:
        """User ids with a preference summary, sorted; ``limit`` at most 1000."""
        try:
            self._authorize(http)
        except RequestError as exc:
            return error_response(exc)
        return _page(sorted(self.served.catalog.users), offset, limit)

    @http_api.get("/users/{user_id}", response_model=schemas.UserProfile, responses=schemas.ERRORS)
    async def get_user(self, user_id: str, http: Request) -> Any:
        """The user's newest preference summary, the step it covers and their history."""
        user_id = normalize_id(user_id)
        try:
            self._authorize(http)
            online = await self._profile_call("latest", user_id)
            return {
                "user_id": user_id,
                "summary": online["summary"],
                "step": online["step"],
                "history": self.served.catalog.history(user_id, online["online_items"]),
                "online_items": len(online["online_items"]),
            }
        except RequestError as exc:
            return error_response(exc)

    @http_api.get(
        "/users/{user_id}/candidates", response_model=schemas.Page, responses=schemas.ERRORS
    )
    async def user_candidates(self, user_id: str, http: Request, n: int = 20) -> Any:
        """``n`` (at most max_candidates) items the user has not interacted with: the
        newest posted online (up to a quarter), then a fixed sample per user. What the
        browse page ranks."""
        user_id = normalize_id(user_id)
        try:
            self._authorize(http)
            online = await self._profile_call("latest", user_id)
            await self._sync_items(self.served, ())
            seen = set(self.served.catalog.histories.get(user_id, [])) | set(online["online_items"])
            n = max(1, min(n, self.served.settings.max_candidates))
            fresh = newest_items(self.served.catalog.posted, n // 4, seen)
            ids = fresh + self.served.catalog.sample_unseen(
                user_id, seen | set(fresh), n - len(fresh)
            )
            return {"total": len(ids), "ids": ids}
        except RequestError as exc:
            return error_response(exc)

    @http_api.get("/items", response_model=schemas.Page, responses=schemas.KEY_ERRORS)
    async def list_items(self, http: Request, offset: int = 0, limit: int = 100) -> Any:
        """Item ids (the dataset's and those posted online), sorted; ``limit`` at most 1000."""
        try:
            self._authorize(http)
            await self._sync_items(self.served, ())
        except RequestError as exc:
            return error_response(exc)
        return _page(await asyncio.to_thread(sorted, self.served.catalog.items), offset, limit)

    @http_api.get("/items/{item_id}/image", responses=schemas.ERRORS)
    async def item_image(self, item_id: str, http: Request) -> Any:
        """The item's image as a PNG thumbnail (a grid when it has several)."""
        item_id = normalize_id(item_id)
        try:
            self._authorize(http)
            png = await asyncio.to_thread(self.served.catalog.thumbnail, item_id)
        except RequestError as exc:
            return error_response(exc)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @http_api.post(
        "/items",
        response_model=schemas.ItemAnswer,
        responses=schemas.ITEM_ERRORS,
        openapi_extra=_json_body(schemas.ItemBody),
    )
    async def post_item(self, http: Request) -> Any:
        """Add an item: checked like the dataset's items, summarized like `summarize-items`,
        durable in the run, then rankable at once (``serving/items.py``). A taken id: 409."""
        served = self.served
        try:
            self._authorize(http, write=True)
            payload = await self._payload(http, served.settings.max_item_bytes)
            side = served.catalog.settings.max_image_side
            try:
                item = await asyncio.to_thread(parse_item, payload, side)
            except RequestError as exc:
                raise self._refused(exc) from None
            record = await self._profile_call("post_item", item)
            served.catalog.add_posted([record])
            self.counts["items_posted"] += 1
            return served.catalog.describe(record["item_id"])
        except RequestError as exc:
            return error_response(exc)

    @http_api.get("/items/{item_id}", response_model=schemas.ItemAnswer, responses=schemas.ERRORS)
    async def get_item(self, item_id: str, http: Request) -> Any:
        """The item and its summary (in full for an item posted online)."""
        item_id = normalize_id(item_id)
        try:
            self._authorize(http)
            await self._sync_items(self.served, [item_id])
            try:
                return self.served.catalog.describe(item_id)
            except RequestError as exc:
                raise self._refused(exc) from None
        except RequestError as exc:
            return error_response(exc)

    @http_api.get("/healthz")
    def healthz(self) -> dict[str, Any]:
        """Liveness: the replica has loaded its model and catalog."""
        settings = self.served.settings
        return {
            "status": "ok",
            "replica": serve.get_replica_context().replica_id.unique_id,
            "users": len(self.served.catalog.users),
            "run_dir": settings.run_dir,
            "max_batch_requests": settings.max_batch_requests,
        }

    @http_api.get("/stats")
    def get_stats(self) -> dict[str, int]:
        """This replica's counters: requests answered and refused by reason."""
        return self.stats()

    # -- work --------------------------------------------------------------------------

    def _authorize(self, http: Request, write: bool = False) -> None:
        """Refuse (401/403, counted) a request to a write route, or to a read route with
        ``keys_on_reads``, that carries no accepted API key; the key is never logged."""
        try:
            self.served.keys.check(http.headers, write)
        except RequestError as exc:
            raise self._refused(exc) from None

    async def _payload(self, http: Request, limit: int | None = None) -> Any:
        """The decoded body, after the size cap (413; ``max_body_bytes`` unless ``limit``)
        and the depth bound (400)."""
        settings = self.served.settings
        limit = limit or settings.max_body_bytes
        try:
            body = await self._body(http, limit)
            return decode_body(body, limit, settings.max_json_depth)
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

    async def _profile_call(self, method: str, *args: Any) -> Any:
        """Call the ProfileUpdater for the run this replica serves; count its refusals."""
        settings = self.served.settings
        reply = await getattr(self.profiles, method).remote(
            settings.run_dir, settings.overrides, *args
        )
        try:
            return answer(reply)
        except RequestError as exc:
            raise self._refused(exc) from None

    async def _sync_items(self, served: Served, ids: Any) -> None:
        """Fetch the items posted through other replicas from the updater when ``ids``
        name one ``served``'s catalog lacks, or (for listings, ``ids`` empty) when the
        last fetch is more than ``items_sync_s`` old."""
        catalog, settings = served.catalog, served.settings
        stale = time.monotonic() - self.items_synced > settings.items_sync_s
        if all(i in catalog.items for i in ids) and (ids or not stale):
            return
        self.items_synced = time.monotonic()
        reply = await self.profiles.posted_since.remote(
            settings.run_dir, settings.overrides, len(catalog.posted)
        )
        catalog.add_posted(answer(reply))

    def _refused(self, exc: RequestError) -> RequestError:
        self.counts[exc.reason] += 1
        log.warning("refused request: %s", exc)
        return exc

    async def recommend(self, payload: Any) -> dict[str, Any]:
        """Rank the request's candidates (or, without any, the retriever's top N) by
        P(yes); the user's newest summary explains it."""
        served = self.served
        try:
            request = parse_request(payload, served.settings.max_candidates)
            await self._sync_items(served, request.candidates)
            served.catalog.check_candidates(request)
        except RequestError as exc:
            raise self._refused(exc) from None
        online = await self._profile_call("latest", request.user_id)
        proposal, fresh = None, []
        if not request.candidates:
            proposal, fresh = await self._propose(served, request, online["online_items"])
            proposed = tuple(item for item, _ in proposal.items)
            request = replace(request, candidates=proposed + tuple(fresh))
        rows = served.catalog.candidate_rows(request, online["summary"], online["online_items"])
        scores = await self._scores(served.settings, rows) if rows else []
        ranked = sorted(zip(rows, scores, strict=True), key=lambda pair: -pair[1])
        retrieved = {
            item: (rank, score)
            for rank, (item, score) in enumerate(proposal.items if proposal else [], start=1)
        }
        ranking = [
            {"rank": n, "item_id": row["item_id"], "title": row["title"], "score": score}
            | _retrieved(retrieved, set(fresh), row["item_id"])
            for n, (row, score) in enumerate(ranked[: request.top_k], start=1)
        ]
        self.counts["answered"] += 1
        return {
            "user_id": request.user_id,
            "explanation": online["summary"],
            "summary_covers_items": online["step"],
            "candidates": len(rows),
            "retriever": proposal.retriever if proposal else None,
            "ranking": ranking,
        }

    async def _propose(
        self, served: Served, request: RecommendRequest, online_items: list[str]
    ) -> tuple[Proposal, list[str]]:
        """The retriever's top N after the history serving knows (batch, then online),
        and the fresh-items slot: the newest posted items outside that history."""
        settings = served.settings
        history = served.catalog.item_history(request.user_id, online_items)
        name = request.retriever or settings.retriever
        n = request.n or min(settings.retrieve_n, settings.max_candidates)
        try:
            proposal = await asyncio.to_thread(served.retrieval.propose, name, history, n)
        except RequestError as exc:
            raise self._refused(exc) from None
        await self._sync_items(served, ())
        slot = min(settings.fresh_items, settings.max_candidates - len(proposal.items))
        proposed = {item for item, _ in proposal.items}
        fresh = newest_items(served.catalog.posted, max(0, slot), set(history) | proposed)
        self.counts["two_stage"] += 1
        if proposal.fallback:
            self.counts["retrieval_fallback"] += 1
        return proposal, fresh

    async def _scores(self, settings: ServeConfig, rows: list[dict[str, Any]]) -> list[float]:
        """The Scorer's P(yes) of every row; a call whose replica died is retried once
        (scoring is idempotent, and the router no longer picks the dead replica)."""
        batching = (settings.max_batch_requests, settings.batch_wait_s)
        try:
            return await self.scorer.score.remote(run_key(settings), batching, rows)
        except RayActorError as exc:
            self.counts["scoring_retried"] += 1
            log.warning("scoring replica lost mid-request, retrying once: %s", exc)
            return await self.scorer.score.remote(run_key(settings), batching, rows)

    def stats(self) -> dict[str, int]:
        """Requests answered and refused (by reason) by this replica."""
        return dict(self.counts)


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application for ``serve run`` / ``serve deploy``: args are a ServeConfig.

    Refuses, before anything starts, a key source without keys and an app that Serve's
    HTTP host (``instance.http_host``) exposes beyond loopback without keys; every
    ingress replica checks again as it starts, inside the Serve instance that runs it.
    """
    settings = ServeConfig.model_validate(args)
    settings.run_dir = absolute_location(settings.run_dir)
    if settings.api_keys_file is not None:
        settings.api_keys_file = absolute_location(settings.api_keys_file)
    _keys(settings, http_host())
    args = settings.model_dump()
    return RecommenderIngress.bind(ProfileUpdater.bind(), Scorer.bind(args), args)
