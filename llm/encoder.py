"""Streaming Whisper encoder: block-causal attention over a HuggingFace ``WhisperEncoder``.

The weights live in an unmodified :class:`~transformers.models.whisper.modeling_whisper.WhisperEncoder`
(so real Whisper encoder checkpoints load as they are); the forward passes here are our own, in
float32, reading that module's parameters:

- ``conv1`` (kernel 3, padding 1) + GELU, ``conv2`` (kernel 3, stride 2, padding 1) + GELU, so
  ``T`` mel frames give ``ceil(T / 2)`` encoder frames (50 per second);
- plus the position table ``embed_positions``;
- pre-LN layers (``q = q_proj(x) * head_dim**-0.5`` before the product, as HF does), then the
  final ``layer_norm``.

Attention is block-causal. With ``block(x) = x // block_frames``, encoder frame ``i`` attends to
frame ``j`` iff ``block(j) <= block(i)`` and ``block(i) - block(j) < context_blocks``: a frame sees
its whole block and the ``context_blocks - 1`` blocks before it, never the future beyond its own
block. With one block spanning the input, this is Whisper's ordinary bidirectional forward.

:class:`BlockCausalEncoder` is the offline twin (whole mel at once); :class:`StreamingEncoder`
runs the same computation block by block with carried state, and its concatenated outputs equal
the offline ones for any chunking of the input.

Positions past 30 s: the table has ``max_source_positions`` rows (1500 in Whisper), and encoder
frame ``t`` takes row ``t mod max_source_positions``: positions are cyclic, so a stream can run
forever. Config validation guarantees ``block_frames * context_blocks <= max_source_positions``,
so the frames of one attention window all have distinct positions; the wrap shows up only as a
jump inside some windows, which a model fine-tuned for streaming learns to read.

Tuned top layers: the LM's path may read its own copies of the top ``k`` layers and the final
norm (:meth:`BlockCausalEncoder.add_tuned_copy`), trained with the LM to hear through noise,
while the original layers stay Whisper's: the turn heads and the speech units were fitted on
those. Both paths share everything below the branch, and the stream computes them together.

Lookahead: encoder frame ``i`` needs ``conv1`` outputs up to ``2i + 1``, which need mel frames up
to ``2i + 2``. A block's last frame therefore needs one mel frame (10 ms) past the block's own
``2 * block_frames`` mel frames; the stream holds the block back until that frame arrives.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder, WhisperEncoderLayer

from parley.config import EncoderConfig
from parley.errors import ConfigError
from parley.streaming import Streaming

__all__ = [
    "BlockCausalEncoder",
    "EncoderStreamState",
    "StreamingEncoder",
    "block_causal_mask",
    "whisper_config_from",
]


def whisper_config_from(enc: EncoderConfig, n_mels: int) -> WhisperConfig:
    """A ``WhisperConfig`` with ``enc``'s encoder shape and a minimal, unused decoder."""
    return WhisperConfig(
        num_mel_bins=n_mels,
        d_model=enc.d_model,
        encoder_layers=enc.layers,
        encoder_attention_heads=enc.heads,
        encoder_ffn_dim=enc.ffn_dim,
        max_source_positions=enc.max_source_positions,
        # Only the encoder is ever built; the decoder fields just have to be valid.
        decoder_layers=1,
        decoder_attention_heads=1,
        decoder_ffn_dim=8,
        max_target_positions=16,
        # Every PretrainedConfig takes this keyword, though the subclasses do not list it.
        attn_implementation="eager",  # type: ignore[call-arg]
    )


