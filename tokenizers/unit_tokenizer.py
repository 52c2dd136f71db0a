"""Speech tokenizer from semantic units: k-means over the model's own Whisper encoder frames.

The checkpoint's Whisper encoder gives 50 frames per second; each token averages
``frames_per_unit`` of them (2 for 25 tokens per second) and takes the nearest centroid (L2)
of a k-means codebook fitted on the agent's voice. The tokens then carry what was said rather
than how the waveform looked, which is what the LM has to predict; the vocoder learns the
voice back from them.

Which frames: Whisper adds an absolute position to every frame, and its outputs keep it.
Run over a whole utterance (as the runtime's block-causal pass does), the same sound gets
other frames at another time: shifting an utterance by 25 frames changed 90% of its ids,
so the codebook spent its centroids on *when* as much as on *what*. With ``window`` set,
each pair of frames is encoded in a window of ``left`` and ``right`` frames of context that
always sits at positions ``0 .. left + 2 + right - 1``: a unit then depends on the sound
around it only. Units are only ever made offline (from the agent's recorded voice, for the
LM's targets and the vocoder's inputs), so the window's lookahead costs nothing at runtime.

Causality without a window: the encoder attends within 0.5 s blocks, so the ids of an audio
prefix are a prefix of the ids of the whole except in the prefix's last block (and one mel
frame of lookahead before it). With one, ids are fixed ``right`` frames after their own.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from parley.config import FeatureConfig
from parley.llm.encoder import BlockCausalEncoder
from parley.tokenizers.features import log_mel
from parley.tokenizers.speech_tokenizer import mono_float_audio

__all__ = ["UnitTokenizer", "assign_units", "encoder_fingerprint", "fit_codebook", "window_frames"]

_FEATURE_FIELDS = (
    "sample_rate", "n_mels", "n_fft", "hop_length", "log_floor", "floor_mode", "dynamic_range",
)  # fmt: skip

_ROWS_PER_CHUNK = 8192
"""Rows per distance block: keeps the (rows, k) distance matrix to a few tens of MB."""

WINDOW_STEP = 2
"""Frames taken from each window. Two halves the encoder work against one, at the price of
two positions (not one) that a unit's frames can sit at."""

_WINDOWS_PER_BATCH = 256


