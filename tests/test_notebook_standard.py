"""What every executed chapter notebook must look like when it is committed (in the spirit of MONAI
tutorials' runner checks): executed in order without errors, no traces of the machine it ran on, and
figures small enough for a page. The template (title, badge, parameters, sections) is checked in
test_book.py; these tests look at the outputs."""

import base64
import re
import socket
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_IMAGE_BYTES = 250_000  # one PNG figure; a page holds several
# Home, temporary and CI folders, and this machine's name, must not appear in committed outputs.
MACHINE = re.compile(
    r"(/home/|/Users/|/root/|/tmp/|/work/|/content/|[A-Za-z]:\\\\Users)"
)


def _code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _texts(cell):
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            yield out.get("text", "")
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/"):
                yield value if isinstance(value, str) else "".join(value)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_executed_in_order_without_errors(path):
    cells = [c for c in _code_cells(path) if c.source.strip()]
    counts = [c.execution_count for c in cells]
    assert None not in counts, f"{path.name}: some code cells were not executed"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), (
        f"{path.name}: execution counts {counts} are not in order (run the notebook top to bottom: make notebooks)"
    )
    errors = [
        o
        for c in cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, (
        f"{path.name}: committed with an error output: {errors[0].get('ename')}"
    )
    stderr = [
        o.get("text", "")
        for c in cells
        for o in c.get("outputs", [])
        if o.get("name") == "stderr"
    ]
    assert not any("Traceback" in t for t in stderr), (
        f"{path.name}: a traceback in stderr"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_name_no_machine(path):
    host = socket.gethostname()
    for cell in _code_cells(path):
        for text in _texts(cell):
            found = MACHINE.search(text)
            assert not found, (
                f"{path.name}: an output shows the path {found.group(0)!r}: {text[:200]!r}"
            )
            assert not (host and len(host) > 3 and host in text), (
                f"{path.name}: an output names this machine"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_figures_are_small_enough_for_a_page(path):
    for cell in _code_cells(path):
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                size = len(base64.b64decode(png))
                assert size <= MAX_IMAGE_BYTES, (
                    f"{path.name}: a figure of {size:,} bytes (limit {MAX_IMAGE_BYTES:,}); lower its size or dpi"
                )


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The helpers above see a path, a traceback and out-of-order counts when they are there."""
    assert (
        MACHINE.search("saved to /home/alice/runs")
        and MACHINE.search("/tmp/xyz")
        and not MACHINE.search("runs/03")
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("1", execution_count=2),
        nbformat.v4.new_code_cell("2", execution_count=1),
    ]
    path = tmp_path / "99_bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(AssertionError, match="not in order"):
        test_executed_in_order_without_errors(path)
