"""Errors that the command-line tools report as one line and exit code 2."""


class DataError(Exception):
    """A data problem the user can fix (missing or wrong files, a dataset folder in the way)."""


class UsageError(ValueError):
    """A flag or argument value that cannot work; the message names it and what was expected."""
