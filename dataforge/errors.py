"""Errors that dataforge reports to users as one clear line, and which HTTP answers are worth
retrying (the engine client and the Hub publisher share them)."""

# 408 Request Timeout, 429 Too Many Requests, and the server errors that pass.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class DataforgeError(Exception):
    """A user-facing error: its message is one line that names the key, column or file."""


class ConfigError(DataforgeError):
    """The configuration is invalid."""


class InputError(DataforgeError):
    """The input dataset cannot be used as configured."""


class ChunkJobError(DataforgeError):
    """A chunk job could not have its chunk made (the chunk job imports only this module and
    the standard library)."""


class PlanMismatchError(DataforgeError):
    """Existing outputs were made from another plan; nothing is overwritten."""
