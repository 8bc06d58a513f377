"""The ProfileUpdater deployment: the one writer of online profile updates.

It has one replica, and every call that may write (an event, or catching up steps a crash
left pending) runs under one FIFO ``asyncio.Lock``: events are applied in the order they
reach it, one at a time. Exactly once: an event is acknowledged only after it and its
summaries are in the run directory, and a retried post with the same ``event_id`` is
answered from the store without being applied again. A restarted replica rebuilds
everything from the run directory.

Recommender replicas pass the run they serve with every call, so after a hot reload the
updater follows them; it keeps the stores of the two runs used last.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from msr_ray.serving.requests import RequestError

STORES_KEPT = 2


def _open_store(run_dir: str, overrides: tuple[str, ...]):
    from msr_ray.method.recommender import trained_config
    from msr_ray.run.rundir import RunDir
    from msr_ray.serving.profiles import ProfileStore

    run = RunDir(run_dir)
    return ProfileStore(run, trained_config(run, overrides))


@serve.deployment(
    name="ProfileUpdater",
    num_replicas=1,
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 1, "num_gpus": 0},
)
class ProfileUpdater:
    """Serializes profile writes for every recommender replica (see the module doc)."""

    def __init__(self) -> None:
        self.stores: dict[tuple[str, tuple[str, ...]], Any] = {}
        self.lock = asyncio.Lock()

    async def _store(self, run_dir: str, overrides: tuple[str, ...]) -> Any:
        key = (run_dir, overrides)
        if key not in self.stores:
            self.stores[key] = await asyncio.to_thread(_open_store, run_dir, overrides)
            while len(self.stores) > STORES_KEPT:
                self.stores.pop(next(iter(self.stores)))
        return self.stores[key]

    async def _locked(self, method: str, run_dir: str, overrides: list[str], *args: Any) -> dict:
        """``store.<method>(*args)`` under the writer lock, off the event loop.

        Returns ``{"ok": result}`` or ``{"refused": [message, status, reason]}``: a
        RequestError does not cross the actor boundary as itself.
        """
        async with self.lock:
            try:
                store = await self._store(run_dir, tuple(overrides))
                return {"ok": await asyncio.to_thread(getattr(store, method), *args)}
            except RequestError as exc:
                return {"refused": [str(exc), exc.status, exc.reason]}

    async def append(
        self, run_dir: str, overrides: list[str], user_id: str, items: list[str], event_id: str
    ) -> dict:
        """Append an event durably and advance the user's summary (see ProfileStore.append)."""
        return await self._locked("append", run_dir, overrides, user_id, tuple(items), event_id)

    async def latest(self, run_dir: str, overrides: list[str], user_id: str) -> dict:
        """The user's newest summary; answered without waiting when nothing is pending."""
        store = self.stores.get((run_dir, tuple(overrides)))
        if store is not None and store.is_current(user_id):
            return {"ok": store.latest(user_id)}
        return await self._locked("latest", run_dir, overrides, user_id)


def answer(reply: dict) -> Any:
    """The result of an updater call, or the RequestError it refused with."""
    if "refused" in reply:
        message, status, reason = reply["refused"]
        raise RequestError(message, status, reason)
    return reply["ok"]
