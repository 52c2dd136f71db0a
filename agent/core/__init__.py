"""The duplex core: one conversation's session and its parts, below the applications.

``service/``, ``harness/`` and ``chat/`` import from here and never from each other.
"""
