"""The teacher's page (book/teachers.md) stays complete: it names every exercise of the chapters and no
exercise that does not exist, every chapter of the table of contents belongs to one of its course tracks,
and the page itself is in the table of contents, in the back matter before the scorecard."""

import re
from pathlib import Path

import yaml

from medvae_lib.markup import read_myst

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "book" / "teachers.md"
TOC = yaml.safe_load((REPO / "book" / "_toc.yml").read_text())
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))

EXERCISE = re.compile(
    r"```\{exercise\}[^\n]*\n:label: (\S+)"
)  # as in tests/test_exercises.py
LABEL = re.compile(r"\bex-\d\d-\d+\b")
CHAPTER_LINK = re.compile(r"\]\(\.\./notebooks/(\d\d_\w+)\.ipynb\)")


def notebook_labels() -> set[str]:
    labels = set()
    for path in NOTEBOOKS:
        for cell in read_myst(path).cells:
            if cell.cell_type == "markdown":
                labels.update(EXERCISE.findall(cell.source))
    return labels


def toc_files() -> list[str]:
    return [c["file"] for part in TOC["parts"] for c in part["chapters"]]


def tracks(text: str) -> dict[str, str]:
    """The text of each '### Track ...' section, up to the next heading of level 2 or 3."""
    found = {}
    for match in re.finditer(r"^### (Track[^\n]*)\n(.*?)(?=^##)", text, re.M | re.S):
        found[match.group(1)] = match.group(2)
    return found


def test_every_exercise_is_on_the_page_and_no_other():
    in_notebooks = notebook_labels()
    assert len(in_notebooks) >= len(NOTEBOOKS), "no exercises found in the notebooks"
    on_page = set(LABEL.findall(PAGE.read_text()))
    missing = sorted(in_notebooks - on_page)
    unknown = sorted(on_page - in_notebooks)
    assert not missing, (
        f"exercises missing from book/teachers.md (add a table row and a rubric): {missing}"
    )
    assert not unknown, (
        f"book/teachers.md names exercises that no notebook has: {unknown}"
    )


def test_every_exercise_has_a_table_row():
    rows = set(re.findall(r"^\| `(ex-\d\d-\d+)` \|", PAGE.read_text(), re.M))
    missing = sorted(notebook_labels() - rows)
    assert not missing, (
        f"exercises without a row in a chapter's table of book/teachers.md: {missing}"
    )


def test_every_chapter_is_in_a_track():
    found = tracks(PAGE.read_text())
    assert len(found) == 2, (
        f"expected two course tracks ('### Track ...'), found {list(found)}"
    )
    in_tracks = {name for body in found.values() for name in CHAPTER_LINK.findall(body)}
    chapters = {Path(f).name for f in toc_files() if f.startswith("notebooks/")}
    assert chapters == {p.stem for p in NOTEBOOKS}, (
        "every chapter notebook is in the table of contents"
    )
    missing = sorted(chapters - in_tracks)
    assert not missing, (
        f"chapters of the table of contents in no track of book/teachers.md: {missing}"
    )
    unknown = sorted(in_tracks - chapters)
    assert not unknown, (
        f"book/teachers.md links chapters that are not in the table of contents: {unknown}"
    )


def test_the_page_is_in_the_back_matter_before_the_scorecard():
    back = next(part for part in TOC["parts"] if part.get("caption") == "Back matter")
    files = [c["file"] for c in back["chapters"]]
    assert "book/teachers" in files, (
        "add book/teachers to the back matter of book/_toc.yml"
    )
    assert files.index("book/teachers") < files.index("book/scorecard"), (
        "the teacher's page comes before the scorecard"
    )
