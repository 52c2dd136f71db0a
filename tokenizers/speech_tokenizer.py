"""Speech tokenizer: 16 kHz audio to single-codebook token ids at ``token_rate_hz``.

A log-magnitude STFT with four frames per token (hop = samples_per_token / 4, window four
hops long, frames not centered so nothing looks ahead), the four frames of each token
stacked, a small causal conv and a projection to ``tokenizer_dim``, then the nearest
codeword. It is causal: the ids of an audio prefix are a prefix of the ids of the whole.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parley.config import CodecConfig
from parley.errors import AudioInputError
from parley.tokenizers.vocoder import init_random_weights, seeded_generator

FRAMES_PER_TOKEN = 4
"""STFT frames stacked into one token's features."""

CONV_CONTEXT_TOKENS = 3
"""Kernel of the causal conv over token features: the token and two before it."""

LOG_FLOOR = 1e-5
"""Added to STFT magnitudes before the log, so silence gives finite features."""


def mono_float_audio(audio: np.ndarray | Tensor) -> Tensor:
    """``audio`` as a float32 CPU tensor, refused with a clear error unless it is 1-D,
    floating point and finite: what every speech tokenizer takes."""
    x = torch.as_tensor(audio).detach().cpu()
    if x.dim() != 1:
        raise AudioInputError(f"audio must be 1-D (mono samples), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise AudioInputError(f"audio must be float samples in [-1, 1], got dtype {x.dtype}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise AudioInputError("audio contains NaN or infinite samples")
    return x


class SpeechTokenizer(nn.Module):
    """Audio to speech token ids; weights (codebook included) seeded from ``seed``."""

    window: Tensor  # a buffer

    def __init__(self, cfg: CodecConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.samples_per_token = cfg.samples_per_token
        self.hop = cfg.samples_per_token // FRAMES_PER_TOKEN
        self.n_fft = FRAMES_PER_TOKEN * self.hop
        features = FRAMES_PER_TOKEN * (self.n_fft // 2 + 1)
        window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float32)
        self.register_buffer("window", window, persistent=False)
        self.norm = nn.LayerNorm(features)
        self.conv = nn.Conv1d(features, cfg.tokenizer_dim, CONV_CONTEXT_TOKENS)
        self.proj = nn.Linear(cfg.tokenizer_dim, cfg.tokenizer_dim)
        self.codebook = nn.Parameter(torch.zeros(cfg.codebook_size, cfg.tokenizer_dim))

        generator = seeded_generator(seed, salt=2)
        init_random_weights(self, generator)
        with torch.no_grad():
            self.codebook.copy_(torch.randn(self.codebook.shape, generator=generator))

    def forward(self, audio: Tensor) -> Tensor:
        """(n,) float32 audio to (ceil(n / samples_per_token),) int64 token ids."""
        n_tokens = -(-audio.shape[0] // self.samples_per_token)
        if n_tokens == 0:
            return torch.zeros(0, dtype=torch.long)
        # Left padding makes frame j end at sample (j + 1) * hop: a token's features come
        # from its own samples and earlier ones only.
        right = n_tokens * self.samples_per_token - audio.shape[0]
        padded = F.pad(audio, (self.n_fft - self.hop, right))
        spec = torch.stft(
            padded,
            self.n_fft,
            self.hop,
            window=self.window,
            center=False,
            return_complex=True,
        )
        feats = torch.log(spec.abs() + LOG_FLOOR).T.reshape(n_tokens, -1)
        h = F.pad(self.norm(feats).T, (CONV_CONTEXT_TOKENS - 1, 0))
        h = self.proj(F.gelu(self.conv(h[None])[0].T))
        # Nearest codeword by direction: with untrained weights, plain L2 would send most
        # frames to the few codewords of largest norm.
        scores = F.normalize(h, dim=1) @ F.normalize(self.codebook, dim=1).T
        return scores.argmax(dim=1)

    @torch.inference_mode()
    def encode(self, audio: np.ndarray | Tensor) -> Tensor:
        """Token ids of 1-D float audio at ``cfg.sample_rate``; empty audio gives no ids."""
        return self(mono_float_audio(audio))
