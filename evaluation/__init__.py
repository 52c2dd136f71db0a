"""Judging the trained model from outside: independent recognizers on its reply audio."""

from parley.evaluation.judge import SphinxHearing, SphinxJudge, WhisperJudge, whisper_model_dir
from parley.evaluation.words import (
    answer_heard,
    key_heard,
    normalize,
    spell_number,
    word_accuracy,
)

__all__ = [
    "SphinxHearing",
    "SphinxJudge",
    "WhisperJudge",
    "answer_heard",
    "key_heard",
    "normalize",
    "spell_number",
    "whisper_model_dir",
    "word_accuracy",
]
