"""Frozen bottom layers computed once: their output is cached per sequence and replayed.

When fine-tuning trains only the top decoder layers (``train.trainable: top-layers``),
the bottom layers' weights never change, so the hidden state they hand to the first
trained layer is the same at every epoch for the same tokens. ``FrozenLayerCache``
records it the first time a batch runs (the bottom layers run as usual and a hook keeps
the last frozen layer's output, per sequence) and, for a batch whose sequences are all
recorded, replaces the bottom layers with stubs: the last frozen layer returns the
recorded states (left-padded to the batch's layout) and none of them computes anything.
The trained layers, the loss and the gradient are those of the uncached step (the test
compares them); a step then costs the top layers alone.

A sequence is keyed by its token ids: a prefix by its own ids, a candidate row by its
prefix's ids and its own (its states depend on the prefix it attends to). The stubs
still write zero keys and values into the KV cache for their layers, so that the cache
keeps the lengths the model reads its masks from; nothing reads those zeros, since no
real bottom layer runs in that call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

Key = tuple[int, ...]


class FrozenLayerCache:
    """The recorded outputs of ``layers`` (the frozen bottom decoder layers, in order)."""

    def __init__(self, layers: Sequence[torch.nn.Module], num_key_value_heads: int, head_dim: int):
        if not layers:
            raise ValueError("a frozen-layer cache needs at least one frozen layer")
        self.layers = list(layers)
        self.kv_shape = (num_key_value_heads, head_dim)
        self.states: dict[Key, torch.Tensor] = {}
        self.replayed = self.recorded = 0

    @classmethod
    def for_model(cls, model, frozen: int) -> FrozenLayerCache:
        """The cache of ``model``'s bottom ``frozen`` decoder layers."""
        config = model.get_decoder().config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(model.get_decoder().layers[:frozen], kv_heads, head_dim)

    @contextmanager
    def call(self, keys: Sequence[Key], widths: Sequence[int], width: int) -> Iterator[None]:
        """Around one forward pass over a left-padded batch of ``width`` tokens whose row
        b is sequence ``keys[b]`` with ``widths[b]`` real tokens: replay it when every
        row is recorded, else run the layers and record every row."""
        if all(key in self.states for key in keys):
            self.replayed += 1
            with self._replaying(keys, widths, width):
                yield
        else:
            self.recorded += 1
            with self._recording(keys, widths):
                yield

    @contextmanager
    def _recording(self, keys, widths) -> Iterator[None]:
        def keep(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            for key, n, row in zip(keys, widths, hidden.detach(), strict=True):
                self.states[key] = row[row.shape[0] - n :].clone()

        handle = self.layers[-1].register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def _replaying(self, keys, widths, width) -> Iterator[None]:
        last = len(self.layers) - 1

        def stub(index: int):
            def forward(hidden_states, *args, **kwargs):
                cache = kwargs.get("cache", kwargs.get("past_key_values"))
                if cache is not None:
                    zeros = hidden_states.new_zeros(()).expand(
                        hidden_states.shape[0], self.kv_shape[0], hidden_states.shape[1],
                        self.kv_shape[1],
                    )  # fmt: skip
                    cache.update(zeros, zeros, index)
                if index < last:
                    return hidden_states
                out = hidden_states.new_zeros(hidden_states.shape)
                for b, (key, n) in enumerate(zip(keys, widths, strict=True)):
                    out[b, width - n :] = self.states[key].to(out.dtype)
                return out

            return forward

        for index, layer in enumerate(self.layers):
            layer.forward = stub(index)
        try:
            yield
        finally:
            for layer in self.layers:
                del layer.forward  # the class's forward again
