"""Ray Data actor-pool maps that outlive a lost actor.

Ray Data hands its map actors their transformer and context as object-store references and
lets Ray restart them (``max_restarts=-1``); Ray Core then logs on the driver's console, for
each such actor, that a restart fails once those objects are lost (ray-project/ray#53727).
Here the pool's actors are never restarted by Ray (``max_restarts=0``): when one is lost (its
process killed, its node gone), the dataset fails, and the rows whose results had not come
back are mapped again by a fresh pool, with fresh references. Results already received are
never recomputed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

# A pool lost this many times in a row without returning a batch fails the stage: an actor
# that dies on the same input every time is a bug to report, not a fault to outlast.
LOSSES_WITHOUT_PROGRESS = 3


class PoolMap:
    """``fn`` mapped over ``rows`` by an actor pool, re-run over the rows not yet returned
    each time the pool loses an actor. ``key`` names the column that identifies a row's
    result (a batch returns whole keys); ``dataset_of`` turns rows into the dataset to map;
    ``map_args`` go to ``map_batches``. ``pools_lost`` counts the re-runs."""

    def __init__(
        self,
        rows: pa.Table,
        key: str,
        dataset_of: Callable[[pa.Table], Any],
        fn: type,
        **map_args: Any,
    ):
        self.rows, self.key, self.dataset_of = rows, key, dataset_of
        self.fn, self.map_args = fn, {**map_args, "max_restarts": 0}
        self.pools_lost = 0

    def batches(self) -> Iterator[pa.Table]:
        """Every result batch, once; raises when the pool fails for another reason, or is
        lost ``LOSSES_WITHOUT_PROGRESS`` times in a row."""
        from ray.exceptions import RayActorError

        remaining, losses_in_a_row = self.rows, 0
        while remaining.num_rows:
            returned: list[pa.Array] = []
            with warnings.catch_warnings():
                # Ray 2.60 deprecates extra remote args for 2.64 but has no named
                # parameter for `max_restarts` yet; Ray Data's own code comment gives this
                # call as the way to turn restarts off.
                warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
                mapped = self.dataset_of(remaining).map_batches(self.fn, **self.map_args)
            try:
                for batch in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
                    returned.append(batch[self.key].combine_chunks())
                    losses_in_a_row = 0
                    yield batch
                return
            except RayActorError as lost:
                if lost.actor_init_failed:
                    raise
                losses_in_a_row += 1
                self.pools_lost += 1
                if losses_in_a_row >= LOSSES_WITHOUT_PROGRESS:
                    raise
                if returned:
                    done = pa.concat_arrays(returned)
                    remaining = remaining.filter(
                        pc.invert(pc.is_in(remaining[self.key], value_set=done))
                    )
                logger.warning(
                    "%s: an actor of the pool was lost (%s); mapping the %d rows not yet "
                    "returned with a fresh pool",
                    getattr(self.fn, "__name__", self.fn),
                    type(lost).__name__,
                    remaining.num_rows,
                )
