"""The vocoder's side of codec training: decoding windows with gradients, and the loss.

:func:`synthesize_batch` is the vocoder's forward pass for many crops at once, masked so
each crop decodes exactly as a stream started and flushed at its ends would;
:class:`SpectralLoss` scores it against the voice (multi-resolution STFT and log-mel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from parley.tokenizers.features import mel_filters
from parley.tokenizers.vocoder import INPUT_PAST_TOKENS, TokenVocoder

__all__ = ["SpectralLoss", "synthesize", "synthesize_batch"]

STFT_RESOLUTIONS = ((256, 64), (512, 128), (1024, 256), (2048, 512))
MEL_FFT, MEL_HOP, MEL_BINS = 1024, 256, 80


def synthesize(vocoder: TokenVocoder, ids: Tensor) -> Tensor:
    """``vocoder(ids)`` with gradients and without the final [-1, 1] clip (which has none)."""
    n = ids.numel()
    return synthesize_batch(
        vocoder, ids[None], torch.zeros(1, dtype=torch.long), torch.full((1,), n)
    )[0]


def synthesize_batch(
    vocoder: TokenVocoder, ids: Tensor, start: Tensor, end: Tensor, bf16: bool = False
) -> Tensor:
    """Decode a batch of windows (B, T) at once, unclipped, with gradients.

    Row ``i`` holds real tokens in ``[start[i], end[i])`` only: its samples
    ``[start * spt, end * spt)`` are ``synthesize(ids[i, start:end])``, as if a stream had
    started at ``start`` and been flushed at ``end``. Masking makes it exact: the causal
    layers see zeros before the start (a fresh stream's context), the input conv zeros after
    the end (the flush), and frames past the end add nothing, not even to the envelope.

    ``bf16`` runs the convolutional backbone under bfloat16 autocast (on CPU about twice as
    fast to train); the head, magnitudes, phases and overlap-add stay float32.
    """
    cfg, (b, t) = vocoder.cfg, ids.shape
    pos = torch.arange(t)[None, :]
    real = ((pos >= start[:, None]) & (pos < end[:, None])).float()  # (B, T)
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        emb = vocoder.embed(ids) * real[..., None]  # (B, T, dim)
        emb = F.pad(emb.transpose(1, 2), (INPUT_PAST_TOKENS, cfg.lookahead))
        x = vocoder.conv_in(emb)  # (B, dim, T)
        before = (pos >= start[:, None]).float()[:, None, :]
        for block in vocoder.stack:
            x = x * before
            h = block.dwconv(F.pad(x, (block.context, 0))).transpose(1, 2)
            h = block.pw2(F.gelu(block.pw1(block.norm(h))))
            x = x + (block.gamma * h).transpose(1, 2)
    # The head in float32: phases in bfloat16 would be off by up to ~0.03 rad.
    h = vocoder.head(vocoder.norm(x.float().transpose(1, 2)))
    h = h.reshape(b, t * cfg.frames_per_token, 2, -1)
    magnitude = torch.exp(h[:, :, 0].clamp(max=vocoder.cfg.max_log_magnitude))
    frames = torch.fft.irfft(torch.polar(magnitude, h[:, :, 1]), n=cfg.n_fft) * vocoder.window
    keep = real.repeat_interleave(cfg.frames_per_token, dim=1)  # (B, m)
    frames = frames * keep[..., None]
    m, n_fft, hop = frames.shape[1], cfg.n_fft, cfg.hop_length
    length = (m - 1) * hop + n_fft
    both = torch.cat([frames, (vocoder.window**2)[None, None, :] * keep[..., None]], dim=0)
    out = F.fold(both.transpose(1, 2), (1, length), kernel_size=(1, n_fft), stride=(1, hop))
    signal, envelope = out[:b, 0, 0], out[b:, 0, 0]
    overlap = vocoder.overlap
    return signal[:, overlap:] / envelope[:, overlap:].clamp_min(vocoder.envelope_floor)


class SpectralLoss(torch.nn.Module):
    """Multi-resolution STFT (spectral convergence + log-magnitude L1) and log-mel L1."""

    mel_fb: Tensor  # a buffer, as are the win{n_fft} windows

    def __init__(self, sample_rate: int, mel_weight: float) -> None:
        super().__init__()
        self.mel_weight = mel_weight
        for n_fft, _ in STFT_RESOLUTIONS:
            self.register_buffer(f"win{n_fft}", torch.hann_window(n_fft), persistent=False)
        fb = torch.from_numpy(mel_filters(MEL_BINS, MEL_FFT, sample_rate)).float()
        self.register_buffer("mel_fb", fb, persistent=False)

    def _mag(self, x: Tensor, n_fft: int, hop: int) -> Tensor:
        win = getattr(self, f"win{n_fft}")
        spec = torch.stft(x, n_fft, hop, window=win, center=True, return_complex=True)
        return spec.abs().clamp_min(1e-7)

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """(B, n) waveforms to a scalar loss and its parts."""
        sc = mag = torch.zeros(())
        for n_fft, hop in STFT_RESOLUTIONS:
            p, t = self._mag(pred, n_fft, hop), self._mag(target, n_fft, hop)
            sc = sc + torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp_min(1e-7)
            mag = mag + (p.log() - t.log()).abs().mean()
        sc, mag = sc / len(STFT_RESOLUTIONS), mag / len(STFT_RESOLUTIONS)
        p, t = self._mag(pred, MEL_FFT, MEL_HOP), self._mag(target, MEL_FFT, MEL_HOP)
        mel_p = (self.mel_fb @ p).clamp_min(1e-5).log()
        mel_t = (self.mel_fb @ t).clamp_min(1e-5).log()
        mel = (mel_p - mel_t).abs().mean()
        loss = sc + mag + self.mel_weight * mel
        return loss, {
            "sc": float(sc.detach()),
            "mag": float(mag.detach()),
            "mel": float(mel.detach()),
        }
