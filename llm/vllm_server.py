"""The spoken LM on a separately started ``vllm serve``: scale-out and tensor parallelism.

Each reply is one streamed ``POST /v1/completions`` whose ``prompt_embeds`` carries the
conversation (a base64 ``torch.save`` of the embeddings, as vLLM's completions API takes
them) and whose ``vllm_xargs`` carry the schedule for the server's logits processor.
Closing the stream aborts the request on the server (vLLM aborts on client disconnect).

The server must run with the flags :func:`serve_command` writes (prompt embeddings on,
Parley's logits processor loaded, prompt-token details so the cache hits are reported);
``python run_agent.py lm-server`` starts it that way.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import AsyncGenerator
from pathlib import Path

import httpx
import torch

from parley.config import EngineConfig, ScheduleConfig
from parley.errors import EngineUnavailableError
from parley.llm.prompt_context import Chunk, PromptEngine, Sampling
from parley.tokenizers.vocab import VocabLayout


def serve_command(
    lm_dir: Path, engine: EngineConfig, host: str, port: int, extra: list[str] | None = None
) -> list[str]:
    """The ``vllm serve`` command line that serves ``lm_dir`` the way Parley needs it.

    It runs vLLM's CLI with this interpreter, so the server imports the same Parley (the
    logits processor) and the same vLLM as the agent.
    """
    from parley.llm.vllm_engine import engine_args

    args = engine_args(lm_dir, engine)
    cli = [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    cmd = [*cli, "serve", args.pop("model"), "--host", host, "--port", str(port)]
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            cmd += [flag, *map(str, value)]
        else:
            cmd += [flag, str(value)]
    return [*cmd, "--enable-prompt-tokens-details", *(extra or [])]


def encode_embeddings(prompt: torch.Tensor) -> str:
    buf = io.BytesIO()
    torch.save(prompt.contiguous(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class VLLMServerSpokenLM(PromptEngine):
    """Conversations served by a ``vllm serve`` process over HTTP."""

    def __init__(
        self,
        url: str,
        embeddings: torch.Tensor,
        layout: VocabLayout,
        schedule: ScheduleConfig,
        engine: EngineConfig,
        timeout_s: float = 30.0,
    ) -> None:
        super().__init__(embeddings, layout, schedule, engine)
        self.url = url.rstrip("/").removesuffix("/v1")
        try:
            models = httpx.get(f"{self.url}/v1/models", timeout=timeout_s).raise_for_status()
            card = models.json()["data"][0]
            self.model = card["id"]
            # The server's own limit, which a client's config cannot raise.
            self.context_limit = int(card.get("max_model_len") or engine.max_model_len)
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise EngineUnavailableError(
                f"no usable vLLM server at {self.url} ({exc}); start one with "
                "`python run_agent.py lm-server --checkpoint DIR`"
            ) from None
        self._client = httpx.AsyncClient(
            base_url=self.url, timeout=httpx.Timeout(timeout_s, read=None)
        )
        self._live: dict[str, httpx.Response] = {}
        self._aborted: set[str] = set()

    async def stream(
        self, request_id: str, prompt: torch.Tensor, sampling: Sampling
    ) -> AsyncGenerator[Chunk, None]:
        body = {
            "model": self.model,
            "prompt_embeds": encode_embeddings(prompt),
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "stop_token_ids": list(sampling.stop_token_ids),
            "ignore_eos": True,
            "skip_special_tokens": False,
            "return_token_ids": True,
            "stream": True,
            "stream_options": {"include_usage": True},
            "request_id": request_id,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.cache_salt is not None:
            body["cache_salt"] = sampling.cache_salt
        if sampling.extra_args:
            body["vllm_xargs"] = dict(sampling.extra_args)
        # Leaving this block before the stream ends closes the connection: the server
        # sees the disconnect and aborts the request.
        try:
            async with self._client.stream("POST", "/v1/completions", json=body) as response:
                self._live[request_id] = response
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    raise EngineUnavailableError(
                        f"vLLM server {self.url} refused the request "
                        f"({response.status_code}): {detail}"
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    usage = event.get("usage") or {}
                    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                    tokens = [t for c in event.get("choices", []) for t in c.get("token_ids") or []]
                    if tokens or cached is not None:
                        yield Chunk(tokens, cached)
        except httpx.HTTPError as exc:
            if request_id not in self._aborted:
                raise EngineUnavailableError(f"vLLM server {self.url}: {exc}") from None
        finally:
            self._live.pop(request_id, None)
            self._aborted.discard(request_id)

    async def abort_request(self, request_id: str) -> None:
        # The completions API has no abort call: closing the connection is the abort.
        response = self._live.get(request_id)
        if response is not None:
            self._aborted.add(request_id)
            await response.aclose()

    @property
    def running_requests(self) -> int:
        """Requests this client still has open on the server."""
        return len(self._live)

    async def aclose(self) -> None:
        await self.abort_all()
        await self._client.aclose()
