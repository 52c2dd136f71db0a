"""Parley: a full-duplex spoken dialogue agent.

The subpackages live in the repository's top-level folders (``agent/``, ``speech_io/``,
``tokenizers/``, ``llm/``, ``configs/``), mapped into this namespace by ``pyproject.toml``.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

# Run from a source checkout without an install (``python run_agent.py`` in a fresh clone),
# the subpackages sit beside this folder rather than inside it: let the import system look
# there too. An installed wheel has them inside, and this does nothing.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "run_agent.py").is_file() and (_checkout / "agent").is_dir():
    __path__.append(str(_checkout))  # noqa: F821

# The public API, imported on first use so that `import parley` stays light.
_EXPORTS = {
    "Agent": "parley.agent.service.api",
    "AgentSession": "parley.agent.service.api",
    "SessionSettings": "parley.agent.service.settings",
    "RealtimeServer": "parley.agent.service.server",
    "ServiceLimits": "parley.agent.service.limits",
    "AgentModel": "parley.agent.core.model",
    "DuplexSession": "parley.agent.core.session",
    "AgentState": "parley.agent.core.events",
    "Event": "parley.agent.core.events",
    "MonotonicClock": "parley.agent.core.clock",
    "VirtualClock": "parley.agent.core.clock",
    "ParleyConfig": "parley.config",
    "load_config": "parley.config",
    "ParleyError": "parley.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'parley' has no attribute {name!r}")
