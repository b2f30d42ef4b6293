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

Messages name **library parameters**, marked with :func:`param` (``param("eps")``): ``str(exc)``
shows the parameter's name (``eps``), and the CLI renders the same message with its own flag
(``--eps``) through one table (:meth:`EdgeproofError.render`), so a library message never names
a flag and a CLI message never names a Python argument.

::

    EdgeproofError
    ├── UserError                        exit code 2: your input is wrong
    │   ├── InputFileError               a file is missing, unreadable, truncated or corrupt
    │   │   ├── ModelFileError
    │   │   │   └── UnsafeCodeError      loading would run code from the file (trust_code=True)
    │   │   │       └── UnsafePickleError    a pickle (trust_pickle=True is the old name)
    │   │   ├── DataFileError
    │   │   ├── PolicyFileError
    │   │   ├── SealFileError            (integrity.seal) a seal file is malformed or edited
    │   │   ├── SealedPathError          (integrity.seal) a sealed path vanished or changed format
    │   │   ├── ProofFileError           (integrity.proof)
    │   │   └── KeyFileError             (integrity.signing)
    │   ├── ArchitectureMismatchError    the weights do not fit the architecture
    │   ├── OptionError                  an option/argument value is invalid
    │   ├── SpecError                    input shape/domain does not fit the model or data
    │   ├── DataError                    the data's content is invalid (NaN, labels out of range)
    │   ├── ModelError                   the model's content is invalid (NaN/Inf outputs)
    │   ├── NotApplicableError           a compression step cannot apply (search: skipped)
    │   ├── MissingExtraError            an optional dependency is not installed (names the extra)
    │   ├── NotAClassifierError          (methods.backdoor.head) the last layer is no class head
    │   ├── ReportMismatchError          (report.diff) the two reports are not of one model
    │   └── SignatureKeyError            (integrity.seal) kept for callers that catch it
    ├── PolicyViolation                  exit code 1: a threshold failed (not an input error)
    ├── WeightTamperError                exit code 1: (integrity.guard) weights differ from seal
    └── InternalError                    exit code 3: a bug in edgeproof or a library it calls
        └── CheckFailed

The tree above is checked against the classes themselves (``tests/test_errors.py``), and so is
the copy in the README.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "ArchitectureMismatchError",
    "CheckFailed",
    "DataError",
    "DataFileError",
    "EdgeproofError",
    "InputFileError",
    "InternalError",
    "MissingExtraError",
    "ModelError",
    "ModelFileError",
    "NotApplicableError",
    "OptionError",
    "PolicyFileError",
    "PolicyViolation",
    "SpecError",
    "UnsafeCodeError",
    "UnsafePickleError",
    "UserError",
    "param",
    "render_text",
]

_MARK = re.compile(r"\u27e8([^\u27e9]+)\u27e9")


def param(name: str, switch: bool = False) -> str:
    """Mark the library parameter ``name`` inside an error message.

    ``str(error)`` shows the bare name (``name=True`` for a ``switch``, a boolean parameter the
    advice turns on); the CLI shows the flag that sets it (:meth:`EdgeproofError.render`).
    """
    return f"\u27e8{name}{'=True' if switch else ''}\u27e9"


def render_text(text: str, name_of: Callable[[str], str] | None = None) -> str:
    """``text`` with each :func:`param` marker replaced by ``name_of(parameter)`` (default: the
    parameter's own name). Skip reasons and other messages that name parameters go through it."""

    def name(m: re.Match[str]) -> str:
        marked = m.group(1)
        if name_of is None:
            return marked
        return name_of(marked.removesuffix("=True"))

    return _MARK.sub(name, text)


class EdgeproofError(Exception):
    """Base of every error edgeproof raises on purpose."""

    exit_code: int = 3

    def render(self, name_of: Callable[[str], str] | None = None) -> str:
        """The message with each :func:`param` marker replaced by ``name_of(parameter)``
        (default: the parameter's own name)."""
        return render_text(super().__str__(), name_of)

    def parameters(self) -> list[str]:
        """The library parameters the message names."""
        return [m.removesuffix("=True") for m in _MARK.findall(super().__str__())]

    def __str__(self) -> str:
        return self.render()

    def __reduce__(self) -> tuple[Any, ...]:
        # the subclasses' __init__ take their parts (path, problem, fix), not the message: an
        # error raised in a worker process comes back as the same type with the same message
        # and attributes, rebuilt without calling __init__ again
        return (_rebuilt, (type(self), self.args, dict(self.__dict__)))


def _rebuilt(cls: type[EdgeproofError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


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
    """A parameter has an invalid value: ``<parameter>: <problem>. <fix>``.

    ``option`` is the library parameter (``eps``, ``max_drop``, ``adversarial.max_samples``);
    the CLI shows the flag that sets it.
    """

    def __init__(self, option: str, problem: str, fix: str = "") -> None:
        self.option = option
        text = f"{param(option)}: {problem}"
        if fix:
            text += f". {fix}"
        super().__init__(text)


class SpecError(UserError):
    """The input specification does not fit the model or the data."""


class DataError(UserError):
    """The data's content is invalid (NaN/Inf, labels out of range, empty)."""


class ModelError(UserError):
    """The model's content is invalid: e.g. it returns NaN or Inf logits (broken weights)."""


class NotApplicableError(UserError):
    """A compression step cannot apply to this model (e.g. no layer pair can lose channels, no
    split points are known for early exits): not a misconfiguration, a property of the model.

    The compression search records the candidate as skipped with this message as the reason;
    called directly, the step's caller sees it like any other input error (exit code 2).
    """


class MissingExtraError(UserError):
    """An optional dependency is not installed: ``<module> is not installed (needed <purpose>);
    install it with: pip install 'edgeproof[<extra>]'``.

    Raised where edgeproof imports the optional package (:func:`edgeproof.extras.needs_extra`),
    so the caller sees which extra to install rather than a ``ModuleNotFoundError``.
    """

    def __init__(self, extra: str, module: str, purpose: str) -> None:
        self.extra = extra
        self.module = module
        self.purpose = purpose
        super().__init__(
            f"{module} is not installed (needed {purpose}); "
            f"install it with: pip install 'edgeproof[{extra}]'"
        )


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
