"""The first stage of a two-stage ``POST /recommend`` (a request without ``candidates``):
a baseline the run kept proposes its top N of the whole catalogue, which the ingress then
has the Scorer rerank as it ranks a request's own candidates. No Ray.

It lives in the ingress replica, beside the catalog it reads: a kept baseline is a small
CPU model (popularity counts, or a SASRec / GRU4Rec of a few MB) loaded on first use of
its name, so a proposal costs no remote call. The served run's default retriever is
loaded with the catalog; a run that did not keep it still serves requests with
candidates, and answers those without one 503 naming what is missing (looked for again
on each such request, so a baseline trained meanwhile is picked up).

A user's history is the one serving knows: the run's batch (train) history, then the
items posted online (``POST /users/{id}/events``), oldest first. None of it is proposed.
Items the retriever was not trained with are skipped (``Retriever``), and it never
proposes an item the served catalogue lacks. A sequence model (SASRec, GRU4Rec) that
knows no item of the history scores every item alike (SASRec: all zero), so popularity
proposes instead, counted over the served catalogue's batch histories (what the kept
popularity baseline learns from), and the proposal says so.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass

from msr_ray.config import BaselineConfig
from msr_ray.evaluation.baselines.kept import KeptBaseline
from msr_ray.evaluation.baselines.retrieval import Retriever
from msr_ray.run.rundir import MissingStageOutput, RunDir
from msr_ray.serving.catalog import ServingCatalog
from msr_ray.serving.requests import RequestError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Proposal:
    """What a retriever proposed: ``items`` as (item id, retrieval score), best first;
    ``retriever`` names what proposed them (``popularity (fallback: ...)`` when the
    asked retriever could not)."""

    retriever: str
    items: list[tuple[str, float]]
    fallback: bool = False


def batch_popularity(catalog: ServingCatalog) -> Retriever:
    """Popularity over the catalogue: each item's count in the batch histories."""
    counts = Counter(item for history in catalog.histories.values() for item in history)
    items = sorted(catalog.items)
    return Retriever(
        KeptBaseline("popularity", items, {}, [counts[i] for i in items]), "popularity"
    )


class ServedRetrieval:
    """The run's kept retrievers by name, and the popularity fallback."""

    def __init__(self, run: RunDir, baselines: BaselineConfig, catalog: ServingCatalog):
        self.run, self.baselines, self.catalog = run, baselines, catalog
        self.fallback = batch_popularity(catalog)
        self.loaded: dict[str, tuple[Retriever, list[str]]] = {}
        self.lock = threading.Lock()

    def load(self, name: str) -> tuple[Retriever, list[str]]:
        """The kept retriever ``name`` and the items it knows that the catalogue lacks;
        503 (``no_retriever``) when the run did not keep it."""
        with self.lock:
            if name not in self.loaded:
                try:
                    retriever = Retriever.from_run(self.run, self.baselines.output_name(name))
                except MissingStageOutput as exc:
                    raise RequestError(
                        f"no two-stage recommend with retriever {name!r}: {exc}; or send "
                        "'candidates'",
                        503,
                        "no_retriever",
                    ) from None
                absent = [item for item in retriever.item_ids if item not in self.catalog.items]
                self.loaded[name] = retriever, absent
            return self.loaded[name]

    def preload(self, name: str) -> None:
        """Load ``name`` now; a run that did not keep it is logged, not refused."""
        try:
            self.load(name)
        except RequestError as exc:
            log.warning("%s", exc)

    def propose(self, name: str, history: list[str], n: int) -> Proposal:
        """The top ``n`` of the catalogue after ``history`` (which is left out)."""
        retriever, absent = self.load(name)
        if retriever.baseline.kind == "popularity" or retriever.columns(history):
            return Proposal(name, retriever.top_n(history, n, absent))
        why = f"no history item known to {name}" if history else "empty history"
        return Proposal(f"popularity (fallback: {why})", self.fallback.top_n(history, n), True)
