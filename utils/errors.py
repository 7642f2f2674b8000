"""The project's error types under one base, so that every entry point catches `BertError` and prints one line.

A BertError is a problem the user can fix (a flag, a data file, a checkpoint, ...); its message names the flag,
file or field. Anything else that escapes is a bug of ours and keeps its traceback.
"""


class BertError(Exception):
    """Base of every error an entry point reports as one `error: ...` line."""


class UsageError(BertError):
    """A flag value or combination that makes no sense; the message names the flag."""


class DataError(BertError):
    """Bad or missing data files; the message names the file and field."""


class CheckpointError(BertError):
    """A checkpoint that cannot be read, written or does not fit the model; the message names the path."""
