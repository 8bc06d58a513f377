"""The ProfileUpdater deployment: the one writer of online profile updates.

It has one replica, and every call that may write (an event, or catching up steps a crash
left pending) runs under one FIFO ``asyncio.Lock``: events are applied in the order they
reach it, one at a time. Exactly once: an event is acknowledged only after it and its
summaries are in the run directory, and a retried post with the same ``event_id`` is
answered from the store without being applied again. A restarted replica rebuilds
everything from the run directory.

It is also the one writer of items posted online (``POST /items``, ``serving/items.py``):
under the same lock it refuses a taken id (409), summarizes the item with the run's base
MLLM (the `summarize-items` code, loaded here on the first post: the Scorer's copy has
the adapter merged, so it would not give the stage's summaries), writes it, and lets
later events name it. Ingress replicas fetch the items posted through others with
``posted_since``.

Recommender replicas pass the run they serve with every call, so after a hot reload the
updater follows them; it keeps the stores of the two runs used last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray import serve

from msr_ray.serving.requests import RequestError

STORES_KEPT = 2


@dataclass
class RunStores:
    """The writable state of one served run: user profiles and items posted online."""

    profiles: Any
    items: Any


def _open_stores(run_dir: str, overrides: tuple[str, ...]) -> RunStores:
    from msr_ray.run.method_inputs import trained_config
    from msr_ray.run.rundir import RunDir
    from msr_ray.serving.items import ItemStore, history_item
    from msr_ray.serving.profiles import ProfileStore

    run = RunDir(run_dir)
    config = trained_config(run, overrides)
    stores = RunStores(ProfileStore(run, config), ItemStore(run, config))
    for record in stores.items.posted:
        stores.profiles.add_item(record["item_id"], history_item(record))
    return stores


@serve.deployment(
    name="ProfileUpdater",
    num_replicas=1,
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 1, "num_gpus": 0},
)
class ProfileUpdater:
    """Serializes profile writes for every recommender replica (see the module doc)."""

    def __init__(self) -> None:
        self.stores: dict[tuple[str, tuple[str, ...]], RunStores] = {}
        self.lock = asyncio.Lock()

    async def _store(self, run_dir: str, overrides: tuple[str, ...]) -> RunStores:
        key = (run_dir, overrides)
        if key not in self.stores:
            self.stores[key] = await asyncio.to_thread(_open_stores, run_dir, overrides)
            while len(self.stores) > STORES_KEPT:
                self.stores.pop(next(iter(self.stores)))
        return self.stores[key]

    async def _locked(
        self, run_dir: str, overrides: list[str], work: Callable[[RunStores], Any]
    ) -> dict:
        """``work(stores)`` under the writer lock, off the event loop.

        Returns ``{"ok": result}`` or ``{"refused": [message, status, reason]}``: a
        RequestError does not cross the actor boundary as itself.
        """
        async with self.lock:
            try:
                stores = await self._store(run_dir, tuple(overrides))
                return {"ok": await asyncio.to_thread(work, stores)}
            except RequestError as exc:
                return {"refused": [str(exc), exc.status, exc.reason]}

    async def append(
        self, run_dir: str, overrides: list[str], user_id: str, items: list[str], event_id: str
    ) -> dict:
        """Append an event durably and advance the user's summary (see ProfileStore.append)."""
        return await self._locked(
            run_dir, overrides, lambda s: s.profiles.append(user_id, tuple(items), event_id)
        )

    async def latest(self, run_dir: str, overrides: list[str], user_id: str) -> dict:
        """The user's newest summary; answered without waiting when nothing is pending."""
        stores = self.stores.get((run_dir, tuple(overrides)))
        if stores is not None and stores.profiles.is_current(user_id):
            return {"ok": stores.profiles.latest(user_id)}
        return await self._locked(run_dir, overrides, lambda s: s.profiles.latest(user_id))

    async def post_item(self, run_dir: str, overrides: list[str], item: Any) -> dict:
        """Summarize and store a checked ``NewItem`` durably (see ItemStore.post); events
        may name it from then on."""
        from msr_ray.serving.items import history_item

        def work(stores: RunStores) -> dict:
            record = stores.items.post(item)
            stores.profiles.add_item(record["item_id"], history_item(record))
            return record

        return await self._locked(run_dir, overrides, work)

    async def posted_since(self, run_dir: str, overrides: list[str], count: int) -> dict:
        """The items posted to the run after its first ``count`` (oldest first)."""
        stores = self.stores.get((run_dir, tuple(overrides)))
        if stores is not None:
            return {"ok": stores.items.since(count)}
        return await self._locked(run_dir, overrides, lambda s: s.items.since(count))


def answer(reply: dict) -> Any:
    """The result of an updater call, or the RequestError it refused with."""
    if "refused" in reply:
        message, status, reason = reply["refused"]
        raise RequestError(message, status, reason)
    return reply["ok"]
