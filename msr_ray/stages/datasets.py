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
