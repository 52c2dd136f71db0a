"""Conversations kept as prompt embeddings and replayed each turn: the vLLM engines' context.

vLLM keeps no per-conversation state between requests, so every reply is a request whose
prompt is the whole conversation as embeddings (markers, user audio from the adapter, the
earlier replies as heard). Its prefix cache makes the replay cheap: blocks whose
embeddings match a cached block are not recomputed.

One catch shapes this module: vLLM keys a prompt-embeds block by the embeddings it was
given, and the tokens a reply generated were never given as embeddings, so their blocks
never match a later prompt. Right after a reply is settled (finished, or truncated to what
was heard) the context therefore sends a one-token *priming* request holding the
conversation so far. It runs while the reply is still playing, and the next turn finds
everything up to its new audio in the cache.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import torch

from parley.config import EngineConfig, ScheduleConfig
from parley.llm.context_window import fit_turns, keep_tail, log_fit
from parley.llm.engine import LMContext, ReplyParams, SpokenLM, TokenDelta
from parley.llm.schedule import max_reply_tokens
from parley.tokenizers.vocab import TokenClass, VocabLayout

_context_ids = itertools.count()
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """One request's sampling, in terms both the in-process and the HTTP engine can send."""

    max_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    extra_args: dict[str, str] = field(default_factory=dict)
    cache_salt: str | None = None  # a request with a new salt shares no cached blocks


@dataclass(frozen=True)
class Chunk:
    """What one streamed step of a request brought: new token ids, and on the first chunk
    how many prompt positions the engine found in its prefix cache."""

    token_ids: list[int]
    cached_positions: int | None = None


@dataclass
class CacheStats:
    """Prefix-cache use of one conversation's reply requests."""

    prompt_positions: int = 0
    cached_positions: int = 0
    requests: int = 0
    last_prompt: int = 0
    last_cached: int = 0

    @property
    def hit_rate(self) -> float:
        return self.cached_positions / self.prompt_positions if self.prompt_positions else 0.0


def _report_prime_failure(task: asyncio.Task) -> None:
    # Priming only saves time later; a failure costs a slower next turn, so it is logged,
    # not raised into whoever happens to hold the conversation.
    if not task.cancelled() and task.exception() is not None:
        log.warning("cache priming failed: %s", task.exception())


class PromptEngine(SpokenLM):
    """A :class:`SpokenLM` that serves each reply as one streamed request."""

    def __init__(
        self,
        embeddings: torch.Tensor,
        layout: VocabLayout,
        schedule: ScheduleConfig,
        engine: EngineConfig,
    ) -> None:
        self.embeddings = embeddings.detach().float()
        self.layout = layout
        self.schedule = schedule
        self.engine = engine
        self.hidden_size = int(embeddings.shape[1])
        self.context_limit = engine.max_model_len
        """Positions one request may hold; subclasses lower it to what their engine serves."""
        self._contexts: weakref.WeakSet[PromptContext] = weakref.WeakSet()

    def embed_ids(self, ids: list[int]) -> torch.Tensor:
        return self.embeddings[torch.tensor(ids, dtype=torch.long)]

    def open_context(self) -> PromptContext:
        ctx = PromptContext(self)
        self._contexts.add(ctx)
        return ctx

    async def abort_all(self) -> None:
        """Abort every request of every open conversation (before the engine goes away)."""
        for ctx in list(self._contexts):
            await ctx.abort()
            await ctx.stop_priming()

    def schedule_args(self, schedule: ScheduleConfig) -> dict[str, str]:
        """``extra_args`` that make the engine's logits processor apply ``schedule``."""
        from parley.llm.schedule_args import schedule_args

        return schedule_args(self.layout, schedule)

    @abc.abstractmethod
    def stream(
        self, request_id: str, prompt: torch.Tensor, sampling: Sampling
    ) -> AsyncGenerator[Chunk, None]:
        """Run one request; closing the iterator early must abort it."""

    @abc.abstractmethod
    async def abort_request(self, request_id: str) -> None:
        """Abort ``request_id`` if it is still running."""


