"""Statements about measured results that an executed notebook can re-check (nbval).

A notebook cell tagged ``nbval-check-output`` must print the same text on every machine, yet the
numbers it is about drift with thread counts and library versions. :func:`expect` prints a statement
that stays the same while the value lies in a stated range, and fails loudly, with the measured value,
when it does not: a real regression fails ``make test``, float noise does not. The measured numbers
themselves are shown in the tables beside these cells.

A smoke run (``MEDVAE_SMOKE=1``: full mode's code run for a few steps on a few images, to show
that it runs to the end; see ``tests/test_full_smoke.py``) measures nothing worth checking:
there :func:`expect` prints a value outside its range instead of raising. Infinity is such a
value (a break-even that a few steps' timings never reach); a NaN is a broken run and still
raises.
"""

from __future__ import annotations

import math
import os

SMOKE_ENV = "MEDVAE_SMOKE"


def smoke_run() -> bool:
    """True in a smoke run (``$MEDVAE_SMOKE`` set to anything but empty or ``0``)."""
    return os.environ.get(SMOKE_ENV, "") not in ("", "0")


class ResultOutOfRange(AssertionError):
    """A measured result left the range the chapter states for it."""


def expect(
    label: str, value: float, low: float | None = None, high: float | None = None
) -> None:
    """Print ``label: <range statement> - yes`` if ``low <= value <= high``; raise otherwise
    (in a smoke run, print a miss that is not NaN instead: its numbers come from a few
    steps)."""
    value = float(value)
    if low is None and high is None:
        raise ValueError("give at least one of low and high")
    if low is not None and high is not None and low > high:
        raise ValueError(f"empty range [{low}, {high}]")
    if low is not None and high is not None:
        statement = f"between {low:g} and {high:g}"
    elif low is not None:
        statement = f"at least {low:g}"
    else:
        statement = f"at most {high:g}"
    ok = (
        math.isfinite(value)
        and (low is None or value >= low)
        and (high is None or value <= high)
    )
    if not ok:
        miss = f"{label}: expected {statement}, measured {value:.6g}"
        if smoke_run() and not math.isnan(value):  # a NaN fails a smoke run too
            print(f"{miss} (smoke run: not enforced)")
            return
        raise ResultOutOfRange(miss)
    print(f"{label}: {statement} - yes")
