"""The spoken LM served by vLLM's ``AsyncLLM`` in this process.

Route: prompt embeddings. The checkpoint's ``lm/`` directory is served as the plain HF
causal LM it is; user audio (already run through the streaming encoder and adapter while
the user spoke) enters as rows of the prompt's embeddings, next to the embeddings of the
marker tokens and of earlier replies. The alternative, an out-of-tree multimodal model
with the encoder inside vLLM, would make vLLM re-encode audio that Parley has already
encoded block by block during the user's turn, and would tie the checkpoint to a model
class of ours in vLLM's registry; prompt embeddings keep ``lm/`` servable by a stock
``vllm serve``. See :mod:`parley.llm.prompt_context` for how turns reuse the prefix cache.

vLLM starts its engine core in a spawned process, so programs that create this engine
must guard their entry point with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from parley.config import EngineConfig, ScheduleConfig
from parley.errors import EngineUnavailableError
from parley.llm.prompt_context import Chunk, PromptEngine, Sampling
from parley.tokenizers.vocab import VocabLayout

if TYPE_CHECKING:
    from vllm.inputs import EmbedsPrompt


def import_vllm():
    """The ``vllm`` module, or a clear error saying how to get it."""
    # vLLM logs its start-up at INFO and performance advice at WARNING; a voice agent's
    # console needs its errors only (VLLM_LOGGING_LEVEL set by the user wins).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm\.")
    try:
        import vllm
    except ImportError as exc:
        raise EngineUnavailableError(
            f"the vllm engine needs vLLM 0.33.0, which is not installed ({exc}). "
            "In the checkout on a GPU machine: pip install -e '.[vllm]'; on CPU see docs/vllm.md"
        ) from None
    if not vllm.__version__.startswith("0.33.0"):
        raise EngineUnavailableError(
            f"Parley needs vLLM 0.33.0 (its prompt-embeds and logits-processor interfaces "
            f"changed between releases); found {vllm.__version__}"
        )
    return vllm


def served_length(lm_dir: Path, wanted: int) -> int:
    """``wanted`` positions, or fewer if the LM has fewer: vLLM refuses a longer
    ``max_model_len`` than the model's ``max_position_embeddings`` (RoPE past it is
    untrained), and the engine setting is a default, not a property of this model."""
    try:
        config = json.loads((Path(lm_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return wanted  # vLLM itself names a missing or broken config, with context
    limit = config.get("max_position_embeddings")
    return min(wanted, int(limit)) if isinstance(limit, int) and limit > 0 else wanted


def engine_args(lm_dir: Path, engine: EngineConfig) -> dict:
    """The vLLM engine arguments Parley serves ``lm_dir`` with (also used for ``vllm serve``)."""
    from parley.llm.vllm_logits import PROCESSOR

    args = {
        "model": str(lm_dir),
        "dtype": engine.dtype,
        "enable_prompt_embeds": True,
        "enable_prefix_caching": True,
        "enforce_eager": engine.eager,
        "max_model_len": served_length(lm_dir, engine.max_model_len),
        "seed": engine.seed,
        "logits_processors": [PROCESSOR],
    }
    if engine.tensor_parallel_size > 1:
        args["tensor_parallel_size"] = engine.tensor_parallel_size
    if engine.block_size:
        args["block_size"] = engine.block_size
    if engine.kv_cache_mb:
        args["kv_cache_memory_bytes"] = engine.kv_cache_mb << 20
    else:
        args["gpu_memory_utilization"] = engine.gpu_memory_utilization
    return args


class VLLMSpokenLM(PromptEngine):
    """Many conversations batched on one ``AsyncLLM``."""

    def __init__(
        self,
        lm_dir: Path,
        embeddings: torch.Tensor,
        layout: VocabLayout,
        schedule: ScheduleConfig,
        engine: EngineConfig,
    ) -> None:
        super().__init__(embeddings, layout, schedule, engine)
        import_vllm()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**engine_args(lm_dir, engine), disable_log_stats=True)
        self.llm = AsyncLLM.from_engine_args(args)
        # What vLLM settled on (the model's own limit caps the configured one).
        self.context_limit = int(self.llm.model_config.max_model_len)
        self._dtype = getattr(torch, engine.dtype)
        self._closed = False

    async def stream(
        self, request_id: str, prompt: torch.Tensor, sampling: Sampling
    ) -> AsyncGenerator[Chunk, None]:
        if self._closed:
            raise EngineUnavailableError("the vLLM engine has been shut down")
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            seed=sampling.seed,
            stop_token_ids=list(sampling.stop_token_ids),
            ignore_eos=True,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
            extra_args=dict(sampling.extra_args) or None,
        )
        # In the model's dtype, as vLLM's server casts them: the cache keys blocks by these bytes.
        request: EmbedsPrompt = {"prompt_embeds": prompt.to(self._dtype)}
        if sampling.cache_salt is not None:
            request["cache_salt"] = sampling.cache_salt
        first = True
        finished = False
        try:
            async for out in self.llm.generate(request, params, request_id):
                cached = out.num_cached_tokens if first else None
                first = False
                finished = out.finished
                yield Chunk(list(out.outputs[0].token_ids), cached)
        finally:
            if not finished:
                await self.llm.abort(request_id)

    async def abort_request(self, request_id: str) -> None:
        await self.llm.abort(request_id)

    @property
    def running_requests(self) -> int:
        """Requests the engine has not finished (what a closed session must leave at 0)."""
        return self.llm.get_num_unfinished_requests()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.abort_all()
            self.llm.shutdown()
            # Dropped now, while the interpreter is whole: AsyncLLM.__del__ shuts down
            # again, which fails noisily if it first runs during interpreter exit.
            del self.llm
