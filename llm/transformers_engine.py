"""The embedded engine: the checkpoint's LM in this process, through transformers.

Each conversation keeps its KV cache across turns, so a follow-up turn costs only its new
positions. Decode steps run in a worker thread, one at a time per engine, so the event
loop keeps pumping audio while the model computes. When the conversation outgrows the LM's
positions, the oldest turns go (:mod:`~parley.llm.context_window`) and the cache is
rebuilt from the embeddings of the turns kept, which each context holds for that.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from parley.config import EngineConfig, ScheduleConfig
from parley.llm.context_window import fit_turns, keep_tail, log_fit
from parley.llm.engine import LMContext, ReplyParams, SpokenLM, TokenDelta
from parley.llm.lm_build import embedding_rows
from parley.llm.logits import ScheduleLogitsProcessor
from parley.llm.schedule import max_reply_tokens
from parley.tokenizers.vocab import TokenClass, VocabLayout

_context_ids = itertools.count()


class TransformersSpokenLM(SpokenLM):
    """A transformers causal LM serving conversations in process."""

    def __init__(
        self,
        model: PreTrainedModel,
        layout: VocabLayout,
        schedule: ScheduleConfig,
        engine: EngineConfig | None = None,
    ) -> None:
        self.model = model.eval()
        self.layout = layout
        self.schedule = schedule
        self.engine = engine or EngineConfig()
        self.hidden_size = int(model.config.hidden_size)
        self.vocab_rows = embedding_rows(model)
        self.context_limit = int(model.config.max_position_embeddings)
        self._embed = model.get_input_embeddings()
        self._forward_lock = threading.Lock()

    def open_context(self) -> TransformersContext:
        return TransformersContext(self)

    def embed_ids(self, ids: list[int]) -> torch.Tensor:
        """Input embeddings of token ids, (len(ids), hidden)."""
        with torch.inference_mode():
            return self._embed(torch.tensor(ids, dtype=torch.long, device=self.model.device))

    def forward(self, embeddings: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """Run ``embeddings`` after what ``cache`` holds; next-token logits (vocab,)."""
        with self._forward_lock, torch.inference_mode():
            out = self.model(
                inputs_embeds=embeddings[None].to(self.model.dtype),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[0, -1].float()


@dataclass(frozen=True)
class _Point:
    """A :class:`TransformersContext`'s conversation at one moment: how much of its cache
    to keep, and the bookkeeping beside it (lists copied; tensors are never changed)."""

    context: int
    cache_epoch: int
    length: int
    turns: list[list[torch.Tensor]]
    closing: torch.Tensor | None
    pending: list[torch.Tensor]
    reply_tokens: list[int]
    reply_base: int
    unfed: int | None
    reply_open: bool
    generator: torch.Tensor


class TransformersContext(LMContext):
    """One conversation on a :class:`TransformersSpokenLM`."""

    def __init__(self, engine: TransformersSpokenLM) -> None:
        self.engine = engine
        self._cache = DynamicCache(config=engine.model.config)
        # Embeddings queued for the next forward: markers and user audio.
        self._pending: list[torch.Tensor] = []
        # The last reply: its tokens, where it starts in the cache, and its final token,
        # which was sampled but never fed through the model.
        self._reply_tokens: list[int] = []
        self._reply_base = 0
        self._unfed: int | None = None
        self._reply_open = False
        self._running = False
        self._abort = threading.Event()
        self._step_done = asyncio.Event()
        self._step_done.set()
        self._generator = torch.Generator().manual_seed(engine.engine.seed)
        # The conversation turn by turn as embeddings: enough to rebuild the cache without
        # the oldest turns. The cache holds a prefix of them (all of them, except after a
        # roll back, until the next reply feeds the rest).
        self._turns: list[list[torch.Tensor]] = []
        self._closing: torch.Tensor | None = None  # the last reply's tail, not yet fed
        # Bumped whenever the cache is rebuilt, after which an older save point's positions
        # no longer line up with it.
        self._cache_epoch = 0
        self._id = next(_context_ids)
        self.prefill_positions = 0
        self.decode_steps = 0

    @property
    def context_length(self) -> int:
        return self._cache.get_seq_length()

    @property
    def last_reply_tokens(self) -> list[int]:
        """The last reply's tokens as the conversation keeps them (after any truncation)."""
        return list(self._reply_tokens)

    def add_user_audio(self, embeddings: torch.Tensor) -> None:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.engine.hidden_size:
            raise ValueError(
                f"user audio embeddings must be (positions, {self.engine.hidden_size}), "
                f"got {tuple(embeddings.shape)}"
            )
        close = self._close_last_reply()
        if close.shape[0]:
            # The last reply's tail belongs to its own turn (dropped with it), though it is
            # fed with this one.
            self._closing = close if self._closing is None else torch.cat([self._closing, close])
        layout = self.engine.layout
        self._pending += [
            self.engine.embed_ids([layout.user]),
            embeddings.to(self.engine.model.device),
            self.engine.embed_ids([layout.assistant]),
        ]

    def _close_last_reply(self) -> torch.Tensor:
        """What the last reply still needs in the cache: its unfed token, and an end marker
        if it was cut before its own."""
        ids = [] if self._unfed is None else [self._unfed]
        if self._reply_open:
            ids.append(self.engine.layout.eot)
        self._unfed, self._reply_open = None, False
        return self.engine.embed_ids(ids)

    def truncate_reply(self, keep: int) -> None:
        if self._running:
            raise RuntimeError("abort the reply before truncating it")
        tokens = self._reply_tokens
        if not 0 <= keep <= len(tokens):
            raise ValueError(f"keep={keep} outside [0, {len(tokens)}]")
        fed = len(tokens) - (self._unfed is not None)
        if keep < fed:
            # transformers 5 crops by a (negative) count of positions to drop.
            self._cache.crop(-(self.context_length - (self._reply_base + keep)))
            self._trim_last_turn(self._reply_base + keep)
        if keep < len(tokens):
            self._unfed = None
            self._reply_tokens = tokens[:keep]
            self._reply_open = True

    def save_point(self) -> _Point:
        return _Point(
            self._id,
            self._cache_epoch,
            self.context_length,
            [list(parts) for parts in self._turns],
            self._closing,
            list(self._pending),
            list(self._reply_tokens),
            self._reply_base,
            self._unfed,
            self._reply_open,
            self._generator.get_state(),
        )

    def roll_back(self, point: object) -> None:
        if not isinstance(point, _Point) or point.context != self._id:
            raise ValueError("not a save point of this conversation")
        if self._running:
            raise RuntimeError("abort the reply before rolling back")
        if point.cache_epoch != self._cache_epoch:
            self._new_cache()  # the turns are fed again from the first
        elif self.context_length > point.length:
            self._cache.crop(-(self.context_length - point.length))
        self._turns = [list(parts) for parts in point.turns]
        self._closing = point.closing
        self._pending = list(point.pending)
        self._reply_tokens, self._reply_base = list(point.reply_tokens), point.reply_base
        self._unfed, self._reply_open = point.unfed, point.reply_open
        self._generator.set_state(point.generator)

    def _new_cache(self) -> None:
        self._cache = DynamicCache(config=self.engine.model.config)
        self._cache_epoch += 1

    def _unfed_turns(self) -> list[torch.Tensor]:
        """The turns' embeddings beyond what the cache holds."""
        skip, out = self.context_length, []
        for part in (t for parts in self._turns for t in parts):
            if skip >= part.shape[0]:
                skip -= part.shape[0]
            else:
                out.append(part[skip:])
                skip = 0
        return out

    async def abort(self) -> None:
        self._abort.set()
        await self._step_done.wait()

    def close(self) -> None:
        self._abort.set()
        self._new_cache()
        self._turns, self._closing = [], None
        self._pending.clear()
        self._reply_tokens, self._unfed, self._reply_open = [], None, False

    def _fit(self, turn: torch.Tensor, reserve: int) -> torch.Tensor:
        """Record ``turn`` as the newest turn, first dropping the oldest ones if it and a
        reply of ``reserve`` would not fit; returns what to feed the cache now."""
        limit = self.engine.context_limit
        closing = self._closing
        if closing is not None:
            self._turns[-1].append(closing)
        lengths = [sum(t.shape[0] for t in parts) for parts in self._turns]
        history = self.engine.schedule.history_turns
        fit = fit_turns(lengths, turn.shape[0], reserve, limit, history)
        log_fit(fit, len(lengths), limit, turn.shape[0])
        if fit.pending_keep is not None:
            turn = keep_tail(turn, fit.pending_keep)
        if fit.drop:
            # RoPE keys carry their positions: the kept turns are run again from 0.
            self._turns = self._turns[fit.drop :]
            self._new_cache()
        self._turns.append([turn])
        return torch.cat(self._unfed_turns())

    def _trim_last_turn(self, length: int) -> None:
        """Cut the newest turn so every turn together holds ``length`` positions."""
        before = sum(t.shape[0] for parts in self._turns[:-1] for t in parts)
        last = torch.cat(self._turns[-1])
        self._turns[-1] = [last[: length - before]]

    async def _run(self, embeddings: torch.Tensor) -> torch.Tensor:
        # Shielded: a cancelled consumer cannot stop a forward already in the thread, so the
        # step counts as done (and the cache as updated) only when the thread returns.
        self._step_done.clear()
        fut = asyncio.get_running_loop().run_in_executor(
            None, self.engine.forward, embeddings, self._cache
        )
        fut.add_done_callback(lambda _: self._step_done.set())
        return await asyncio.shield(fut)

    def _sample(self, logits: torch.Tensor, temperature: float, top_k: int) -> int:
        if temperature <= 0.0:
            return int(torch.argmax(logits))
        logits = logits / temperature
        if 0 < top_k < logits.numel():
            kth = torch.topk(logits, top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._generator))

    async def reply(self, params: ReplyParams | None = None) -> AsyncGenerator[TokenDelta, None]:
        if self._running:
            raise RuntimeError("a reply is already running in this context")
        if not self._pending:
            raise RuntimeError("nothing to reply to: add user audio first")
        engine = self.engine
        schedule, temperature, top_k = (params or ReplyParams()).resolve(
            engine.schedule, engine.engine
        )
        processor = ScheduleLogitsProcessor(engine.layout, schedule, engine.vocab_rows)

        self._running = True
        self._abort.clear()
        unfed: int | None = None  # sampled, handed out, not yet run through the model
        try:
            feed = self._fit(torch.cat(self._pending), max_reply_tokens(schedule))
            self._pending.clear()
            self._closing = None
            self.prefill_positions += feed.shape[0]
            self._reply_base = self.context_length + feed.shape[0]
            self._reply_tokens = []
            self._reply_open = True
            fed_already = True  # the first feed was recorded by _fit
            while not self._abort.is_set():
                unfed = None
                if not fed_already:
                    self._turns[-1].append(feed)
                fed_already = False
                logits = await self._run(feed)
                if self._abort.is_set():
                    break
                unfed = self._sample(processor.apply(logits), temperature, top_k)
                kind = processor.accept(unfed)
                self._reply_tokens.append(unfed)
                if kind is TokenClass.EOT:
                    self._reply_open = False
                yield TokenDelta(unfed, kind, len(self._reply_tokens) - 1)
                if kind is TokenClass.EOT:
                    return
                feed = engine.embed_ids([unfed])
                self.decode_steps += 1
        finally:
            # Whatever ended the reply, the last token handed out belongs to the history.
            self._unfed = unfed
            self._running = False
