"""Parley as a service: the Python embedding API and the Realtime-protocol WebSocket server.

``Agent`` loads a model once and opens any number of ``AgentSession`` on its engine;
``RealtimeServer`` serves an agent over a documented subset of the OpenAI Realtime API
(``docs/protocol.md``).
"""

from parley.agent.service.api import (
    Agent,
    AgentSession,
    CapacityError,
    SessionControlError,
    SessionIdError,
)
from parley.agent.service.limits import ServiceLimits
from parley.agent.service.settings import SessionSettings

__all__ = [
    "Agent",
    "AgentSession",
    "CapacityError",
    "ServiceLimits",
    "SessionControlError",
    "SessionIdError",
    "SessionSettings",
]
