"""Errors raised for bad user input."""


class ConfigError(ValueError):
    """A config field has a bad value. The message names the field and what is allowed."""
