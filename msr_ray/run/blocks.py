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


def group_slices(table: pa.Table, column: str, groups_per_block: int) -> list[pa.Table]:
    """``table`` sorted by ``column`` and cut into slices of ``groups_per_block`` whole
    groups (rows with equal ``column``): a group never straddles two slices."""
    table = table.sort_by([(column, "ascending")])
    keys = table[column].to_pylist()
    starts = [n for n in range(len(keys)) if n == 0 or keys[n] != keys[n - 1]]
    bounds = [*starts[::groups_per_block], len(keys)]
    return [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def dataset_in_groups(table: pa.Table, column: str, groups_per_block: int):
    """A Ray dataset of ``table`` in blocks of whole groups (``group_slices``)."""
    import ray.data

    return ray.data.from_arrow(group_slices(table, column, groups_per_block) or [table])