@dataclass(frozen=True)
class _Point:
    """A :class:`PromptContext`'s conversation at one moment (lists copied, tensors shared:
    the context never changes a tensor it holds)."""

    context: int
    history: list[torch.Tensor]
    turn_starts: list[int]
    pending: list[torch.Tensor]
    reply_tokens: list[int]
    reply_open: bool


class PromptContext(LMContext):
    """One conversation on a :class:`PromptEngine`."""

    def __init__(self, engine: PromptEngine) -> None:
        self.engine = engine
        self.id = next(_context_ids)
        self._history: list[torch.Tensor] = []  # embeddings up to the last reply's start
        self._history_positions = 0
        self._turn_starts: list[int] = []  # index in _history where each turn begins
        self._pending: list[torch.Tensor] = []
        self._reply_tokens: list[int] = []
        self._reply_open = False  # the last reply was cut before its end of turn
        self._replies = 0
        self._request: str | None = None
        self._aborting = False
        self._prime: asyncio.Task | None = None
        self._prime_id: str | None = None
        self.stats = CacheStats()

    @property
    def context_length(self) -> int:
        return self._history_positions + len(self._reply_tokens)

    @property
    def last_reply_tokens(self) -> list[int]:
        return list(self._reply_tokens)

    def last_prompt(self) -> torch.Tensor:
        """The prompt of the last reply request: the conversation up to that reply."""
        return torch.cat(self._history)

    def _remember(self, embeddings: torch.Tensor) -> None:
        self._history.append(embeddings)
        self._history_positions += embeddings.shape[0]

    def _settled_reply(self) -> torch.Tensor:
        ids = list(self._reply_tokens) + ([self.engine.layout.eot] if self._reply_open else [])
        return self.engine.embed_ids(ids)

    def add_user_audio(self, embeddings: torch.Tensor) -> None:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.engine.hidden_size:
            raise ValueError(
                f"user audio embeddings must be (positions, {self.engine.hidden_size}), "
                f"got {tuple(embeddings.shape)}"
            )
        if self._reply_tokens or self._reply_open:
            self._remember(self._settled_reply())
            self._reply_tokens, self._reply_open = [], False
        layout = self.engine.layout
        self._pending += [
            self.engine.embed_ids([layout.user]),
            embeddings.detach().float().cpu(),
            self.engine.embed_ids([layout.assistant]),
        ]

    def truncate_reply(self, keep: int) -> None:
        if self._request is not None:
            raise RuntimeError("abort the reply before truncating it")
        if not 0 <= keep <= len(self._reply_tokens):
            raise ValueError(f"keep={keep} outside [0, {len(self._reply_tokens)}]")
        if keep < len(self._reply_tokens):
            self._reply_tokens = self._reply_tokens[:keep]
            self._reply_open = True
            self._start_priming()

    def save_point(self) -> _Point:
        return _Point(
            self.id,
            list(self._history),
            list(self._turn_starts),
            list(self._pending),
            list(self._reply_tokens),
            self._reply_open,
        )

    def roll_back(self, point: object) -> None:
        if not isinstance(point, _Point) or point.context != self.id:
            raise ValueError("not a save point of this conversation")
        if self._request is not None:
            raise RuntimeError("abort the reply before rolling back")
        # A priming request of the forgotten reply would only warm blocks nobody asks for.
        if self._prime is not None:
            self._prime.cancel()
        self._history = list(point.history)
        self._history_positions = sum(t.shape[0] for t in self._history)
        self._turn_starts = list(point.turn_starts)
        self._pending = list(point.pending)
        self._reply_tokens, self._reply_open = list(point.reply_tokens), point.reply_open

    async def abort(self) -> None:
        if self._request is not None:
            self._aborting = True
            await self.engine.abort_request(self._request)

    async def aclose(self) -> None:
        await self.abort()
        await self.stop_priming()
        self.close()

    def close(self) -> None:
        if self._prime is not None:
            self._prime.cancel()
        self._history, self._pending, self._reply_tokens = [], [], []
        self._history_positions = 0
        self._turn_starts = []

    def _sampling(self, params: ReplyParams | None) -> Sampling:
        engine = self.engine
        schedule, temperature, top_k = (params or ReplyParams()).resolve(
            engine.schedule, engine.engine
        )
        return Sampling(
            max_tokens=max_reply_tokens(schedule),
            temperature=temperature,
            top_k=top_k,
            # A fixed per-reply seed keeps sampled replies reproducible run to run.
            seed=None if temperature <= 0 else engine.engine.seed * 1_000_003 + self._replies,
            stop_token_ids=(engine.layout.eot,),
            extra_args=engine.schedule_args(schedule),
        )

    async def reply(self, params: ReplyParams | None = None) -> AsyncGenerator[TokenDelta, None]:
        if self._request is not None:
            raise RuntimeError("a reply is already running in this context")
        if not self._pending:
            raise RuntimeError("nothing to reply to: add user audio first")
        sampling = self._sampling(params)
        turn = self._fit(torch.cat(self._pending), sampling.max_tokens)
        self._pending.clear()
        self._turn_starts.append(len(self._history))
        prompt = torch.cat([*self._history, turn])
        self._remember(turn)
        self._reply_tokens, self._reply_open = [], True
        request_id = f"parley-{self.id}-reply-{self._replies}"
        self._replies += 1
        self._request, self._aborting = request_id, False
        stats = self.stats
        stats.requests += 1
        stats.prompt_positions += prompt.shape[0]
        stats.last_prompt, stats.last_cached = prompt.shape[0], 0
        layout = self.engine.layout
        ended = False
        stream = self.engine.stream(request_id, prompt, sampling)
        try:
            async for chunk in stream:
                if chunk.cached_positions is not None:
                    stats.cached_positions += chunk.cached_positions
                    stats.last_cached = chunk.cached_positions
                if not self._reply_open:
                    continue  # after the end of turn only the usage report can follow
                for token in chunk.token_ids:
                    kind = layout.classify(token)
                    self._reply_tokens.append(token)
                    if kind is TokenClass.EOT:
                        self._reply_open = False
                    yield TokenDelta(token, kind, len(self._reply_tokens) - 1)
                    if kind is TokenClass.EOT:
                        break
            ended = True
        finally:
            self._request = None
            await stream.aclose()
            if ended and not self._aborting:
                self._start_priming()

    def _fit(self, turn: torch.Tensor, reserve: int) -> torch.Tensor:
        """Drop the oldest turns until ``turn`` and a reply of ``reserve`` fit the engine;
        returns ``turn``, cut to its end if it does not fit alone."""
        bounds = [*self._turn_starts, len(self._history)]
        lengths = [
            sum(t.shape[0] for t in self._history[a:b])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        limit = self.engine.context_limit
        history = self.engine.schedule.history_turns
        fit = fit_turns(lengths, turn.shape[0], reserve, limit, history)
        log_fit(fit, len(lengths), limit, turn.shape[0])
        if fit.drop:
            cut = bounds[fit.drop]
            self._history = self._history[cut:]
            self._history_positions = sum(t.shape[0] for t in self._history)
            self._turn_starts = [start - cut for start in self._turn_starts[fit.drop :]]
        if fit.pending_keep is not None:
            turn = keep_tail(turn, fit.pending_keep)
        return turn

    def _start_priming(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop, no background work: the next turn just computes more
        if self._prime is not None and not self._prime.done():
            self._prime.cancel()
        prompt = torch.cat([*self._history, self._settled_reply()])
        request_id = f"parley-{self.id}-prime-{self._replies}"
        self._prime_id = request_id
        self._prime = loop.create_task(self._run_prime(request_id, prompt))
        self._prime.add_done_callback(_report_prime_failure)

    async def _run_prime(self, request_id: str, prompt: torch.Tensor) -> None:
        stream = self.engine.stream(request_id, prompt, Sampling(max_tokens=1))
        try:
            async for chunk in stream:
                if chunk.cached_positions is not None:
                    log.debug(
                        "%s: %d of %d positions cached",
                        request_id,
                        chunk.cached_positions,
                        prompt.shape[0],
                    )
        finally:
            await stream.aclose()

    async def wait_primed(self) -> None:
        """Return once the cache priming started after the last reply has run."""
        if self._prime is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._prime)

    async def stop_priming(self) -> None:
        """Cancel the priming request, if any, and abort it on the engine."""
        task = self._prime
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._prime_id is not None:
            await self.engine.abort_request(self._prime_id)
