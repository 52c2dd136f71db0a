"""Causal token vocoder: single-codebook speech token ids to PCM, offline or streamed.

The shape follows Vocos / WavTokenizer: embed the tokens, mix them with one input conv that
sees ``lookahead`` future and a few past tokens, run causal ConvNeXt blocks, then predict
``frames_per_token`` STFT frames per token (log-magnitude and phase) and invert them by
windowed overlap-add. Everything after the input conv is causal, so a stream has to wait
for ``lookahead`` tokens only, plus the iSTFT overlap: a sample is final once every frame
that covers it has been added.

Output alignment: frame ``j`` of the stream starts at sample ``j * hop`` of the overlap-add
signal, whose first ``n_fft - hop`` samples are covered by fewer frames than the rest. We
drop those (they only exist because the frames are not centered) and keep the partially
covered tail at the end instead, so ``T`` tokens give exactly ``T * samples_per_token``
samples and the tail, normalized by its partial envelope, fades the stream out at flush.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parley.config import CodecConfig
from parley.streaming import Streaming

INPUT_PAST_TOKENS = 2
"""Past tokens the input conv sees besides the current one and the lookahead."""

MLP_RATIO = 3
"""Hidden width of each ConvNeXt block's pointwise MLP, in multiples of ``dim``."""

ENVELOPE_FLOOR = 0.1
"""The window envelope is floored at this fraction of its steady value: the last samples of
the tail are covered by window edges only, and dividing by their near-zero squares would
blow the stream's last milliseconds up instead of fading them out."""

TokenIds = Tensor | np.ndarray | Sequence[int]


def seeded_generator(seed: int, salt: int = 0) -> torch.Generator:
    """A CPU generator for ``seed``; ``salt`` keeps parts built from one seed independent."""
    return torch.Generator().manual_seed((seed * 1_000_003 + salt) % (2**63))


@torch.no_grad()
def init_random_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Fill ``module``'s parameters from ``generator``, in registration order.

    Linear and conv weights are N(0, 1/fan_in), so activations keep unit scale whatever the
    width; embeddings N(0, 1); norms identity; biases zero.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear | nn.Conv1d):
            fan_in = sub.weight[0].numel()
            sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) / fan_in**0.5)
            if sub.bias is not None:
                sub.bias.zero_()
        elif isinstance(sub, nn.Embedding):
            sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator))
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def check_ids(ids: TokenIds, codebook_size: int) -> Tensor:
    """``ids`` as a 1-D int64 tensor; anything else, or an id outside the codebook, is a
    ValueError that says which."""
    if isinstance(ids, Tensor):
        t = ids.detach().cpu()
    else:
        arr = np.asarray(ids)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"speech token ids must be integers, got dtype {arr.dtype}")
        t = torch.from_numpy(arr.astype(np.int64))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"speech token ids must be integers, got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"speech token ids must be 1-D, got shape {tuple(t.shape)}")
    t = t.long()
    bad = ((t < 0) | (t >= codebook_size)).nonzero()
    if bad.numel():
        pos = int(bad[0, 0])
        raise ValueError(
            f"speech token id {int(t[pos])} at position {pos} is out of range [0, {codebook_size})"
        )
    return t


class CausalConvNeXtBlock(nn.Module):
    """Causal depthwise conv, LayerNorm, pointwise MLP, scaled residual."""

    def __init__(self, dim: int, kernel: int, hidden: int) -> None:
        super().__init__()
        self.context = kernel - 1
        self.dwconv = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, hidden)
        self.pw2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (dim, n) after ``ctx`` (dim, kernel - 1), the inputs just before it (zeros
        at a stream's start). Returns the output (dim, n) and the context for what follows."""
        full = torch.cat([ctx, x], dim=1)
        h = self.dwconv(full[None])[0].T
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))
        return x + (self.gamma * h).T, full[:, full.shape[1] - self.context :]


