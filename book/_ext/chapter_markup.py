"""The chapters' Colab-readable markup, read by the book as MyST.

The notebooks are written so that Colab and JupyterLab show every exercise, solution, citation and
piece of library code (``medvae_lib.markup`` says how). Before MyST-NB parses a chapter, this extension
rewrites its markdown cells with ``medvae_lib.markup.to_myst``: exercises and solutions become
sphinx-exercise's boxes and dropdowns, citation links become ``{cite:t}`` / ``{cite:p}`` roles.

It also numbers each exercise by its label, so the site says "Exercise 5.1" for ``ex-05-1`` as the
notebook does (sphinx-exercise would number them through the whole book: 1 to 30).
"""

from __future__ import annotations

import nbformat

from medvae_lib.markup import EXERCISE_LABEL, myst_notebook


def _chapter(docname: str) -> bool:
    return docname.startswith("notebooks/")


def _to_myst(app, docname, source):
    if _chapter(docname) and str(app.env.doc2path(docname)).endswith(".ipynb"):
        nb = nbformat.reads(source[0], as_version=4)
        source[0] = nbformat.writes(myst_notebook(nb))


def _number_exercises(app, env):
    """Exercise ``ex-NN-K`` is numbered NN.K (sphinx-exercise reads env.toc_fignumbers, which Sphinx's
    toctree collector fills on the same event: this handler runs after it)."""
    for numbers in env.toc_fignumbers.values():
        for node_id in numbers.get("exercise", {}):
            if match := EXERCISE_LABEL.fullmatch(node_id):
                numbers["exercise"][node_id] = (int(match[1]), int(match[2]))
    return []


def setup(app):
    app.connect("source-read", _to_myst)
    app.connect("env-get-updated", _number_exercises, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
