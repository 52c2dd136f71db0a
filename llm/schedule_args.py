"""The interleave schedule as a request argument, for vLLM's logits processor.

Kept apart from :mod:`parley.llm.vllm_logits`, which imports vLLM: a client of
``vllm serve`` builds these arguments but need not have vLLM at all, and importing it
there cost the first reply of every client process about 1.8 s (measured: 1.8-2.1 s for
the first reply, 16-60 ms for every later one).
"""

from __future__ import annotations

import json
from functools import lru_cache

from parley.config import ScheduleConfig
from parley.tokenizers.vocab import VocabLayout

ARG_KEY = "parley_schedule"


def schedule_args(layout: VocabLayout, schedule: ScheduleConfig) -> dict[str, str]:
    """The ``extra_args`` that make a request follow ``schedule``: the layout and the
    schedule as one JSON string (the server accepts only flat values there)."""
    spec = {"layout": layout.model_dump(mode="json"), "schedule": schedule.model_dump()}
    return {ARG_KEY: json.dumps(spec, sort_keys=True)}


@lru_cache(maxsize=64)
def parse_schedule(spec: str) -> tuple[VocabLayout, ScheduleConfig]:
    """The layout and schedule :func:`schedule_args` wrote (ValueError, KeyError or
    TypeError for anything else)."""
    raw = json.loads(spec)
    return VocabLayout.model_validate(raw["layout"]), ScheduleConfig.model_validate(raw["schedule"])
