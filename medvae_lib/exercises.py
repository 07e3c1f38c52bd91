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

One home for the preamble every check needs: a check is decorated with :func:`answer_check` and names
how its answer is read (:func:`number`, :func:`numbers`, :func:`whole_numbers`, :func:`choice`,
:func:`number_mapping`). The reader turns the student's object into plain Python values (floats, ints,
a str) or raises :class:`NotYet` with a hint, so the check's own code never touches the raw answer: a
string, NaN, a tensor that requires grad or lives on another device, an object whose ``__eq__`` or
``__repr__`` raises, or an endless iterator is answered "Not yet: <hint>", never with a traceback.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math
import pkgutil
import re
from collections.abc import Callable

import numpy as np

_NAME = re.compile(r"check_(\d\d)_(\d+)")


def report(ok: bool, right: str, hint: str) -> bool:
    """Print "Right: <right>" or "Not yet: <hint>" and return ``ok``."""
    print(f"Right: {right}" if ok else f"Not yet: {hint}")
    return bool(ok)


class NotYet(TypeError):
    """An answer that cannot be read as what the exercise asks for; the message is the hint that
    :func:`answer_check` prints after "Not yet: ". A ``TypeError``, so code that called
    :func:`as_number` directly keeps working."""


def _shown(answer, width: int = 60) -> str:
    """``type: repr`` of an answer for a hint, cut to ``width``; never raises (a hostile ``__repr__``)."""
    try:
        text = repr(answer)
    except Exception:  # noqa: BLE001 - any object may be handed in
        text = "<unprintable>"
    if len(text) > width:
        text = text[: width - 3] + "..."
    return f"{type(answer).__name__}: {text}"


def _plain_array(answer, what: str) -> np.ndarray:
    """``answer`` as a float array, refusing text, booleans, complex numbers and tensors that are not
    plain CPU values; raises :class:`NotYet` naming the problem."""
    if isinstance(answer, (str, bytes)):
        raise NotYet(
            f"{what} should be a number, not the text {_shown(answer)} (drop the quotes)"
        )
    if isinstance(answer, (bool, np.bool_)):
        raise NotYet(f"{what} should be a number, not {answer}")
    device = getattr(answer, "device", None)
    if device is not None and hasattr(answer, "detach"):  # a torch tensor
        if getattr(answer, "requires_grad", False):
            raise NotYet(
                f"{what} is a tensor that requires grad: give a plain number, e.g. answer.item()"
            )
        if getattr(device, "type", "cpu") != "cpu":
            raise NotYet(
                f"{what} is a tensor on device {device}: move it to the CPU, e.g. answer.cpu().item()"
            )
    try:
        array = np.asarray(answer)
        if array.dtype.kind in "USbc":
            raise TypeError(array.dtype)
        return array.astype(float)
    except Exception:  # noqa: BLE001 - whatever the object raises, the student gets a hint
        raise NotYet(f"{what} should be a number, got {_shown(answer)}") from None


def as_number(answer, what: str = "the answer") -> float:
    """``answer`` as a finite float (a number, a 0-d or one-element array or CPU tensor), or
    :class:`NotYet` (a ``TypeError``) naming what was expected."""
    array = _plain_array(answer, what)
    if array.size != 1:
        raise NotYet(f"{what} should be a single number, got {_shown(answer)}")
    value = float(array.reshape(-1)[0])
    if not math.isfinite(value):
        raise NotYet(
            f"{what} is {value}: compute a finite number (look for a division by zero or a log of 0)"
        )
    return value


def _items(answer, count: int | None, what: str, hint: str) -> list:
    """Up to ``count`` items of an iterable answer (never more than :data:`MOST_ITEMS` are read, so an
    endless iterator is refused); text and non-iterables raise :class:`NotYet` with ``hint``."""
    if isinstance(answer, (str, bytes, dict)):
        raise NotYet(f"{hint} (got {_shown(answer)})")
    limit = MOST_ITEMS if count is None else count
    try:
        items = list(itertools.islice(iter(answer), limit + 1))
    except Exception:  # noqa: BLE001 - not iterable, or its iterator raised
        raise NotYet(f"{hint} (got {_shown(answer)})") from None
    if len(items) > limit:
        raise NotYet(f"{hint} (got more than {limit} {what})")
    if count is not None and len(items) != count:
        raise NotYet(
            f"{hint} (got {len(items)} {what.removesuffix('s') if len(items) == 1 else what})"
        )
    return items


MOST_ITEMS = 10_000


def number(what: str = "the answer") -> Callable:
    """Reader for :func:`answer_check`: one finite number, as a float."""
    return functools.partial(as_number, what=what)


def numbers(count: int, what: str, hint: str) -> Callable:
    """Reader: exactly ``count`` finite numbers (a tuple, list, array or tensor), as a list of floats;
    ``hint`` says what to give when the answer has another length or is no sequence."""

    def read(answer) -> list[float]:
        return [as_number(item, what) for item in _items(answer, count, "items", hint)]

    return read


