"""Kubernetes resource quantities (``100m``, ``1.5Gi``, ``2e3``) as exact fractions.

Quantities are kept as :class:`fractions.Fraction` so that sums and comparisons are exact (a
scheduler adding ``100m`` ten times gets exactly ``1``).
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction
from typing import Any

FORMAT_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"

_RE = re.compile(r"([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(.*)")
_EXP_RE = re.compile(r"[eE]([+-]?[0-9]+)")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
            "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
            "P": Fraction(10**15), "E": Fraction(10**18)}
# Far beyond any real resource, and small enough that 10**exp stays cheap on hostile input.
_MAX_EXPONENT = 64
_MAX_LEN = 128


def parse_quantity(value: str | int | float) -> Fraction:
    """The exact value of a quantity string (or a JSON number).

    Raises ``ValueError`` with Kubernetes' wording for anything that is not a quantity, including
    booleans, NaN and infinities.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}: {FORMAT_ERROR}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"invalid quantity {value!r}: must be a finite number")
        return Fraction(repr(value))
    if not isinstance(value, str):
        raise ValueError(f"invalid quantity of type {type(value).__name__}: {FORMAT_ERROR}")
    return _parse_text(value)


@functools.lru_cache(maxsize=4096)
def _parse_text(value: str) -> Fraction:
    # Cached: a cluster repeats the same few quantities ("100m", "128Mi") in every pod, and a
    # Fraction is immutable, so sharing the result is safe. Errors are not cached (they raise).
    text = value.strip()
    if not text or len(text) > _MAX_LEN:
        raise ValueError(f"invalid quantity {value!r}: {FORMAT_ERROR}")
    m = _RE.fullmatch(text)
    if not m:
        raise ValueError(f"invalid quantity {value!r}: {FORMAT_ERROR}")
    sign, number, suffix = m.groups()
    try:
        base = Fraction(number)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"invalid quantity {value!r}: {FORMAT_ERROR}") from None
    if suffix in _BINARY:
        scale = Fraction(_BINARY[suffix])
    elif suffix in _DECIMAL:
        scale = _DECIMAL[suffix]
    else:
        e = _EXP_RE.fullmatch(suffix)
        if not e:
            raise ValueError(f"invalid quantity {value!r}: unknown suffix {suffix!r}; {FORMAT_ERROR}")
        exp = int(e.group(1))
        if abs(exp) > _MAX_EXPONENT:
            raise ValueError(f"invalid quantity {value!r}: exponent out of range")
        scale = Fraction(10) ** exp
    result = base * scale
    return -result if sign == "-" else result


def is_quantity(value: Any) -> bool:
    """Whether ``value`` parses as a quantity (never raises)."""
    try:
        parse_quantity(value)
    except ValueError:
        return False
    return True


def format_cpu(value: Fraction) -> str:
    """CPU as Kubernetes prints it: ``2``, ``250m``, or ``1234567n`` for finer amounts (rounded up)."""
    if value.denominator == 1:
        return str(value.numerator)
    milli = value * 1000
    if milli.denominator == 1:
        return f"{milli.numerator}m"
    return f"{math.ceil(value * 10**9)}n"


def format_memory(value: Fraction) -> str:
    """Bytes in the largest binary unit that divides them exactly (``512Mi``); fractions round up."""
    n = math.ceil(value)
    if n == 0:
        return "0"
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
