"""The user-facing exception hierarchy.

Everything ragtune raises on purpose derives from `RagtuneError`. Errors are translated
only at the edges: the CLI prints `str(err)` and exits with `err.exit_code`; the HTTP API
maps `err.http_status`; the UI shows the message. Messages say what was wrong and how to fix it.
"""

from __future__ import annotations

from pathlib import Path


class RagtuneError(Exception):
    """Base class: a problem the user can act on (not a bug)."""

    exit_code = 1
    http_status = 400


class ConfigError(RagtuneError, ValueError):
    """A setting, flag or config file field has a bad value."""

    exit_code = 2
    http_status = 422

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"invalid value for `{field}`: {value!r}: {reason}")


class InputError(RagtuneError):
    """A file (and optionally a row/field in it) cannot be used."""

    http_status = 422

    def __init__(self, path: str | Path, reason: str, *, row: int | None = None,
                 field: str | None = None, hint: str | None = None) -> None:
        self.path, self.reason, self.row, self.field, self.hint = str(path), reason, row, field, hint
        where = self.path
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field `{field}`"
        msg = f"{where}: {reason}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class DatasetError(InputError):
    """A dataset file or a dataset_info.json entry is malformed."""


class IndexMismatchError(RagtuneError):
    """The index was built by a different embedder than the one opening it."""

    exit_code = 3
    http_status = 409


class ModelNotFoundError(RagtuneError):
    """A model id, directory or adapter name cannot be resolved."""

    http_status = 404


class NotFoundError(RagtuneError):
    """A named thing (run, document, answer id) does not exist."""

    http_status = 404


class BusyError(RagtuneError):
    """The service queue is full; the caller should retry later."""

    http_status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class TrainingError(RagtuneError):
    """Training cannot continue (NaN loss, finished run, bad resume state)."""