def whole_numbers(what: str, hint: str) -> Callable:
    """Reader: any number of whole numbers (``16`` or ``16.0``, not ``16.9``), as a list of ints."""

    def read(answer) -> list[int]:
        values = [as_number(item, what) for item in _items(answer, None, "items", hint)]
        for value in values:
            if value != round(value):
                raise NotYet(f"{value:g} is not a whole number: {hint}")
        return [int(round(value)) for value in values]

    return read


def choice(
    options, hint: str, normalise: Callable[[str], str] | None = None
) -> Callable:
    """Reader: a string, as a plain ``str`` (``normalise`` may rewrite it, raising ``ValueError`` for a
    malformed one); ``options``, when given, are the only strings accepted."""

    def read(answer) -> str:
        if not isinstance(answer, str):
            raise NotYet(f"{hint} (got {_shown(answer)})")
        text = str.__str__(answer)  # a plain str: a subclass's __eq__ is never called
        if normalise is not None:
            try:
                text = normalise(text)
            except ValueError as error:
                raise NotYet(f"{error}; {hint}") from None
        if options is not None and text not in options:
            raise NotYet(f"{hint} (got {text[:40]!r})")
        return text

    return read


def number_mapping(what: str, hint: str) -> Callable:
    """Reader: a dict from names (str) to finite numbers, as a plain ``{str: float}``."""

    def read(answer) -> dict[str, float]:
        if not isinstance(answer, dict) or not all(isinstance(k, str) for k in answer):
            raise NotYet(f"{hint} (got {_shown(answer)})")
        return {
            str.__str__(k): as_number(v, f"{what} of {str.__str__(k)!r}")
            for k, v in answer.items()
        }

    return read


def close(answer, expected, rtol: float = 1e-3, atol: float = 1e-6) -> bool:
    """Whether a number or array equals ``expected`` within tolerances (shapes must match)."""
    a, e = np.asarray(answer, dtype=float), np.asarray(expected, dtype=float)
    return a.shape == e.shape and bool(np.allclose(a, e, rtol=rtol, atol=atol))


def graded(
    answer, cases, otherwise: str, rtol: float = 1e-3, atol: float = 1e-6
) -> bool:
    """Grade a numeric ``answer`` against ``cases``, in order, each ``(expected, right, message)``:
    the first ``expected`` the answer is :func:`close` to decides, with "Right: <message>" if
    ``right`` and the hint "Not yet: <message>" if not (a known mistake, e.g. the sign flipped).
    An answer close to none of them gets the hint ``otherwise``."""
    for expected, right, message in cases:
        if close(answer, expected, rtol=rtol, atol=atol):
            return report(right, message if right else "", "" if right else message)
    return report(False, "", otherwise)


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


def answer_check(read: Callable | None = None) -> Callable:
    """Decorator of every exercise check ``check_NN_k(answer, ...)``: the one home of the preamble.

    While ``answer is None`` it says "Not yet: set `answer` first". Otherwise ``read`` (one of the readers
    above; None passes the answer through, for a check that only asks ``isinstance``) turns the answer
    into plain values that the check receives instead; a reader or the check raising :class:`NotYet`
    prints "Not yet: <its message>". The check prints its own "Right"/"Not yet" line with
    :func:`report`, and the result is a :class:`Verdict`. Errors in the check's *other* arguments (the
    notebook's objects) still raise: they are the chapter's bug, not the student's."""

    def decorate(check: Callable) -> Callable:
        @functools.wraps(check)
        def checked(answer, *args, **kwargs):
            if answer is None:
                return Verdict(report(False, "", UNANSWERED))
            try:
                value = answer if read is None else read(answer)
                return Verdict(check(value, *args, **kwargs))
            except NotYet as error:
                return Verdict(report(False, "", str(error)))

        checked.answer_check = True
        return checked

    return decorate


def guarded(check: Callable) -> Callable:
    """``check`` with :func:`answer_check`'s preamble (a check already decorated is returned as it is),
    so the chapter's check never fails on a missing or unreadable answer with an unrelated error."""
    return check if getattr(check, "answer_check", False) else answer_check()(check)


def all_checks() -> dict[str, Callable]:
    """Every check of every chapter, by name (each as ``exercises.check_NN_k`` returns it)."""
    from . import exercise_checks

    found = {}
    for info in pkgutil.iter_modules(exercise_checks.__path__):
        module = importlib.import_module(f"{exercise_checks.__name__}.{info.name}")
        found.update(
            {
                n: guarded(f)
                for n, f in vars(module).items()
                if _NAME.fullmatch(n) and callable(f)
            }
        )
    return found


def __getattr__(name: str):
    match = _NAME.fullmatch(name)
    if match is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(
            f"{__name__.rsplit('.', 1)[0]}.exercise_checks.ch{match[1]}"
        )
    except ModuleNotFoundError:
        raise AttributeError(
            f"no exercise checks for chapter {match[1]} (medvae_lib/exercise_checks/ch{match[1]}.py)"
        ) from None
    try:
        return guarded(getattr(module, name))
    except AttributeError:
        known = sorted(n for n in vars(module) if _NAME.fullmatch(n))
        raise AttributeError(
            f"chapter {match[1]} has no check {name!r}; it has {known}"
        ) from None
