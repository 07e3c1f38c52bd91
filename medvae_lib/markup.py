"""Chapter markup that reads the same in Colab, JupyterLab and the book.

The chapters are opened in three places: the book's site (Sphinx with MyST), Colab and JupyterLab.
MyST's directives and roles (```` ```{exercise} ````, ``{cite:p}`key` ``, ```` ```{literalinclude} ````)
are shown as raw text by the other two, and an included file is not there at all. So the notebooks
are written in plain Markdown that every renderer shows, with HTML comments (invisible everywhere)
naming what the book should make of it; ``to_myst`` turns it into MyST, and the book's Sphinx build
(``book/_ext/chapter_markup.py``) applies it to every chapter before parsing:

- an exercise is a cell ``<!-- exercise ex-05-1 -->`` + ``### Exercise 5.1: Title`` + its text, and
  becomes an ``{exercise}`` box labelled ``ex-05-1``;
- a solution starts with a cell ``<!-- solution-start ex-05-1 -->`` + ``#### Solution to Exercise 5.1``
  and ends with one ``<!-- solution-end -->`` + a line saying so; on the site the cells between are a
  dropdown (``{solution-start}`` / ``{solution-end}``);
- a citation is a link to the paper whose title names the key, ``[Varma et al. (2025)](url
  "cite:varma2025medvae")``, or such links in parentheses separated by ``;``; it becomes
  ``{cite:t}`` (or ``{cite:p}``) and so a link into the book's bibliography;
- library code is shown by a code cell ``show_code("medvae_3d/inflation.py", "inflate_state_dict")``
  whose output is the object's source (tagged ``remove-input`` so the site shows the code alone).
  ``python -m medvae_lib.markup --refresh notebooks/*.ipynb`` rewrites those outputs from the current
  library without executing anything; ``--check`` says which are out of date.

Text that is already MyST passes through ``to_myst`` unchanged.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

import nbformat

LIBRARY = Path(__file__).resolve().parent
EXERCISE_LABEL = re.compile(r"ex-(\d\d)-(\d+)")
_EXERCISE = re.compile(
    r"\A<!-- exercise (?P<label>\S+) -->\n### Exercise (?P<number>[\d.]+): (?P<title>.+)\n"
)
_SOLUTION_START = re.compile(
    r"\A<!-- solution-start (?P<label>\S+) -->\n#### Solution to Exercise (?P<number>[\d.]+)\n?\Z"
)
_SOLUTION_END = re.compile(r"\A<!-- solution-end -->\n\*End of the solution\.\*\n?\Z")
_LINK = r'\[[^\[\]\n]+\]\([^\s)]+ "cite:(?P<key{n}>[\w.-]+)"\)'
_CITE_T = re.compile(_LINK.format(n=""))
_CITE_P = re.compile(r"\((?:%s)(?:; %s)*\)" % (_LINK.format(n=""), _LINK.format(n="2")))
SHOW_CODE = re.compile(r'\Ashow_code\("(?P<path>[\w/]+\.py)", "(?P<name>[\w.]+)"\)\Z')


def exercise_number(label: str) -> str:
    """``ex-05-1`` -> ``5.1``: the chapter and the exercise's place in it, as the book numbers it."""
    match = EXERCISE_LABEL.fullmatch(label)
    if not match:
        raise ValueError(
            f"exercise label {label!r} is not of the form ex-NN-K (chapter NN, exercise K)"
        )
    return f"{int(match[1])}.{int(match[2])}"


def _checked_number(match: re.Match, text: str) -> str:
    label, number = match["label"], match["number"]
    if exercise_number(label) != number:
        raise ValueError(
            f"{label} is Exercise {exercise_number(label)}, but its heading says {number}: "
            f"{text.splitlines()[1]!r}"
        )
    return label


def _fence(body: str) -> str:
    """A backtick fence longer than any run of backticks in ``body``."""
    runs = [len(r) for r in re.findall(r"`{3,}", body)]
    return "`" * max([3, *(n + 1 for n in runs)])


def _cite_keys(text: str) -> list[str]:
    return [m["key"] for m in _CITE_T.finditer(text)]


_MARKER = re.compile(r"<!-- (exercise|solution-start|solution-end)\b")


