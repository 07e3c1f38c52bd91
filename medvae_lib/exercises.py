"""Checks for the chapters' exercises: ``exercises.check_<chapter>_<n>(answer, ...)``.

A chapter's exercise asks for something that can be computed; the student writes ``answer = ...`` and
runs the check cell, which prints whether the answer is right and, if not, a hint. The checks of chapter
``NN`` live in ``medvae_lib/exercise_checks/chNN.py`` (one file per chapter, so chapters do not edit one
shared file); this module finds them by name, so ``exercises.check_05_1`` is ``exercise_checks.ch05.check_05_1``.

Every check returns ``True`` or ``False`` and prints one line starting with "Right" or "Not yet". The
executed book shows the reference solution passing its check (nbval re-checks that output), and
``tests/test_exercises.py`` proves each check rejects a plausible wrong answer. A check reached through
this module first answers "Not yet: set `answer` first" while ``answer is None``: that is what the
student copy of the notebooks (``python -m medvae_lib.student_copy``) leaves in place of each solution.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from collections.abc import Callable

import numpy as np

_NAME = re.compile(r"check_(\d\d)_(\d+)")


def report(ok: bool, right: str, hint: str) -> bool:
    """Print "Right: <right>" or "Not yet: <hint>" and return ``ok``."""
    print(f"Right: {right}" if ok else f"Not yet: {hint}")
    return bool(ok)


def as_number(answer, what: str = "the answer") -> float:
    """``answer`` as a float, or a clear error naming what was expected."""
    try:
        value = float(np.asarray(answer, dtype=float).item())
    except (TypeError, ValueError):
        raise TypeError(f"{what} should be a single number, got {type(answer).__name__}: {answer!r:.80}") from None
    return value


def close(answer, expected, rtol: float = 1e-3, atol: float = 1e-6) -> bool:
    """Whether a number or array equals ``expected`` within tolerances (shapes must match)."""
    a, e = np.asarray(answer, dtype=float), np.asarray(expected, dtype=float)
    return a.shape == e.shape and bool(np.allclose(a, e, rtol=rtol, atol=atol))


UNANSWERED = "set `answer` first: replace `answer = None` with your result and run both cells again"


class Verdict(int):
    """A check's answer: true or false like a bool, but shown by nothing in a notebook (the printed line
    is the message). A plain bool would be echoed as ``True`` after the line, and a trailing ``;`` hides
    it only where IPython keeps the cell's history, which nbval's kernel does not."""

    def __new__(cls, ok: bool):
        return super().__new__(cls, bool(ok))

    def __repr__(self) -> str:
        return repr(bool(self))

    def _ipython_display_(self) -> None:
        pass


def guarded(check: Callable) -> Callable:
    """``check`` that first says "Not yet: set `answer` first" while ``answer is None`` (the student copy's
    placeholder), so the chapter's check never fails on a missing answer with an unrelated error."""

    @functools.wraps(check)
    def checked(answer, *args, **kwargs):
        if answer is None:
            return Verdict(report(False, "", UNANSWERED))
        return Verdict(check(answer, *args, **kwargs))

    return checked


def all_checks() -> dict[str, Callable]:
    """Every check of every chapter, by name (each as ``exercises.check_NN_k`` returns it)."""
    from . import exercise_checks

    found = {}
    for info in pkgutil.iter_modules(exercise_checks.__path__):
        module = importlib.import_module(f"{exercise_checks.__name__}.{info.name}")
        found.update({n: guarded(f) for n, f in vars(module).items() if _NAME.fullmatch(n) and callable(f)})
    return found


def __getattr__(name: str):
    match = _NAME.fullmatch(name)
    if match is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__.rsplit('.', 1)[0]}.exercise_checks.ch{match[1]}")
    except ModuleNotFoundError:
        raise AttributeError(
            f"no exercise checks for chapter {match[1]} (medvae_lib/exercise_checks/ch{match[1]}.py)"
        ) from None
    try:
        return guarded(getattr(module, name))
    except AttributeError:
        known = sorted(n for n in vars(module) if _NAME.fullmatch(n))
        raise AttributeError(f"chapter {match[1]} has no check {name!r}; it has {known}") from None
