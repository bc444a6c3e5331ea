"""Errors raised for bad user input."""


class ConfigError(ValueError):
    """A config field has a bad value. The message names the field and what is allowed."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read. The message names the path, the cause and what to do."""