def to_myst(markdown: str) -> str:
    """One markdown cell as the book's MyST parser should read it (see the module's docstring).
    A cell with an exercise or solution marker that is not written as the docstring says raises
    ValueError, so a mistyped marker never leaves a solution unfolded (or in a student copy)."""
    if match := _EXERCISE.match(markdown):
        label = _checked_number(match, markdown)
        body = markdown[match.end() :].rstrip("\n")
        fence = _fence(body)
        head = f"{fence}{{exercise}} {match['title']}\n:label: {label}\n"
        markdown = f"{head}{body}\n{fence}"
    elif match := _SOLUTION_START.match(markdown):
        label = _checked_number(match, markdown)
        return f"```{{solution-start}} {label}\n:class: dropdown\n```"
    elif _SOLUTION_END.match(markdown):
        return "```{solution-end}\n```"
    elif marker := _MARKER.search(markdown):
        raise ValueError(
            f"a cell with the marker '<!-- {marker[1]}' must be written as medvae_lib.markup "
            f"says (the marker first, then its heading line): {markdown[:120]!r}"
        )
    markdown = _CITE_P.sub(
        lambda m: "{cite:p}`%s`" % ",".join(_cite_keys(m[0])), markdown
    )
    return _CITE_T.sub(lambda m: "{cite:t}`%s`" % m["key"], markdown)


def myst_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose markdown cells are as the book reads them (``to_myst``)."""
    out = copy.deepcopy(nb)
    for cell in out.cells:
        if cell.cell_type == "markdown":
            cell.source = to_myst(cell.source)
    return out


def read_myst(path: str | Path) -> nbformat.NotebookNode:
    """The notebook at ``path`` as the book reads it (``myst_notebook``)."""
    return myst_notebook(nbformat.read(path, as_version=4))


def library_source(path: str, name: str) -> str:
    """The source of ``name`` (``function``, ``Class`` or ``Class.method``) in the library file
    ``path`` (relative to ``medvae_lib/``, e.g. ``medvae_3d/inflation.py``), dedented."""
    file = (LIBRARY / path).resolve()
    if file.suffix != ".py" or not file.is_relative_to(LIBRARY) or not file.is_file():
        raise ValueError(f"{path!r} is not a Python file of medvae_lib")
    parts = file.relative_to(LIBRARY.parent).with_suffix("").parts
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    obj = importlib.import_module(module)
    for part in name.split("."):
        try:
            obj = inspect.getattr_static(obj, part)
        except AttributeError:
            raise ValueError(f"{name!r} is not defined in medvae_lib/{path}") from None
    obj = getattr(obj, "__func__", obj)  # staticmethod / classmethod
    obj = inspect.unwrap(getattr(obj, "fget", obj))  # property; functools.wraps
    if Path(inspect.getsourcefile(obj)).resolve() != file:
        raise ValueError(
            f"{name!r} is imported into medvae_lib/{path}, not defined there"
        )
    return textwrap.dedent(inspect.getsource(obj))


def show_code(path: str, name: str):
    """Display the library's own code for ``name`` in ``path`` (see ``library_source``) as a
    highlighted Python block: the same in Colab, JupyterLab and the book."""
    from IPython.display import Markdown

    return Markdown(f"```python\n{library_source(path, name)}```")


def _show_code_cells(nb: nbformat.NotebookNode):
    for cell in nb.cells:
        if cell.cell_type == "code" and (match := SHOW_CODE.match(cell.source.strip())):
            yield cell, match


def refresh(nb: nbformat.NotebookNode) -> list[str]:
    """Rewrite every executed ``show_code`` cell's output from the current library, in place;
    return the names of those that changed (and of those never executed, left as they are)."""
    changed = []
    for cell, match in _show_code_cells(nb):
        if (
            cell.execution_count is None
        ):  # outputs come with execution; this one never ran
            changed.append(f"{match['path']}:{match['name']} (not executed)")
            continue
        text = show_code(match["path"], match["name"]).data
        data = {
            "text/markdown": text,
            "text/plain": "<IPython.core.display.Markdown object>",
        }
        old = [o for o in cell.outputs if o.get("output_type") == "execute_result"]
        if len(old) == 1 and old[0].get("data", {}).get("text/markdown") == text:
            continue
        changed.append(f"{match['path']}:{match['name']}")
        cell.outputs = [
            nbformat.v4.new_output(
                "execute_result", data=data, execution_count=cell.execution_count
            )
        ]
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Update (or check) the library code that notebooks show with show_code."
    )
    parser.add_argument("notebooks", nargs="+", type=Path)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--refresh", action="store_true", help="rewrite stale outputs")
    mode.add_argument("--check", action="store_true", help="exit 1 if any is stale")
    args = parser.parse_args(argv)
    stale = False
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        changed = refresh(nb)
        if changed and args.refresh:
            nbformat.write(nb, path)
        for name in changed:
            if name.endswith("(not executed)"):
                print(f"{path}: {name}: execute the notebook")
            else:
                print(
                    f"{path}: {name} {'refreshed' if args.refresh else 'is out of date'}"
                )
        stale |= bool(changed)
    return int(stale and args.check)


if __name__ == "__main__":
    sys.exit(main())
