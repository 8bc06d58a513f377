"""Readers: each turns one input format into items + interactions tables and a quarantine."""

from __future__ import annotations

from msr_ray.data.readers.amazon import read_amazon
from msr_ray.data.readers.common import RawDataset
from msr_ray.data.readers.generic import read_generic
from msr_ray.data.readers.microlens import read_microlens
from msr_ray.data.readers.movielens import read_movielens

READERS = {
    "csv": read_generic,
    "parquet": read_generic,
    "movielens": read_movielens,
    "microlens": read_microlens,
    "amazon": read_amazon,
}

__all__ = ["READERS", "RawDataset"]
