"""Ray Data datasets built from tables the driver already holds."""

from __future__ import annotations

import pyarrow as pa


def dataset_in_blocks(table: pa.Table, rows_per_block: int):
    """A Ray dataset of ``table`` in blocks of ``rows_per_block`` rows.

    Blocks are made here, so no read or repartition task has to be scheduled: an actor
    pool that takes every CPU of a small node (2 actors x 1 CPU on 2 cores) cannot starve
    the operators upstream of it, and every actor of the pool gets blocks to work on.
    """
    import ray.data

    slices = [
        table.slice(start, rows_per_block) for start in range(0, table.num_rows, rows_per_block)
    ]
    return ray.data.from_arrow(slices or [table])


def dataset_in_groups(table: pa.Table, column: str, groups_per_block: int):
    """A Ray dataset of ``table`` in blocks of whole groups (rows with equal ``column``).

    Rows are sorted by ``column`` first, so a group never straddles two blocks.
    """
    import ray.data

    table = table.sort_by([(column, "ascending")])
    keys = table[column].to_pylist()
    starts = [n for n in range(len(keys)) if n == 0 or keys[n] != keys[n - 1]]
    bounds = [*starts[::groups_per_block], len(keys)]
    slices = [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    return ray.data.from_arrow(slices or [table])
