"""Errors that dataforge reports to users as one clear line."""


class DataforgeError(Exception):
    """A user-facing error: its message is one line that names the key, column or file."""


class ConfigError(DataforgeError):
    """The configuration is invalid."""


class InputError(DataforgeError):
    """The input dataset cannot be used as configured."""


class PlanMismatchError(DataforgeError):
    """Existing outputs were made from another plan; nothing is overwritten."""
