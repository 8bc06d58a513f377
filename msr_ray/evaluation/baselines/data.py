"""Item vocabularies, training sequences and scoring prefixes shared by the baselines."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from msr_ray.data.histories import user_sequences

PAD = 0


@dataclass
class SequenceData:
    """Item ids mapped to 1..N (0 pads), each user's train sequence and full sequence."""

    vocab: dict[str, int]
    train: dict[str, list[int]]
    full: dict[str, list[tuple[int, str]]]  # (item index, split) in time order

    def prefix(self, user_id: str, split: str) -> list[int]:
        """Items before the target of ``split``: the train items (valid) or + valid (test)."""
        keep = {"valid": ("train",), "test": ("train", "valid")}[split]
        return [item for item, s in self.full[user_id] if s in keep]


def sequence_data(items: pa.Table, sequences: pa.Table) -> SequenceData:
    """Vocabulary from the items table; sequences in time order per user."""
    vocab = {item: n + 1 for n, item in enumerate(sorted(items["item_id"].to_pylist()))}
    full = {
        user: [(vocab[item], split) for item, split in events]
        for user, events in user_sequences(sequences).items()
    }
    train = {u: [i for i, s in events if s == "train"] for u, events in full.items()}
    return SequenceData(vocab, train, full)


def train_counts(data: SequenceData) -> dict[int, int]:
    """How often each item occurs in the training sequences."""
    counts: dict[int, int] = {}
    for sequence in data.train.values():
        for item in sequence:
            counts[item] = counts.get(item, 0) + 1
    return counts


def eval_groups(samples: pa.Table) -> pa.Table:
    """The valid/test candidate rows of a samples table."""
    return samples.filter(pc.is_in(samples["split"], value_set=pa.array(["valid", "test"])))
