"""Errors a user can cause and fix. The CLI prints them as one clear line, no traceback."""


class ParleyError(Exception):
    """Base of every error caused by input, configuration or files a user supplied."""


class ConfigError(ParleyError):
    """A configuration value, preset or config file is wrong."""


class AudioInputError(ParleyError):
    """Audio input that cannot be used: unreadable, empty, silent, non-finite."""


class CheckpointError(ParleyError):
    """A checkpoint directory is missing a part or holds a mismatched one."""


class EngineUnavailableError(ParleyError):
    """The requested engine cannot run here (e.g. vLLM is not installed)."""
