"""The Scorer deployment: the run's MLLM with its adapter merged, scoring batched requests.

The ingress (``serving/app.py``) sends it each request's candidate rows with the run they
were built from, and retries a call once when the replica it reached dies: scoring is
idempotent, so a killed replica costs its in-flight requests a second call, not an error.
Replicas autoscale on ongoing requests (see the serve config) and hold the model, so the
ingress stays light. A replica loads its app's run at start and a run it is asked for
later on first use (``reconfigure`` moved the ingress to it), keeping the newest two, so
requests admitted before a switch are scored with the model of their own run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from ray import serve

from msr_ray.config import ServeConfig

log = logging.getLogger(__name__)
# Runs a replica keeps loaded: the one served now and the one before a switch.
LOADED_RUNS = 2
RunKey = tuple[str, tuple[str, ...]]


def run_key(settings: ServeConfig) -> RunKey:
    """What identifies the model a request must be scored with: run directory, overrides."""
    return settings.run_dir, tuple(settings.overrides)


def load_scorer(run_dir: str, overrides: list[str]) -> Any:
    """The run's recommender MLLM with the trained adapter merged."""
    from msr_ray.method.recommender import Recommender
    from msr_ray.run.method_inputs import adapter_dir, trained_config
    from msr_ray.run.rundir import RunDir

    run = RunDir(run_dir)
    adapter = adapter_dir(run)  # first: a run without a trained adapter cannot serve
    return Recommender.load(trained_config(run, overrides), adapter)


@serve.deployment(
    name="Scorer", max_ongoing_requests=8, ray_actor_options={"num_cpus": 1, "num_gpus": 0}
)
class Scorer:
    """One replica: P(yes) of every candidate row it is sent, requests batched together."""

    def __init__(self, args: dict[str, Any]):
        settings = ServeConfig.model_validate(args)
        self.loaded: OrderedDict[RunKey, Any] = OrderedDict()
        self.loaded[run_key(settings)] = load_scorer(settings.run_dir, settings.overrides)
        self.loading: dict[RunKey, asyncio.Lock] = {}
        self.batching = (settings.max_batch_requests, settings.batch_wait_s)
        self._apply(self.batching)

    def _apply(self, batching: tuple[int, float]) -> None:
        self._score.set_max_batch_size(batching[0])
        self._score.set_batch_wait_timeout_s(batching[1])
        self.batching = batching

    async def _model(self, key: RunKey) -> Any:
        """The loaded model of ``key``'s run, loading it (once) off the event loop."""
        if key not in self.loaded:
            async with self.loading.setdefault(key, asyncio.Lock()):
                if key not in self.loaded:
                    log.info("loading %s", key[0])
                    self.loaded[key] = await asyncio.to_thread(load_scorer, key[0], list(key[1]))
                    while len(self.loaded) > LOADED_RUNS:
                        self.loaded.popitem(last=False)
        self.loaded.move_to_end(key)
        return self.loaded[key]

    async def score(
        self, key: RunKey, batching: tuple[int, float], rows: list[dict[str, Any]]
    ) -> list[float]:
        """P(yes) of every row, scored with ``key``'s run; ``batching`` is the ingress's
        (max requests per batch, wait) and applies from this call on."""
        key = (key[0], tuple(key[1]))
        if tuple(batching) != self.batching:
            self._apply((int(batching[0]), float(batching[1])))
        return await self._score((await self._model(key), rows))

    # Serve's decorator needs constants; ``_apply`` sets the served config's values.
    @serve.batch(
        max_batch_size=ServeConfig.model_fields["max_batch_requests"].default,
        batch_wait_timeout_s=ServeConfig.model_fields["batch_wait_s"].default,
    )
    async def _score(self, work: list[tuple[Any, list[dict[str, Any]]]]) -> list[list[float]]:
        """P(yes) of every candidate of the batched requests, off the event loop; each
        request is scored with its own run's model."""
        result: list[list[float]] = [[] for _ in work]
        models = {id(model): model for model, _ in work}
        for key, model in models.items():
            mine = [n for n, (m, _) in enumerate(work) if id(m) == key]
            scores = await asyncio.to_thread(model.score, [r for n in mine for r in work[n][1]])
            start = 0
            for n in mine:
                result[n] = scores[start : start + len(work[n][1])]
                start += len(work[n][1])
        return result