def assign_units(units: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest codeword (L2) of each row of ``units`` (n, d): (ids (n,), squared distance)."""
    units = units.float()
    c_sq = (codebook * codebook).sum(1)
    ids, dists = [], []
    for lo in range(0, units.shape[0], _ROWS_PER_CHUNK):
        x = units[lo : lo + _ROWS_PER_CHUNK]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin.
        d = c_sq[None, :] - 2.0 * (x @ codebook.T)
        best, idx = d.min(dim=1)
        ids.append(idx)
        dists.append((best + (x * x).sum(1)).clamp_min(0.0))
    if not ids:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.cat(ids), torch.cat(dists)


def fit_codebook(frames: Tensor, k: int, seed: int = 0, iters: int = 30) -> Tensor:
    """k-means (k-means++ init, then ``iters`` Lloyd steps) of ``frames`` (n, d) into (k, d).

    Seeded and deterministic; an emptied cluster takes the point farthest from its centroid.
    """
    x = frames.detach().float().cpu()
    n = x.shape[0]
    if x.dim() != 2 or n < k or k < 1:
        raise ValueError(f"fit_codebook: need a (n >= k, d) matrix for k={k}, got {tuple(x.shape)}")
    gen = torch.Generator().manual_seed(seed)
    centers = torch.empty(k, x.shape[1])
    centers[0] = x[int(torch.randint(n, (1,), generator=gen))]
    x_sq = (x * x).sum(1)
    nearest = (x_sq - 2.0 * (x @ centers[0]) + centers[0].dot(centers[0])).clamp_min(0.0)
    for j in range(1, k):
        # k-means++: the next centre is drawn with probability proportional to D^2.
        total = float(nearest.sum())
        if total <= 0.0:
            idx = int(torch.randint(n, (1,), generator=gen))
        else:
            idx = int(torch.multinomial(nearest / total, 1, generator=gen))
        centers[j] = x[idx]
        d = (x_sq - 2.0 * (x @ centers[j]) + centers[j].dot(centers[j])).clamp_min(0.0)
        nearest = torch.minimum(nearest, d)
    for _ in range(iters):
        ids, dist = assign_units(x, centers)
        sums = torch.zeros_like(centers).index_add_(0, ids, x)
        counts = torch.bincount(ids, minlength=k)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None].float()
        empty = (~filled).nonzero().flatten()
        if empty.numel():
            far = dist.argsort(descending=True)[: empty.numel()]
            centers[empty] = x[far]
    return centers.contiguous()


def window_frames(
    encoder: BlockCausalEncoder, features: FeatureConfig, audio: Tensor, left: int, right: int
) -> Tensor:
    """Encoder frames of ``audio`` (16 kHz, a whole number of frames long), each pair from
    its own fixed-position window of ``left`` and ``right`` frames of context: (n, d)."""
    samples = 2 * features.hop_length  # per encoder frame
    n = audio.shape[0] // samples
    # Silence around the audio gives the edge windows their context; one extra step of it
    # keeps the last window whole.
    x = F.pad(audio, (left * samples, (right + WINDOW_STEP) * samples))
    front = encoder.front(torch.from_numpy(log_mel(x.numpy(), features)))
    width = left + WINDOW_STEP + right
    starts = torch.arange(0, n, WINDOW_STEP)
    out = []
    for lo in range(0, starts.numel(), _WINDOWS_PER_BATCH):
        idx = starts[lo : lo + _WINDOWS_PER_BATCH, None] + torch.arange(width)[None]
        enc = encoder.encode_windows(front[idx])
        out.append(enc[:, left : left + WINDOW_STEP].reshape(-1, enc.shape[-1]))
    if not out:
        return torch.zeros(0, encoder.d_model)
    return torch.cat(out)[:n]


def encoder_fingerprint(
    encoder: BlockCausalEncoder, features: FeatureConfig, window: tuple[int, int] | None = None
) -> bytes:
    """SHA-256 of everything that decides the units: the encoder's weights and blocking, the
    feature settings and the window. A codebook is only valid with what it was fitted on."""
    h = hashlib.sha256()
    # The fields that shape the features, named: a field added to FeatureConfig later must
    # not invalidate every codebook fitted before it.
    shape = {k: getattr(features, k) for k in _FEATURE_FIELDS}
    h.update(repr(sorted(shape.items())).encode())
    h.update(f"{encoder.block_frames}/{encoder.context_blocks}".encode())
    if window is not None:  # absent for codebooks fitted before windows existed
        h.update(f"window {window[0]}/{WINDOW_STEP}/{window[1]}".encode())
    for name, tensor in sorted(encoder.whisper.state_dict().items()):
        h.update(name.encode())
        # At float16 precision: checkpoints store the encoder in half, and a float32 encoder
        # and its half copy give the same units but for the rare id on a cell boundary.
        h.update(tensor.detach().to(torch.float16).cpu().contiguous().numpy().tobytes())
    return h.digest()


class UnitTokenizer:
    """Audio (16 kHz) to unit ids: encoder frames, averaged ``frames_per_unit`` at a time,
    then the nearest row of ``codebook`` (k, d_model). ``window``: (left, right) frames of
    fixed-position context per frame pair; None: the block-causal pass over the whole."""

    def __init__(
        self,
        encoder: BlockCausalEncoder,
        features: FeatureConfig,
        codebook: Tensor,
        frames_per_unit: int,
        window: tuple[int, int] | None = None,
    ) -> None:
        if codebook.dim() != 2 or codebook.shape[1] != encoder.d_model:
            raise ValueError(
                f"codebook must be (k, {encoder.d_model}) for this encoder, "
                f"got {tuple(codebook.shape)}"
            )
        if frames_per_unit < 1:
            raise ValueError(f"frames_per_unit must be >= 1, got {frames_per_unit}")
        if features.n_mels != encoder.n_mels:
            raise ValueError(f"features have {features.n_mels} mels, the encoder {encoder.n_mels}")
        self.encoder = encoder.eval()
        self.features = features
        self.codebook = codebook.detach().float().cpu().contiguous()
        self.frames_per_unit = frames_per_unit
        if window is not None and (len(window) != 2 or min(window) < 0):
            raise ValueError(f"window must be (left >= 0, right >= 0), got {window}")
        self.window = None if window is None else (int(window[0]), int(window[1]))
        # Two mel hops per encoder frame (the stride-2 conv).
        self.samples_per_token = frames_per_unit * 2 * features.hop_length

    @property
    def frames_kind(self) -> str:
        """A name for how :meth:`frames` makes its frames (caches of frames keep one per
        kind: frames of one kind are no use to a codebook of another)."""
        if self.window is None:
            return "frames"
        return f"frames-window-{self.window[0]}-{WINDOW_STEP}-{self.window[1]}"

    @property
    def codebook_size(self) -> int:
        """Number of distinct ids."""
        return self.codebook.shape[0]

    def eval(self) -> UnitTokenizer:
        """Nothing to switch (no dropout); here so it stands in for a module."""
        return self

    @torch.inference_mode()
    def frames(self, audio: np.ndarray | Tensor) -> Tensor:
        """Encoder frames (50 per second) of ``audio``, zero-padded to whole tokens:
        float32 (n_tokens * frames_per_unit, d_model)."""
        x = mono_float_audio(audio)
        n_tokens = -(-x.shape[0] // self.samples_per_token)
        if n_tokens == 0:
            return torch.zeros(0, self.encoder.d_model)
        x = F.pad(x, (0, n_tokens * self.samples_per_token - x.shape[0]))
        if self.window is not None:
            return window_frames(self.encoder, self.features, x, *self.window).float()
        mel = torch.from_numpy(log_mel(x.numpy(), self.features))
        return self.encoder(mel)[: n_tokens * self.frames_per_unit].float()

    def pool(self, frames: Tensor) -> Tensor:
        """Average each ``frames_per_unit`` consecutive frames: (n * fpu, d) to (n, d)."""
        return frames.reshape(-1, self.frames_per_unit, frames.shape[-1]).mean(dim=1)

    def assign(self, units: Tensor) -> Tensor:
        """Ids of pooled units (n, d): the nearest codeword of each."""
        return assign_units(units, self.codebook)[0]

    def encode(self, audio: np.ndarray | Tensor) -> Tensor:
        """Token ids (int64, ``ceil(len(audio) / samples_per_token)``) of 1-D float audio
        at 16 kHz; empty audio gives no ids."""
        return self.assign(self.pool(self.frames(audio)))
