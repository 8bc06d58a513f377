"""SASRec (self-attentive) and GRU4Rec (recurrent) next-item models sharing item embeddings."""

from __future__ import annotations

import torch
from torch import nn

from msr_ray.evaluation.baselines.data import PAD


class SASRec(nn.Module):
    """Causal transformer over the item sequence (Kang & McAuley, 2018)."""

    def __init__(
        self, num_items: int, hidden: int, layers: int, heads: int, dropout: float, max_len: int
    ):
        super().__init__()
        self.items = nn.Embedding(num_items + 1, hidden, padding_idx=PAD)
        self.positions = nn.Embedding(max_len, hidden)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, hidden * 4, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position (B, L, H); position t sees items <= t."""
        length = sequence.shape[1]
        positions = torch.arange(length, device=sequence.device)
        # Padding is zeroed rather than masked (as in the reference SASRec): with left
        # padding a padded query under a causal mask would see no key at all and turn NaN.
        keep = (sequence != PAD).unsqueeze(-1)
        x = self.dropout(self.items(sequence) + self.positions(positions)) * keep
        causal = torch.ones(length, length, dtype=torch.bool, device=sequence.device).triu(1)
        x = self.encoder(x, mask=causal, is_causal=True)
        return self.norm(x) * keep


class GRU4Rec(nn.Module):
    """GRU over the item sequence (Hidasi et al., 2016), full-softmax next-item loss."""

    def __init__(self, num_items: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.items = nn.Embedding(num_items + 1, hidden, padding_idx=PAD)
        self.gru = nn.GRU(
            hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        output, _ = self.gru(self.dropout(self.items(sequence)))
        return output


def sequence_model(
    kind: str,
    num_items: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    dropout: float,
    max_len: int,
) -> nn.Module:
    """An untrained ``sasrec`` or ``gru4rec`` over ``num_items`` items (heads and max_len:
    SASRec only)."""
    if kind == "sasrec":
        return SASRec(num_items, hidden_size, num_layers, num_heads, dropout, max_len)
    if kind == "gru4rec":
        return GRU4Rec(num_items, hidden_size, num_layers, dropout)
    raise ValueError(f"no sequence model named {kind!r} (sasrec, gru4rec)")


def item_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Scores of every item for hidden states (tied to the item embeddings)."""
    return hidden @ model.items.weight.T
