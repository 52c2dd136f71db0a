"""The interleave schedule inside vLLM: a V1 logits processor with per-request state.

vLLM loads this class in its engine process by name (``logits_processors=[PROCESSOR]``
in process, ``--logits-processors`` for ``vllm serve``). A request opts in by carrying
:func:`schedule_args` in ``SamplingParams.extra_args`` (``vllm_xargs`` over HTTP), which
holds the vocabulary layout and the schedule as one JSON string, since the server side
accepts only flat string and number values there. Requests without it (cache priming)
pass through untouched.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from parley.config import ScheduleConfig
from parley.llm.logits import ScheduleLogitsProcessor
from parley.llm.schedule_args import ARG_KEY, parse_schedule, schedule_args
from parley.tokenizers.vocab import VocabLayout

__all__ = ["ARG_KEY", "PROCESSOR", "ScheduleAdapter", "schedule_args"]

PROCESSOR = "parley.llm.vllm_logits:ScheduleAdapter"


class _RequestSchedule:
    """One request's schedule; vLLM hands it the growing list of output ids each step."""

    def __init__(self, layout: VocabLayout, schedule: ScheduleConfig) -> None:
        self.layout = layout
        self.schedule = schedule
        self.processor: ScheduleLogitsProcessor | None = None

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        if self.processor is None:
            # The logits row may be wider than the layout's vocabulary (padded tables).
            self.processor = ScheduleLogitsProcessor(self.layout, self.schedule, logits.shape[-1])
        proc = self.processor
        for token in output_ids[len(proc.classes) :]:
            proc.accept(token)
        return proc.apply(logits)


class ScheduleAdapter(AdapterLogitsProcessor):
    """Applies :func:`parley.llm.schedule.allowed_next` to every request that asks for it."""

    def is_argmax_invariant(self) -> bool:
        # Masking changes the argmax, so greedy requests must run it too.
        return False

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        # Runs at admission, in the API process: a malformed schedule from any client of
        # `vllm serve` is that request's HTTP 400, not a crash of the engine core that
        # every conversation shares (which parsing it in the worker would be).
        spec = (sampling_params.extra_args or {}).get(ARG_KEY)
        if spec is None:
            return
        try:
            parse_schedule(spec)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{ARG_KEY} is not a Parley schedule: {exc}") from None

    def new_req_logits_processor(self, params) -> _RequestSchedule | None:
        spec = (params.extra_args or {}).get(ARG_KEY)
        if spec is None:
            return None
        return _RequestSchedule(*parse_schedule(spec))
