"""Rows that were rejected, with where they came from and why: nothing is dropped silently."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from msr_ray.data.schemas import QUARANTINE


@dataclass
class Quarantine:
    """Collects rejected rows; ``counts`` says how many per reason."""

    rows: list[dict] = field(default_factory=list)

    def add(
        self, table: str, file: str, row: int | None, column: str | None, reason: str, value=None
    ) -> None:
        """Record one rejected row of ``table`` (items / interactions) and why."""
        text = None if value is None else str(value)[:500]
        self.rows.append(
            {
                "table": table,
                "file": file,
                "row": row,
                "column": column,
                "reason": reason,
                "value": text,
            }
        )

    def counts(self, table: str | None = None) -> dict[str, int]:
        """Rejected rows per reason (of one table, or of all)."""
        reasons = (r["reason"] for r in self.rows if table is None or r["table"] == table)
        return dict(sorted(Counter(reasons).items()))

    def describe(self, table: str, top: int = 3) -> str:
        """The ``top`` reasons of ``table`` with counts and one example row each."""
        counts = Counter(r["reason"] for r in self.rows if r["table"] == table)
        parts = []
        for reason, count in counts.most_common(top):
            example = next(r for r in self.rows if r["table"] == table and r["reason"] == reason)
            parts.append(
                f"{reason} x{count} (e.g. {example['file']} row {example['row']}, "
                f"column '{example['column']}': {example['value']!r})"
            )
        return "; ".join(parts)

    def __len__(self) -> int:
        return len(self.rows)

    def to_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=QUARANTINE)
