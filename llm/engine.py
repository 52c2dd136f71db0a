"""The ``SpokenLM`` interface every engine implements, and what flows through it.

An engine is loaded once and shared; each conversation opens an :class:`LMContext` on it.
A context accumulates the conversation (user audio as LM-space embeddings, the replies it
generated) and streams one reply at a time as :class:`TokenDelta` values.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import torch

from parley.config import EngineConfig, ScheduleConfig
from parley.tokenizers.vocab import TokenClass, VocabLayout


@dataclass(frozen=True)
class TokenDelta:
    """One generated token."""

    token_id: int
    kind: TokenClass
    index: int  # position within the reply, from 0


@dataclass(frozen=True)
class ReplyParams:
    """Per-reply overrides; ``None`` keeps the checkpoint's schedule or the engine's sampling."""

    min_speech_tokens: int | None = None
    max_speech_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None

    def resolve(
        self, schedule: ScheduleConfig, engine: EngineConfig
    ) -> tuple[ScheduleConfig, float, int]:
        """The schedule, temperature and top-k this reply runs with."""
        bounds = {
            k: v
            for k, v in (
                ("min_speech_tokens", self.min_speech_tokens),
                ("max_speech_tokens", self.max_speech_tokens),
            )
            if v is not None
        }
        temperature = engine.temperature if self.temperature is None else self.temperature
        top_k = engine.top_k if self.top_k is None else self.top_k
        return schedule.model_copy(update=bounds), temperature, top_k


class LMContext(abc.ABC):
    """One conversation's state on an engine."""

    @abc.abstractmethod
    def add_user_audio(self, embeddings: torch.Tensor) -> None:
        """Queue a user turn: ``embeddings`` (positions, hidden) from the audio adapter."""

    @abc.abstractmethod
    def reply(self, params: ReplyParams | None = None) -> AsyncGenerator[TokenDelta, None]:
        """Generate the assistant's reply to everything queued, streaming token by token.

        Closing the iterator early (``aclose``) aborts the reply within one decode step.
        """

    @abc.abstractmethod
    async def abort(self) -> None:
        """Stop the running reply, if any; returns once no more compute is spent on it."""

    @abc.abstractmethod
    def truncate_reply(self, keep: int) -> None:
        """Keep only the first ``keep`` tokens of the last reply in the conversation.

        Used after an interruption, so the context holds what the user actually heard.
        The reply must not be running (abort it first).
        """

    @abc.abstractmethod
    def save_point(self) -> object:
        """The conversation as it is now, to come back to with :meth:`roll_back`."""

    @abc.abstractmethod
    def roll_back(self, point: object) -> None:
        """Forget everything since ``point`` (from this context's :meth:`save_point`): the
        user audio added and the reply to it leave the history and the KV cache, as if they
        had never been. For a reply started before the user's turn was surely over, and
        thrown away when the user went on. No reply may be running (abort it first).
        """

    @property
    @abc.abstractmethod
    def last_reply_tokens(self) -> list[int]:
        """The last reply's tokens as the conversation keeps them (after any truncation)."""

    @property
    @abc.abstractmethod
    def context_length(self) -> int:
        """Positions the engine holds for this conversation (its KV cache length)."""

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Free what the context holds."""

    async def aclose(self) -> None:
        """Abort whatever this conversation still has running on the engine, then free it."""
        await self.abort()
        self.close()


class SpokenLM(abc.ABC):
    """A loaded spoken LM serving any number of conversations."""

    layout: VocabLayout
    hidden_size: int

    @abc.abstractmethod
    def open_context(self) -> LMContext:
        """Start a new, empty conversation."""

    async def aclose(self) -> None:  # noqa: B027  (optional hook)
        """Release the engine."""
