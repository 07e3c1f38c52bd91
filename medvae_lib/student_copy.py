"""A copy of the chapter notebooks for students: solutions removed, outputs cleared.

``python -m medvae_lib.student_copy notebooks _build/student_notebooks`` (or ``make student``) writes every
chapter notebook ``NN_name.ipynb`` of the first folder into the second. Cells tagged ``solution`` (the
``{solution-start}`` and ``{solution-end}`` markers, the reference code and any written answer between them)
are dropped; in place of each run of solution cells that held code it leaves one code cell
``answer = None  # your code here``, so the exercise's check cell still runs and says "Not yet: set
`answer` first" until the student fills it in. Every output and execution count is cleared. The copy is
refused if any solution directive would remain in it, so a mis-tagged cell cannot leak a solution.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

SOLUTION_TAG = "solution"
PLACEHOLDER = "answer = None  # your code here"
CHAPTER = re.compile(r"\d\d_.+\.ipynb")
_LEAK = re.compile(r"\{solution(-start|-end)?\}")


def is_solution(cell) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def student_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """``nb`` without its solutions and outputs (a new notebook; ``nb`` is not changed)."""
    out = copy.deepcopy(nb)
    cells, run = [], []  # run: the solution cells since the last other cell
    for cell in [*out.cells, None]:
        if cell is not None and is_solution(cell):
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
    leaks = [c.source.splitlines()[0] for c in cells if _LEAK.search(c.source)]
    if leaks:
        raise ValueError(f"{name}: solution directives in cells not tagged {SOLUTION_TAG!r}: {leaks}")
    out.cells = cells
    out.metadata.pop("papermill", None)
    return out


def write_student_copy(source: Path, dest: Path) -> list[Path]:
    """Write the student copy of every chapter notebook in the folder ``source`` into ``dest``."""
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise NotADirectoryError(f"{source} is not a folder of notebooks")
    if dest.resolve() == source.resolve():
        raise ValueError("the student copy would replace the notebooks with their solutions: choose another folder")
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
    parser.add_argument("source", type=Path, help="folder with the chapter notebooks (e.g. notebooks)")
    parser.add_argument("dest", type=Path, help="folder for the student copy (e.g. _build/student_notebooks)")
    args = parser.parse_args(argv)
    written = write_student_copy(args.source, args.dest)
    print(f"{len(written)} notebooks without solutions in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
