"""The edgeproof exception tree.

Two branches, kept apart on purpose:

* :class:`UserError` — *your input is wrong* (a missing or corrupt file, an option out of range,
  weights that do not fit the architecture). The CLI prints the message as one line and exits
  with code 2, without a traceback. Every message names the file or option, says what is wrong and
  how to fix it.
* :class:`InternalError` — *something failed* inside edgeproof or a library it calls. Inside an
  audit, a check that raises is recorded as ``error`` and the other checks still run.

Third-party exceptions (safetensors, numpy, onnxruntime, torch) are converted at the boundary
where edgeproof calls them, so callers only ever catch ``EdgeproofError`` subclasses.

::

    EdgeproofError
    ├── UserError                    exit code 2
    │   ├── InputFileError           a file is missing, unreadable, truncated or corrupt
    │   │   ├── ModelFileError
    │   │   ├── DataFileError
    │   │   └── UnsafeCodeError      loading would run code from the file; trust_code=True
    │   │       └── UnsafePickleError    (a pickle; trust_pickle=True is the old name)
    │   ├── ArchitectureMismatchError
    │   ├── OptionError              an option/argument value is invalid
    │   ├── SpecError                input shape/domain does not fit the model or data
    │   ├── DataError                the data's content is invalid (NaN, labels out of range, empty)
    │   └── PolicyFileError
    ├── PolicyViolation              exit code 1 (a threshold failed; not an error of input)
    └── InternalError
        └── CheckFailed
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ArchitectureMismatchError",
    "CheckFailed",
    "DataError",
    "DataFileError",
    "EdgeproofError",
    "InputFileError",
    "InternalError",
    "ModelFileError",
    "OptionError",
    "PolicyFileError",
    "PolicyViolation",
    "SpecError",
    "UnsafeCodeError",
    "UnsafePickleError",
    "UserError",
]


class EdgeproofError(Exception):
    """Base of every error edgeproof raises on purpose."""

    exit_code: int = 3


class UserError(EdgeproofError):
    """The user's input is wrong; the message says what and how to fix it."""

    exit_code = 2


class InputFileError(UserError):
    """A file is missing, has the wrong type, or its content cannot be read.

    The message is ``"<path>: <problem>. <fix>"``.
    """

    def __init__(self, path: str | Path, problem: str, fix: str = "") -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        text = f"{self.path}: {problem}"
        if fix:
            text += f". {fix}"
        super().__init__(text)


class ModelFileError(InputFileError):
    """A model file cannot be loaded."""


class DataFileError(InputFileError):
    """A data file cannot be loaded."""


class UnsafeCodeError(ModelFileError):
    """Loading the file would run code from it (a pickle, a TorchScript op outside the allowlist,
    a compiled AOTInductor library); refused unless the caller passes ``trust_code=True``."""


class UnsafePickleError(UnsafeCodeError):
    """Loading the file would unpickle arbitrary objects (i.e. execute code from the file)."""


class ArchitectureMismatchError(UserError):
    """The weights do not fit the architecture; the message lists the tensors."""


class OptionError(UserError):
    """An option or argument has an invalid value: ``--<option>: <problem>. <fix>``."""

    def __init__(self, option: str, problem: str, fix: str = "") -> None:
        self.option = option
        text = f"{option}: {problem}"
        if fix:
            text += f". {fix}"
        super().__init__(text)


class SpecError(UserError):
    """The input specification does not fit the model or the data."""


class DataError(UserError):
    """The data's content is invalid (NaN/Inf, labels out of range, empty)."""


class PolicyFileError(InputFileError):
    """A policy file cannot be parsed or names an unknown metric/operator."""


class PolicyViolation(EdgeproofError):
    """A policy threshold failed (exit code 1)."""

    exit_code = 1


class InternalError(EdgeproofError):
    """Something failed inside edgeproof or a library it calls (a bug, not your input)."""

    exit_code = 3


class CheckFailed(InternalError):
    """A check could not complete; the runner records it and carries on."""
