"""Errors raised for bad user input."""


class ConfigError(ValueError):
    """A config field has a bad value. The message names the field and what is allowed."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read. The message names the path, the cause and what to do."""


class StageInputError(FileNotFoundError):
    """A stage's input is missing, unfinished, incomplete or stale. The message names it and the stage to run first."""