def _mask_rows_cols(
    queries: Tensor, keys: Tensor, block_frames: int, context_blocks: int
) -> Tensor:
    bq = (queries // block_frames)[:, None]
    bk = (keys // block_frames)[None, :]
    return (bk <= bq) & (bq - bk < context_blocks)


def block_causal_mask(n_frames: int, block_frames: int, context_blocks: int) -> Tensor:
    """Boolean ``(n_frames, n_frames)`` mask: ``[i, j]`` is True iff frame i may attend to j."""
    idx = torch.arange(n_frames)
    return _mask_rows_cols(idx, idx, block_frames, context_blocks)


def _heads(attn: nn.Module, x: Tensor, proj: nn.Linear, scale: float = 1.0) -> Tensor:
    """``(n, d_model)`` through ``proj`` to ``(heads, n, head_dim)``."""
    y = proj(x)
    if scale != 1.0:
        y = y * scale
    return y.view(x.shape[0], attn.num_heads, attn.head_dim).transpose(0, 1)


def _attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    """Softmax attention per head; ``q`` is pre-scaled, ``bias`` is additive (0 or -inf)."""
    scores = q @ k.transpose(-1, -2)
    if bias is not None:
        scores = scores + bias
    out = scores.softmax(dim=-1) @ v
    return out.transpose(0, 1).reshape(q.shape[1], -1)


def _ffn(layer: WhisperEncoderLayer, x: Tensor) -> Tensor:
    h = layer.activation_fn(layer.fc1(layer.final_layer_norm(x)))
    return x + layer.fc2(h)


class BlockCausalEncoder(nn.Module):
    """A Whisper encoder with block-causal attention; :meth:`forward` is the offline pass.

    ``whisper`` is used in float32 and eval mode (it is converted in place). Dropout is not
    applied: this runs inference and the offline reference for streaming.
    """

    def __init__(self, whisper: WhisperEncoder, block_frames: int, context_blocks: int) -> None:
        super().__init__()
        positions = whisper.embed_positions.num_embeddings
        if block_frames < 1 or context_blocks < 1:
            raise ConfigError("block_frames and context_blocks must be >= 1")
        if block_frames * context_blocks > positions:
            raise ConfigError(
                f"block_frames * context_blocks ({block_frames} * {context_blocks}) exceeds the "
                f"encoder's {positions} positions: one attention window must fit in the table"
            )
        self.whisper = whisper.float().eval()
        self.block_frames = block_frames
        self.context_blocks = context_blocks
        self.tuned = nn.ModuleList()
        self.tuned_norm: nn.LayerNorm | None = None

    def add_tuned_copy(self, layers: int) -> None:
        """Give the LM's path its own copies of the top ``layers`` layers and the final norm
        (equal to the originals until they are trained)."""
        total = len(self.whisper.layers)
        if not 1 <= layers <= total:
            raise ConfigError(f"tuned layers must be 1..{total}, got {layers}")
        self.tuned = nn.ModuleList(copy.deepcopy(layer) for layer in self.whisper.layers[-layers:])
        self.tuned_norm = copy.deepcopy(self.whisper.layer_norm)

    def tuned_module(self) -> nn.ModuleDict:
        """The tuned layers and norm as one module (sharing their parameters): what a
        checkpoint stores in ``encoder_tuned.safetensors``."""
        if self.tuned_norm is None:
            raise RuntimeError("this encoder has no tuned layers")
        return nn.ModuleDict({"layers": self.tuned, "norm": self.tuned_norm})

    @property
    def branch_at(self) -> int:
        """Index of the first layer the LM's path has a tuned copy of (all layers: none)."""
        return len(self.whisper.layers) - len(self.tuned)

    @classmethod
    def from_config(cls, enc: EncoderConfig, n_mels: int, seed: int = 0) -> BlockCausalEncoder:
        """A randomly initialised encoder of ``enc``'s shape (seeded, global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            whisper = WhisperEncoder(whisper_config_from(enc, n_mels))
        return cls(whisper, enc.block_frames, enc.context_blocks)

    @property
    def n_mels(self) -> int:
        """Mel bins the encoder expects."""
        return self.whisper.conv1.in_channels

    @property
    def d_model(self) -> int:
        """Width of the encoder frames."""
        return self.whisper.conv1.out_channels

    @property
    def max_source_positions(self) -> int:
        """Rows of the position table; positions wrap around it."""
        return self.whisper.embed_positions.num_embeddings

    def positions(self, start: int, count: int) -> Tensor:
        """Position embeddings of encoder frames ``start .. start + count - 1`` (cyclic)."""
        table = self.whisper.embed_positions.weight
        idx = torch.arange(start, start + count, device=table.device) % table.shape[0]
        return table[idx]

    def forward(self, mel: Tensor) -> Tensor:
        """Encode a whole ``(n_mels, T)`` log-mel to ``(ceil(T / 2), d_model)`` frames."""
        return self.forward_both(mel)[0]

    def forward_both(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        """The frozen frames and the LM's (the same tensor without tuned layers)."""
        shared = self.below_branch(mel)
        frozen = self.run_layers(shared, self.whisper.layers[self.branch_at :])
        frozen = self.whisper.layer_norm(frozen)
        return frozen, (self.tuned_frames(shared) if len(self.tuned) else frozen)

    def below_branch(self, mel: Tensor) -> Tensor:
        """The residual stream entering the first tuned layer (what training caches)."""
        if mel.dim() != 2 or mel.shape[0] != self.n_mels or mel.shape[1] == 0:
            raise ValueError(
                f"expected mel of shape ({self.n_mels}, T >= 1), got {tuple(mel.shape)}"
            )
        x = self.front(mel)
        x = x + self.positions(0, x.shape[0])
        return self.run_layers(x, self.whisper.layers[: self.branch_at])

    def tuned_frames(self, shared: Tensor) -> Tensor:
        """The LM's frames from :meth:`below_branch`'s output, through the tuned copies."""
        if self.tuned_norm is None:
            raise RuntimeError("this encoder has no tuned layers")
        return self.tuned_norm(self.run_layers(shared, self.tuned))

    def run_layers(self, x: Tensor, layers) -> Tensor:
        """``layers`` over ``(T, d_model)`` with block-causal attention (no final norm)."""
        for layer in layers:
            x = x + self._offline_attention(layer, x)
            x = _ffn(layer, x)
        return x

    def front(self, mel: Tensor) -> Tensor:
        """The convolutional front end alone: ``(n_mels, T)`` to ``(ceil(T / 2), d_model)``
        frames without positions."""
        w = self.whisper
        x = F.gelu(w.conv1(mel.float()[None]))
        return F.gelu(w.conv2(x))[0].transpose(0, 1)

    def encode_windows(self, windows: Tensor) -> Tensor:
        """Encode ``(n, W, d_model)`` front-end frames as ``n`` independent windows, each
        at positions ``0 .. W - 1`` with full attention inside it: what a frame becomes
        here depends on the audio around it, never on where in the stream it came."""
        w = self.whisper
        x = windows + self.positions(0, windows.shape[1])
        for layer in w.layers:
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            n, width, d = h.shape

            def split(t: Tensor, attn=attn, n=n, width=width) -> Tensor:
                return t.view(n, width, attn.num_heads, attn.head_dim).transpose(1, 2)

            q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
            out = F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)
            x = x + attn.out_proj(out.transpose(1, 2).reshape(n, width, d))
            x = _ffn(layer, x)
        return w.layer_norm(x)

    def _offline_attention(self, layer: WhisperEncoderLayer, x: Tensor) -> Tensor:
        attn = layer.self_attn
        h = layer.self_attn_layer_norm(x)
        q = _heads(attn, h, attn.q_proj, attn.scaling)
        k = _heads(attn, h, attn.k_proj)
        v = _heads(attn, h, attn.v_proj)
        n, bf, cb = x.shape[0], self.block_frames, self.context_blocks
        # Queries go context_blocks blocks at a time against only the keys their window can
        # reach, so memory stays linear in the input length rather than quadratic.
        span = bf * cb
        outs = []
        for q_lo in range(0, n, span):
            q_hi = min(n, q_lo + span)
            k_lo = max(0, (q_lo // bf - cb + 1) * bf)
            allowed = _mask_rows_cols(
                torch.arange(q_lo, q_hi), torch.arange(k_lo, q_hi), bf, cb
            ).to(x.device)
            bias = None
            if not bool(allowed.all()):
                bias = torch.zeros(allowed.shape, device=x.device).masked_fill(~allowed, -math.inf)
            outs.append(_attend(q[:, q_lo:q_hi], k[:, k_lo:q_hi], v[:, k_lo:q_hi], bias))
        return attn.out_proj(torch.cat(outs))


@dataclass
class EncoderStreamState:
    """Everything one stream carries between pushes; all tensors have a bounded size.

    ``mel_tail``: mel frames ``conv1`` still needs (left context and not-yet-centred frames; a
    zero column stands for the padding before frame 0). ``conv1_tail``: ``conv1`` outputs not yet
    consumed by the stride-2 ``conv2`` (likewise). ``pending``: encoder frames of the unfinished
    block. ``keys``/``values``: per layer, a ring of ``context_blocks`` block slots of shape
    ``(heads, context_blocks * block_frames, head_dim)``: the ``context_blocks - 1`` earlier
    blocks and the slot the current block is written into. ``key_bias``: additive mask over the
    ring while some slots were never filled (``None`` once all are).
    """

    mel_tail: Tensor
    conv1_tail: Tensor
    pending: Tensor
    keys: list[Tensor]
    values: list[Tensor]
    key_bias: Tensor | None
    frames_in: int = 0  # encoder frames made by the convs so far
    blocks_done: int = 0
    frames_emitted: int = 0
    flushed: bool = False


class StreamingEncoder(Streaming):
    """Block-by-block twin of :class:`BlockCausalEncoder`, sharing its weights.

    ``push`` mel frames as they come; it returns the encoder frames of every completed block.
    ``flush`` ends the stream (zero right padding, partial last block) and ``reset`` starts a new
    one. The work per block is constant: the caches hold one attention window at most.
    """

    def __init__(self, model: BlockCausalEncoder) -> None:
        self.model = model
        self.state = self._new_state()

    # Normal tensors even when reset inside inference_mode: the ring is updated in place, and
    # a later push outside inference_mode may not write into inference tensors.
    @torch.inference_mode(False)
    def _new_state(self) -> EncoderStreamState:
        m = self.model
        p = m.whisper.conv1.weight
        attn = m.whisper.layers[0].self_attn
        window = m.block_frames * m.context_blocks
        kv_shape = (attn.num_heads, window, attn.head_dim)
        n_layers = len(m.whisper.layers) + len(m.tuned)
        return EncoderStreamState(
            mel_tail=p.new_zeros(m.n_mels, 1),
            conv1_tail=p.new_zeros(m.d_model, 1),
            pending=p.new_zeros(0, m.d_model),
            keys=[p.new_zeros(kv_shape) for _ in range(n_layers)],
            values=[p.new_zeros(kv_shape) for _ in range(n_layers)],
            key_bias=p.new_full((window,), -math.inf),
        )

    @property
    def frames_emitted(self) -> int:
        """Encoder frames returned so far in this stream."""
        return self.state.frames_emitted

    def reset(self) -> None:
        """Forget the stream; the next push starts a new one."""
        self.state = self._new_state()

    def push(self, mel_frames: Tensor) -> Tensor:
        """Add ``(n_mels, k)`` mel frames; return ``(m, d_model)`` frames of completed blocks."""
        return self.push_both(mel_frames)[0]

    def flush(self) -> Tensor:
        """End the stream: pad with zeros as the offline convs do and emit the partial block."""
        return self.flush_both()[0]

    @torch.no_grad()
    def push_both(self, mel_frames: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`push`, returning the frozen frames and the LM's (see ``forward_both``)."""
        st = self.state
        if st.flushed:
            raise RuntimeError("stream already flushed; call reset() to start a new one")
        if mel_frames.dim() != 2 or mel_frames.shape[0] != self.model.n_mels:
            raise ValueError(
                f"expected mel frames of shape ({self.model.n_mels}, k), got {tuple(mel_frames.shape)}"
            )
        st.mel_tail = torch.cat([st.mel_tail, mel_frames.to(st.mel_tail)], dim=1)
        return self._advance(final=False)

    @torch.no_grad()
    def flush_both(self) -> tuple[Tensor, Tensor]:
        """:meth:`flush`, returning the frozen frames and the LM's."""
        st = self.state
        if st.flushed:
            empty = st.pending.new_zeros(0, self.model.d_model)
            return empty, empty
        out = self._advance(final=True)
        st.flushed = True
        return out

    def _advance(self, final: bool) -> tuple[Tensor, Tensor]:
        st, w = self.state, self.model.whisper
        if final:  # the right padding of conv1
            st.mel_tail = F.pad(st.mel_tail, (0, 1))
        if st.mel_tail.shape[1] >= 3:
            c1 = F.gelu(F.conv1d(st.mel_tail[None], w.conv1.weight, w.conv1.bias))[0]
            # conv1 has now centred every frame but the last; keep that one and its left neighbour.
            st.mel_tail = st.mel_tail[:, -2:]
            st.conv1_tail = torch.cat([st.conv1_tail, c1], dim=1)
        if final:  # the right padding of conv2 (zeros after GELU, as in the offline pass)
            st.conv1_tail = F.pad(st.conv1_tail, (0, 1))
        if st.conv1_tail.shape[1] >= 3:
            e = F.gelu(F.conv1d(st.conv1_tail[None], w.conv2.weight, w.conv2.bias, stride=2))[0]
            st.conv1_tail = st.conv1_tail[:, 2 * e.shape[1] :]
            e = e.transpose(0, 1) + self.model.positions(st.frames_in, e.shape[1])
            st.frames_in += e.shape[0]
            st.pending = torch.cat([st.pending, e])
        bf = self.model.block_frames
        outs = []
        while st.pending.shape[0] >= bf or (final and st.pending.shape[0] > 0):
            block, st.pending = st.pending[:bf], st.pending[bf:]
            outs.append(self._block(block))
        if not outs:
            empty = st.pending.new_zeros(0, self.model.d_model)
            return empty, empty
        frozen = torch.cat([o[0] for o in outs])
        tuned = frozen if not len(self.model.tuned) else torch.cat([o[1] for o in outs])
        st.frames_emitted += frozen.shape[0]
        return frozen, tuned

    def _block(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Run one (possibly partial, last) block through the layers, updating the K/V ring;
        the frozen frames and the LM's."""
        st, m = self.state, self.model
        bf, n = m.block_frames, x.shape[0]
        lo = (st.blocks_done % m.context_blocks) * bf
        bias = st.key_bias
        if bias is not None:
            bias[lo : lo + bf] = 0.0
            if not bool(torch.isinf(bias).any()):
                bias = st.key_bias = None
        if n < bf:
            # The slot's tail still holds a block that fell out of the window.
            bias = x.new_zeros(m.block_frames * m.context_blocks) if bias is None else bias.clone()
            bias[lo + n : lo + bf] = -math.inf
        frozen = list(m.whisper.layers)
        shared = self._layers(x, frozen[: m.branch_at], 0, lo, bias)
        out = m.whisper.layer_norm(
            self._layers(shared, frozen[m.branch_at :], m.branch_at, lo, bias)
        )
        tuned = out
        if m.tuned_norm is not None:
            tuned = m.tuned_norm(self._layers(shared, m.tuned, len(frozen), lo, bias))
        st.blocks_done += 1
        return out, tuned

    def _layers(self, x: Tensor, layers, ring: int, lo: int, bias: Tensor | None) -> Tensor:
        """``layers`` over one block; their K/V rings start at ring index ``ring``."""
        st, n = self.state, x.shape[0]
        for i, layer in enumerate(layers, start=ring):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = _heads(attn, h, attn.q_proj, attn.scaling)
            # Ring order differs from time order; softmax does not care, and positions are
            # already part of each key.
            st.keys[i][:, lo : lo + n] = _heads(attn, h, attn.k_proj)
            st.values[i][:, lo : lo + n] = _heads(attn, h, attn.v_proj)
            x = x + attn.out_proj(_attend(q, st.keys[i], st.values[i], bias))
            x = _ffn(layer, x)
        return x
