"""Output hygiene for the committed notebooks: keep the outputs, drop what changes on every run.

papermill stamps start and end times and durations on the notebook and on every cell, and Jupyter adds
execution timestamps; none of it is content, and all of it makes a re-run of an unchanged notebook
show up as a diff. ``python -m medvae_lib.nbhygiene notebooks/*.ipynb`` removes it in place (the Makefile
runs it after executing each notebook, and the pre-commit hook runs it before every commit);
``--check`` only reports, and exits 1 if a notebook needs cleaning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

CELL_KEYS = (
    "papermill",
    "execution",
    "collapsed",
    "scrolled",
)  # volatile or view-only cell metadata
NOTEBOOK_KEYS = ("papermill", "widgets")


def clean(nb: nbformat.NotebookNode) -> bool:
    """Remove volatile metadata from ``nb`` in place; return whether anything was removed."""
    changed = False
    for key in NOTEBOOK_KEYS:
        changed |= nb.metadata.pop(key, None) is not None
    info = nb.metadata.get("language_info", {})
    for key in [
        k for k in info if k != "name"
    ]:  # the Python patch version of whoever ran it last
        info.pop(key)
        changed = True
    for cell in nb.cells:
        for key in CELL_KEYS:
            changed |= cell.metadata.pop(key, None) is not None
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument(
        "--check",
        action="store_true",
        help="report notebooks that need cleaning; change nothing",
    )
    args = parser.parse_args(argv)
    dirty = []
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        if clean(nb):
            dirty.append(path)
            if not args.check:
                nbformat.write(nb, path)
    verb = "need cleaning" if args.check else "cleaned"
    if dirty:
        print(f"{verb}: {', '.join(map(str, dirty))}")
    return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main())
