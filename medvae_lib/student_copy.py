"""A copy of the chapter notebooks for students: solutions removed, outputs cleared.

``python -m medvae_lib.student_copy notebooks _build/student_notebooks`` (or ``make student``) writes every
chapter notebook ``NN_name.ipynb`` of the first folder into the second. Solutions are removed by structure:
every cell from a ``{solution-start}`` marker to its ``{solution-end}`` marker (as the book reads the
notebook's ``<!-- solution-start -->`` and ``<!-- solution-end -->`` cells: ``medvae_lib.markup``) (both included, whatever
their tags: a solution cell that lost its ``solution`` tag, or is tagged ``Solution`` or ``solutions``, is
removed all the same), a cell with a one-cell ``{solution}`` directive, and any other cell tagged
``solution``. In place of each run of removed cells that held code it leaves one code cell
``answer = None  # your code here``, so the exercise's check cell still runs and says "Not yet: set
`answer` first" until the student fills it in. Every output and execution count is cleared. A start
without an end (or an end without a start) is refused, naming the cell, and so is a copy in which any
solution directive would remain.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

from medvae_lib.markup import to_myst

SOLUTION_TAG = "solution"
PLACEHOLDER = "answer = None  # your code here"
CHAPTER = re.compile(r"\d\d_.+\.ipynb")
_LEAK = re.compile(r"\{solution(-start|-end)?\}")
_DIRECTIVE = r"^[ \t]*(?:`{3,}|:{3,})[ \t]*\{%s\}"  # a MyST directive opening a line
_START = re.compile(_DIRECTIVE % "solution-start", re.M)
_END = re.compile(_DIRECTIVE % "solution-end", re.M)
_WHOLE = re.compile(_DIRECTIVE % "solution", re.M)


def is_solution(cell) -> bool:
    """Whether the cell is tagged as a solution (``solution``, also spelt ``Solution`` or ``solutions``)."""
    tags = cell.get("metadata", {}).get("tags", [])
    return any(
        str(tag).strip().lower() in (SOLUTION_TAG, SOLUTION_TAG + "s") for tag in tags
    )


def solution_cells(cells, name: str = "notebook") -> list[bool]:
    """For each cell, whether it belongs to a solution: by structure (from a ``{solution-start}`` to its
    ``{solution-end}``, or a one-cell ``{solution}``) or by tag. Unbalanced markers raise ValueError."""
    inside, flags, opened = False, [], None
    for index, cell in enumerate(cells):
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        if cell.get("cell_type") == "markdown":
            source = to_myst(source)  # the notebooks' markers, as the book reads them
        starts, ends = len(_START.findall(source)), len(_END.findall(source))
        if starts > 1 or ends > 1 or (starts and inside):
            raise ValueError(
                f"{name}: cell {index} opens a solution inside another; close each with {{solution-end}}"
            )
        if ends and not (inside or starts):
            raise ValueError(
                f"{name}: cell {index} ends a solution that no {{solution-start}} opened"
            )
        if starts:
            inside, opened = True, index
        flags.append(inside or bool(_WHOLE.search(source)) or is_solution(cell))
        if ends:
            inside = False
    if inside:
        raise ValueError(
            f"{name}: the solution opened in cell {opened} has no {{solution-end}}"
        )
    return flags


def student_notebook(
    nb: nbformat.NotebookNode, name: str = "notebook"
) -> nbformat.NotebookNode:
    """``nb`` without its solutions and outputs (a new notebook; ``nb`` is not changed)."""
    out = copy.deepcopy(nb)
    cells, run = [], []  # run: the solution cells since the last other cell
    flags = solution_cells(out.cells, name)
    for cell, solution in [*zip(out.cells, flags, strict=True), (None, False)]:
        if solution:
            run.append(cell)
            continue
        if any(c.cell_type == "code" for c in run):
            cells.append(nbformat.v4.new_code_cell(PLACEHOLDER))
        run = []
        if cell is None:
            break
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    leaks = [
        c.source.splitlines()[0]
        for c in cells
        if _LEAK.search(to_myst(c.source) if c.cell_type == "markdown" else c.source)
    ]
    if leaks:
        raise ValueError(
            f"{name}: solution directives outside a solution's markers: {leaks}"
        )
    out.cells = cells
    out.metadata.pop("papermill", None)
    return out


def write_student_copy(source: Path, dest: Path) -> list[Path]:
    """Write the student copy of every chapter notebook in the folder ``source`` into ``dest``."""
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise NotADirectoryError(f"{source} is not a folder of notebooks")
    if dest.resolve() == source.resolve():
        raise ValueError(
            "the student copy would replace the notebooks with their solutions: choose another folder"
        )
    notebooks = sorted(p for p in source.glob("*.ipynb") if CHAPTER.fullmatch(p.name))
    if not notebooks:
        raise FileNotFoundError(f"no chapter notebooks (NN_name.ipynb) in {source}")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = student_notebook(nbformat.read(path, as_version=4), path.name)
        nbformat.write(nb, dest / path.name)
        written.append(dest / path.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "source", type=Path, help="folder with the chapter notebooks (e.g. notebooks)"
    )
    parser.add_argument(
        "dest",
        type=Path,
        help="folder for the student copy (e.g. _build/student_notebooks)",
    )
    args = parser.parse_args(argv)
    written = write_student_copy(args.source, args.dest)
    print(f"{len(written)} notebooks without solutions in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
