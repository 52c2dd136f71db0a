"""``run_agent.py chat``: a terminal voice chat over the duplex session."""

from parley.agent.chat.app import NOISE_WARNING, ChatApp
from parley.agent.chat.audio import AudioBackend, ChatEndpoint, DeviceBackend, VirtualBackend
from parley.agent.chat.conversation import AgentTurn, Conversation, UserTurn
from parley.agent.chat.settings import ChatSettings, apply_live
from parley.agent.chat.widgets import CUT_MARK

__all__ = [
    "CUT_MARK",
    "NOISE_WARNING",
    "AgentTurn",
    "AudioBackend",
    "ChatApp",
    "ChatEndpoint",
    "ChatSettings",
    "Conversation",
    "DeviceBackend",
    "UserTurn",
    "VirtualBackend",
    "apply_live",
]
