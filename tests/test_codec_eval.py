"""The codec's judge counts what the agent must get across: numbers, days and months."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from parley.evaluation import codec_eval
from parley.evaluation.codec_eval import evaluate_codec, names_in, numbers_in


def test_names_and_numbers_in_a_reply():
    assert names_in("the month after december is january") == ["december", "january"]
    assert names_in("the day before sunday is saturday") == ["sunday", "saturday"]
    assert names_in("seven times eight is fifty six") == []
    assert numbers_in("seven times eight is fifty six") == ["seven", "eight", "fifty six"]


class _Vocoder(torch.nn.Module):
    """Gives back its ids as audio, negated: the judge below knows resynthesis by its sign."""

    cfg = SimpleNamespace(token_rate_hz=50.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return -ids.float()


class _Judge:
    """Hears the original right and the resynthesis with its last word garbled (one word for one)."""

    def __init__(self, texts: dict[float, str]) -> None:
        self.texts = texts

    def transcribe(self, audio: np.ndarray) -> str:
        text = self.texts[abs(float(audio[0]))]
        return text if audio[0] > 0 else " ".join([*text.split()[:-1], "tenure"])


def test_a_garbled_month_is_counted_though_the_words_mostly_survive(monkeypatch):
    monkeypatch.setattr(codec_eval, "vocoder_rtf", lambda _v: 0.02)
    monkeypatch.setattr(codec_eval, "first_audio_tokens", lambda _cfg: 6)
    texts = {1.0: "the month after december is january", 2.0: "six plus one is seven"}
    utterances = [(t, np.full(160, k, np.float32)) for k, t in texts.items()]
    tokenizer = SimpleNamespace(encode=lambda audio: torch.from_numpy(audio[::16].copy()))
    report = evaluate_codec(_Vocoder(), tokenizer, utterances, _Judge(texts), log=lambda _m: None)
    assert report.accuracy_resynth > 0.8  # word accuracy hides it
    assert (report.names, report.name_errors_original, report.name_errors_resynth) == (2, 0, 1)
    assert (report.numbers, report.number_errors_resynth) == (3, 1)
    assert report.examples[0]["names_missed"] == ["january"]
    assert "day and month names wrong 0/2 original, 1/2 resynthesized" in report.summary()
