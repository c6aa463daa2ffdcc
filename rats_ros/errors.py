"""Typed errors, one per layer. Each message says what went wrong and what to do about it.

The node and the CLI catch :class:`RatsError` at their boundary and report its message
(``success=false`` or a non-zero exit); anything else is a bug and is allowed to surface.
"""


class RatsError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(RatsError):
    """A configuration value is out of its allowed range."""


class FrameError(RatsError):
    """An image or frame cannot be used (encoding, size, stamp)."""


class ModelError(RatsError):
    """A model cannot be loaded or run."""


class StoreError(RatsError):
    """The caption store cannot be opened, read or written."""


class QuestionError(RatsError):
    """A question or its time window is invalid, or nothing can answer it yet."""


class AnswerCancelled(QuestionError):
    """The asker cancelled the question while it was being answered (the AskVideo action)."""


class InputError(RatsError):
    """An offline input (rosbag2 directory, video file) is missing, empty or corrupt."""


class StoreRefused(StoreError, ConfigError):
    """The database server answered but refused the store's settings (wrong user or password,
    missing database, not a caption store): retrying cannot help; fix the URL (exit code 2)."""


class StoreUnavailable(StoreError):
    """The database server cannot be reached now (down, network): an outage, not a setting;
    writers spool captions locally and retry."""
