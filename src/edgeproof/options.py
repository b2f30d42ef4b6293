"""Validating library parameters: a one-line ``OptionError`` that names the parameter.

Library functions validate their own numeric parameters (threads, layers, batch sizes, budgets)
with these, so a negative thread count or a zero batch size is refused with the parameter's
*library* name (``OptionError("threads", ...)``) whether it came from the CLI or from Python.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from edgeproof.errors import OptionError

__all__ = ["positive_float", "positive_int", "threads_or_default"]


def positive_int(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``, else ``OptionError(name, ...)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(name, f"{value!r} is not an integer", f"give an integer >= {minimum}")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise OptionError(name, f"{number} is out of range", f"give an integer >= {minimum}{upper}")
    return number


def positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (``>= 0`` with ``allow_zero``), else ``OptionError``."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise OptionError(name, f"{value!r} is not a number", "give a positive number") from None
    if (
        isinstance(value, bool)
        or not math.isfinite(number)
        or number < 0
        or (number == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise OptionError(name, f"{value!r} is out of range", f"give a finite number {bound}")
    return number


def threads_or_default(name: str, value: Any) -> int | None:
    """``None`` (the default thread count) or a thread count >= 1."""
    return None if value is None else positive_int(name, value)
