"""Adapter from encoder frames to LM input embeddings: frame stacking + a two-layer MLP.

``stack`` consecutive encoder frames are concatenated along features (``stack * d_model``), then
``Linear -> GELU -> Linear`` maps them to one LM position of width ``lm_hidden``. With 50 encoder
frames per second and ``stack = 4`` the LM sees 12.5 audio positions per second.

:class:`Adapter` is the offline pass (the tail zero-padded to a whole group);
:class:`StreamingAdapter` emits each group as soon as it is complete and equals the offline
pass for any chunking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parley.config import AdapterConfig
from parley.streaming import Streaming

__all__ = ["Adapter", "AdapterStreamState", "StreamingAdapter"]


class Adapter(nn.Module):
    """Stack ``stack`` encoder frames, then ``fc1 -> GELU -> fc2`` to ``lm_hidden``."""

    def __init__(self, d_model: int, stack: int, hidden: int, lm_hidden: int) -> None:
        super().__init__()
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        self.d_model = d_model
        self.stack = stack
        self.fc1 = nn.Linear(stack * d_model, hidden)
        self.fc2 = nn.Linear(hidden, lm_hidden)

    @classmethod
    def from_config(
        cls, cfg: AdapterConfig, d_model: int, lm_hidden: int, seed: int = 0
    ) -> Adapter:
        """A randomly initialised adapter (seeded, global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(d_model, cfg.stack, cfg.hidden, lm_hidden)

    @property
    def lm_hidden(self) -> int:
        """Width of the embeddings handed to the LM."""
        return self.fc2.out_features

    def project(self, groups: Tensor) -> Tensor:
        """The MLP on already stacked ``(n, stack * d_model)`` groups."""
        return self.fc2(F.gelu(self.fc1(groups)))

    def forward(self, frames: Tensor) -> Tensor:
        """``(T, d_model)`` encoder frames to ``(ceil(T / stack), lm_hidden)`` embeddings."""
        if frames.dim() != 2 or frames.shape[1] != self.d_model:
            raise ValueError(
                f"expected frames of shape (T, {self.d_model}), got {tuple(frames.shape)}"
            )
        pad = -frames.shape[0] % self.stack
        frames = F.pad(frames, (0, 0, 0, pad))
        return self.project(frames.reshape(-1, self.stack * self.d_model))


@dataclass
class AdapterStreamState:
    """Per-stream state: encoder frames of the unfinished group (fewer than ``stack``)."""

    pending: Tensor
    emitted: int = 0
    flushed: bool = False


class StreamingAdapter(Streaming):
    """Streaming twin of :class:`Adapter`, sharing its weights."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.state = self._new_state()

    def _new_state(self) -> AdapterStreamState:
        return AdapterStreamState(
            pending=self.adapter.fc1.weight.new_zeros(0, self.adapter.d_model)
        )

    @property
    def frames_emitted(self) -> int:
        """LM positions (adapter outputs) returned so far in this stream."""
        return self.state.emitted

    def reset(self) -> None:
        """Forget the stream; the next push starts a new one."""
        self.state = self._new_state()

    @torch.no_grad()
    def push(self, frames: Tensor) -> Tensor:
        """Add ``(k, d_model)`` encoder frames; return embeddings of every complete group."""
        st, a = self.state, self.adapter
        if st.flushed:
            raise RuntimeError("stream already flushed; call reset() to start a new one")
        if frames.dim() != 2 or frames.shape[1] != a.d_model:
            raise ValueError(
                f"expected frames of shape (k, {a.d_model}), got {tuple(frames.shape)}"
            )
        st.pending = torch.cat([st.pending, frames.to(st.pending)])
        whole = st.pending.shape[0] - st.pending.shape[0] % a.stack
        ready, st.pending = st.pending[:whole], st.pending[whole:]
        return self._emit(ready.reshape(-1, a.stack * a.d_model))

    @torch.no_grad()
    def flush(self) -> Tensor:
        """End the stream: zero-pad the unfinished group (if any) and emit it."""
        st, a = self.state, self.adapter
        if st.flushed or st.pending.shape[0] == 0:
            st.flushed = True
            return st.pending.new_zeros(0, a.lm_hidden)
        group = F.pad(st.pending, (0, 0, 0, a.stack - st.pending.shape[0]))
        st.pending = st.pending[:0]
        st.flushed = True
        return self._emit(group.reshape(1, -1))

    def _emit(self, groups: Tensor) -> Tensor:
        if groups.shape[0] == 0:
            return groups.new_zeros(0, self.adapter.lm_hidden)
        out = self.adapter.project(groups)
        self.state.emitted += out.shape[0]
        return out
