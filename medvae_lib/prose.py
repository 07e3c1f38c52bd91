"""Prose tied to results: a sentence of a chapter that states a result carries, right after it, an
invisible marker naming the result it states and what it says about it, e.g.

    ... beats resizing on MS-SSIM. <!-- result: with_adversarial_minus_resize.ms_ssim above 0 -->

The marker is an HTML comment: neither the book nor Jupyter shows it. ``tests/test_prose.py`` reads
every marker of every notebook and checks it against the chapter's results file (the numbers the
notebook wrote with :func:`medvae_lib.scorecard.write_results`, re-made by ``make book``): a sentence
whose claim the result does not support fails the test, and so does a marker naming a result that
does not exist. Each chapter's summary must carry at least one.

What a marker can say about a result, with its 95% interval where it has one (else its value):

* ``above X`` / ``below X``: the whole interval lies above / below X (a difference detected);
* ``holds X``: the interval holds X ("not detectable at this size"; a result without an interval
  cannot hold anything and fails);
* ``between A B``: the value lies in [A, B] (for numbers stated without a comparison).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MARKER = re.compile(r"<!--\s*result:\s*(?P<body>.*?)\s*-->", re.DOTALL)
_BODY = re.compile(
    r"(?P<key>[A-Za-z0-9_.\-]+)\s+(?P<says>above|below|holds|between)\s+(?P<numbers>[-+0-9.eE\s]+)"
)


class ProseError(ValueError):
    """A marker that cannot be read, or that its result contradicts."""


@dataclass(frozen=True)
class Marker:
    key: str
    says: str
    numbers: tuple[float, ...]
    cell: int  # index of the markdown cell that holds it

    def __str__(self) -> str:
        numbers = " ".join(f"{n:g}" for n in self.numbers)
        return f"cell {self.cell}: {self.key} {self.says} {numbers}"


def parse_marker(body: str, cell: int = -1) -> Marker:
    """The :class:`Marker` written as ``<!-- result: <body> -->``; ProseError if it cannot be read."""
    m = _BODY.fullmatch(body.strip())
    if m is None:
        raise ProseError(
            f"cell {cell}: cannot read the result marker {body!r}; write "
            "'<key> above|below|holds <number>' or '<key> between <low> <high>'"
        )
    try:
        numbers = tuple(float(x) for x in m["numbers"].split())
    except ValueError:
        raise ProseError(f"cell {cell}: {body!r}: the numbers cannot be read") from None
    wanted = 2 if m["says"] == "between" else 1
    if len(numbers) != wanted:
        raise ProseError(
            f"cell {cell}: {body!r}: '{m['says']}' takes {wanted} number(s)"
        )
    if wanted == 2 and numbers[0] > numbers[1]:
        raise ProseError(f"cell {cell}: {body!r}: the range is empty")
    return Marker(m["key"], m["says"], numbers, cell)


_LINE_START = re.compile(r"^[ \t]*<!--\s*result:", re.MULTILINE)


def markers(notebook) -> list[Marker]:
    """Every result marker in the markdown cells of ``notebook`` (an nbformat notebook). A marker
    must follow text on its line: one that starts a line starts an HTML block in Markdown, which
    cuts its paragraph or list item in two and shows the rest of the line as raw text."""
    found = []
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            if _LINE_START.search(cell.source):
                raise ProseError(
                    f"cell {i}: a result marker starts a line; put it after the sentence it checks, on the same line"
                )
            found += [parse_marker(m["body"], i) for m in MARKER.finditer(cell.source)]
    return found


def summary_markers(notebook) -> list[Marker]:
    """The markers of the chapter's summary (the markdown cell that starts with ``## Summary``)."""
    cells = [
        i
        for i, c in enumerate(notebook.cells)
        if c.cell_type == "markdown" and c.source.lstrip().startswith("## Summary")
    ]
    return [m for m in markers(notebook) if m.cell in cells]


def check(marker: Marker, results: dict) -> str:
    """Check ``marker`` against a chapter's results file (as :func:`~medvae_lib.scorecard.load_results`
    gives it): ProseError naming both if the result does not support what the marker says, else
    one line saying what was checked."""
    by_key = {r["key"]: r for r in results["results"]}
    if marker.key not in by_key:
        raise ProseError(f"{marker}: {results['chapter']} has no result {marker.key!r}")
    result = by_key[marker.key]
    value = result["value"]
    low, high = result.get("interval") or (value, value)
    shown = f"{value:.4g}" + (
        f" [{low:.4g}, {high:.4g}]" if "interval" in result else ""
    )
    says, numbers = marker.says, marker.numbers
    if says == "above":
        ok = low > numbers[0]
    elif says == "below":
        ok = high < numbers[0]
    elif says == "holds":
        ok = "interval" in result and low <= numbers[0] <= high
    else:
        ok = numbers[0] <= value <= numbers[1]
    if not ok:
        raise ProseError(
            f"{results['chapter']}, {marker}: the sentence says this, but the result is {shown} ({result['metric']})"
        )
    return f"{marker}: {shown}"


def check_notebook(path: str | Path, results: dict) -> list[str]:
    """Check every marker of the notebook at ``path``; the lines of :func:`check`. ProseError on the
    first contradiction, or when the summary carries no marker."""
    import nbformat

    notebook = nbformat.read(path, 4)
    if not summary_markers(notebook):
        raise ProseError(
            f"{Path(path).name}: its summary states no result with a result marker"
        )
    return [check(m, results) for m in markers(notebook)]
