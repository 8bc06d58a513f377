"""An actor pool that loses actors: the rows not yet returned go to a fresh pool, a row that
kills every actor it reaches fails the map after a bounded number of pools, and a
constructor that raises fails it at once. (A killed item actor in the real stage:
tests/stages/test_items.py.)"""

import os

import pyarrow as pa
import pytest
import ray
from ray.exceptions import RayActorError

from msr_ray.run.actor_pools import LOSSES_WITHOUT_PROGRESS, PoolMap
from msr_ray.run.blocks import dataset_in_blocks

ROWS = pa.table({"key": [f"r{n}" for n in range(6)]})


class DiesOnce:
    """Ends its own process on row r3 the first time any actor reaches it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, batch: pa.Table) -> pa.Table:
        if "r3" in batch["key"].to_pylist() and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return batch.append_column("pid", pa.array([os.getpid()] * batch.num_rows))


class AlwaysDies:
    def __call__(self, batch: pa.Table) -> pa.Table:
        os._exit(1)


class CannotLoad:
    def __init__(self):
        raise RuntimeError("no such model")

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch


def _pool(fn, **args) -> PoolMap:
    return PoolMap(
        ROWS,
        "key",
        lambda rows: dataset_in_blocks(rows, 1),
        fn,
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=0.5,
        **args,
    )


def test_a_lost_actors_rows_are_mapped_once_by_a_fresh_pool(tmp_path, ray_session):
    pool = _pool(DiesOnce, fn_constructor_kwargs={"marker": str(tmp_path / "died")})
    batches = list(pool.batches())
    keys = [k for b in batches for k in b["key"].to_pylist()]
    assert sorted(keys) == ROWS["key"].to_pylist()  # every row once, none twice
    assert pool.pools_lost == 1
    assert len({p for b in batches for p in b["pid"].to_pylist()}) == 2


def test_a_row_that_kills_every_pool_fails_the_map_after_a_few(ray_session):
    pool = _pool(AlwaysDies)
    with pytest.raises(RayActorError):
        list(pool.batches())
    assert pool.pools_lost == LOSSES_WITHOUT_PROGRESS


def test_a_constructor_that_raises_fails_the_map_at_once(ray_session):
    pool = _pool(CannotLoad)
    with pytest.raises(Exception, match="no such model"):
        list(pool.batches())
    assert pool.pools_lost == 0