class TokenVocoder(nn.Module):
    """Speech token ids to PCM at ``cfg.sample_rate``; weights seeded from ``seed``."""

    window: Tensor  # a buffer

    def __init__(self, cfg: CodecConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.bins = cfg.n_fft // 2 + 1
        self.input_kernel = INPUT_PAST_TOKENS + 1 + cfg.lookahead
        self.embed = nn.Embedding(cfg.codebook_size, cfg.dim)
        self.conv_in = nn.Conv1d(cfg.dim, cfg.dim, self.input_kernel)
        self.blocks = nn.ModuleList(
            CausalConvNeXtBlock(cfg.dim, cfg.kernel, MLP_RATIO * cfg.dim) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.frames_per_token * 2 * self.bins)
        window = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float32)
        self.register_buffer("window", window, persistent=False)
        steady = (window**2).view(-1, cfg.hop_length).sum(0).max()
        self.envelope_floor = float(steady) * ENVELOPE_FLOOR

        init_random_weights(self, seeded_generator(seed, salt=1))
        with torch.no_grad():
            # Residual branches start small (as ConvNeXt's layer scale), so depth does not
            # swamp the token embedding.
            for block in self.stack:
                block.gamma.fill_(1.0 / cfg.layers)

    @property
    def stack(self) -> list[CausalConvNeXtBlock]:
        """The blocks in order (as their own type, which iterating a ModuleList hides)."""
        return cast("list[CausalConvNeXtBlock]", list(self.blocks))

    @property
    def overlap(self) -> int:
        """Samples each frame shares with the frames after it (``n_fft - hop``)."""
        return self.cfg.n_fft - self.cfg.hop_length

    def forward(self, ids: TokenIds) -> Tensor:
        """Whole-sequence decode: (T,) ids to (T * samples_per_token,) float32 audio, the
        stream zero-padded at both ends as :class:`StreamingVocoder` pads it."""
        ids = check_ids(ids, self.cfg.codebook_size)
        if ids.numel() == 0:
            return torch.zeros(0)
        emb = F.pad(self.embed(ids).T, (INPUT_PAST_TOKENS, self.cfg.lookahead))
        x = self.conv_in(emb[None])[0]
        for block in self.stack:
            x, _ = block(x, x.new_zeros(self.cfg.dim, block.context))
        signal, envelope = self.overlap_add(self.frames(x))
        return self.normalize(signal[self.overlap :], envelope[self.overlap :])

    def frames(self, x: Tensor) -> Tensor:
        """Backbone output (dim, n) to (n * frames_per_token, n_fft) windowed time frames."""
        h = self.head(self.norm(x.T)).reshape(-1, 2, self.bins)
        magnitude = torch.exp(h[:, 0].clamp(max=self.cfg.max_log_magnitude))
        spectrum = torch.polar(magnitude, h[:, 1])
        return torch.fft.irfft(spectrum, n=self.cfg.n_fft) * self.window

    def overlap_add(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Sum (m, n_fft) frames ``hop`` apart; also the sum of squared windows under each
        sample. Both have ``(m - 1) * hop + n_fft`` samples."""
        m, n_fft, hop = frames.shape[0], self.cfg.n_fft, self.cfg.hop_length
        length = (m - 1) * hop + n_fft
        both = torch.stack([frames.T, (self.window**2)[:, None].expand(n_fft, m)])
        out = F.fold(both, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))
        return out[0, 0, 0], out[1, 0, 0]

    def normalize(self, signal: Tensor, envelope: Tensor) -> Tensor:
        """Divide out the window envelope; clip to [-1, 1] as a DAC would."""
        return (signal / envelope.clamp_min(self.envelope_floor)).clamp(-1.0, 1.0)


@dataclass
class VocoderState:
    """Everything one stream carries between pushes; its size does not grow with the stream."""

    inputs: Tensor
    """(dim, <= past + lookahead) embeddings the input conv still needs: past context and
    the tokens waiting for their lookahead."""
    contexts: list[Tensor]
    """Per ConvNeXt block, its last ``kernel - 1`` inputs."""
    tail: Tensor
    """(n_fft - hop,) overlap-add sum of samples later frames still add to."""
    tail_envelope: Tensor
    """(n_fft - hop,) squared-window sum under ``tail`` so far."""
    skip: int
    """Leading overlap-add samples still to drop (see the module docstring)."""
    tokens_pushed: int = 0
    tokens_decoded: int = 0
    samples_emitted: int = 0
    ended: bool = False


class StreamingVocoder(Streaming):
    """Push speech tokens as they come, get the audio that is final so far.

    The concatenated outputs of :meth:`push` and :meth:`flush` equal
    ``vocoder(all_ids)`` for any chunking. Audio for a token comes out once its
    ``lookahead`` future tokens are in; :meth:`reset` drops the stream (barge-in).
    """

    def __init__(self, vocoder: TokenVocoder) -> None:
        self.vocoder = vocoder
        self.state = self._fresh_state()

    def _fresh_state(self) -> VocoderState:
        v = self.vocoder
        dim, overlap = v.cfg.dim, v.overlap
        return VocoderState(
            inputs=torch.zeros(dim, INPUT_PAST_TOKENS),
            contexts=[torch.zeros(dim, block.context) for block in v.stack],
            tail=torch.zeros(overlap),
            tail_envelope=torch.zeros(overlap),
            skip=overlap,
        )

    @property
    def tokens_pushed(self) -> int:
        """Tokens pushed into this stream so far."""
        return self.state.tokens_pushed

    @property
    def samples_emitted(self) -> int:
        """Audio samples returned for this stream so far."""
        return self.state.samples_emitted

    def reset(self) -> None:
        """Forget the stream: the next push starts a new one."""
        self.state = self._fresh_state()

    @torch.inference_mode()
    def push(self, ids: TokenIds) -> np.ndarray:
        """Add tokens; return float32 audio that no later token can change (maybe empty)."""
        st = self.state
        if st.ended:
            raise RuntimeError("this stream was flushed; call reset() to start a new one")
        ids = check_ids(ids, self.vocoder.cfg.codebook_size)
        st.tokens_pushed += ids.numel()
        st.inputs = torch.cat([st.inputs, self.vocoder.embed(ids).T], dim=1)
        return self._decode_ready()

    @torch.inference_mode()
    def flush(self) -> np.ndarray:
        """End the stream: decode the tokens still waiting for lookahead (zeros stand in for
        the future) and return them with the overlap tail. Later calls return nothing."""
        st = self.state
        if st.ended:
            return np.zeros(0, dtype=np.float32)
        cfg = self.vocoder.cfg
        st.inputs = torch.cat([st.inputs, st.inputs.new_zeros(cfg.dim, cfg.lookahead)], dim=1)
        audio = [self._decode_ready(), self._emit(st.tail, st.tail_envelope)]
        st.tail = st.tail[:0]
        st.tail_envelope = st.tail_envelope[:0]
        st.ended = True
        return np.concatenate(audio)

    def _decode_ready(self) -> np.ndarray:
        v, st = self.vocoder, self.state
        keep = v.input_kernel - 1
        if st.inputs.shape[1] <= keep:
            return np.zeros(0, dtype=np.float32)
        x = v.conv_in(st.inputs[None])[0]
        st.inputs = st.inputs[:, st.inputs.shape[1] - keep :]
        st.tokens_decoded += x.shape[1]
        for i, block in enumerate(v.stack):
            x, st.contexts[i] = block(x, st.contexts[i])
        signal, envelope = v.overlap_add(v.frames(x))
        overlap = v.overlap
        signal[:overlap] += st.tail
        envelope[:overlap] += st.tail_envelope
        # Samples before the next frame's start are complete; the rest wait for it.
        done = signal.shape[0] - overlap
        st.tail, st.tail_envelope = signal[done:], envelope[done:]
        return self._emit(signal[:done], envelope[:done])

    def _emit(self, signal: Tensor, envelope: Tensor) -> np.ndarray:
        st = self.state
        drop = min(st.skip, signal.shape[0])
        st.skip -= drop
        audio = self.vocoder.normalize(signal[drop:], envelope[drop:])
        st.samples_emitted += audio.shape[0]
        return audio.numpy().astype(np.float32, copy=True)


def first_audio_tokens(cfg: CodecConfig) -> int:
    """Tokens a stream needs before its first audio: one, its lookahead, and as many more
    as it takes for the decoded frames to outlast the dropped iSTFT overlap."""
    return cfg.lookahead + 1 + (cfg.n_fft - cfg.hop_length) // cfg.samples_per_token
