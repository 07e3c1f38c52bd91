"""The student copy (``python -m medvae_lib.student_copy``, ``make student``): no solution survives, every
check cell does, a placeholder stands where solution code was, and outputs are cleared."""

from pathlib import Path

import nbformat
import pytest

from medvae_lib import student_copy

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def tagged(cell) -> bool:
    return "solution" in cell.get("metadata", {}).get("tags", [])


def expected_copy(cells) -> tuple[list[str], list[str]]:
    """The sources a student copy of ``cells`` must hold, and the solutions' sources, found from the full
    notebook's markers alone (not its tags): every cell from a ``{solution-start}`` to the next
    ``{solution-end}`` is a solution, and each run of solution cells with code becomes one placeholder."""
    kept, solutions, inside, run_has_code = [], [], False, None
    for cell in cells:
        inside = inside or "{solution-start}" in cell.source
        if inside or tagged(cell):
            solutions.append(cell.source)
            run_has_code = bool(run_has_code) or cell.cell_type == "code"
            inside = inside and "{solution-end}" not in cell.source
            continue
        if run_has_code:
            kept.append(student_copy.PLACEHOLDER)
        run_has_code = None
        kept.append(cell.source)
    if run_has_code:
        kept.append(student_copy.PLACEHOLDER)
    return kept, [s for s in solutions if s.strip()]


def test_the_copy_of_every_chapter_has_no_solution_and_every_check(tmp_path):
    assert student_copy.main([str(REPO / "notebooks"), str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [
        p.name for p in NOTEBOOKS
    ]
    for path in NOTEBOOKS:
        original = nbformat.read(path, as_version=4).cells
        copy = nbformat.read(tmp_path / path.name, as_version=4).cells
        kept, solutions = expected_copy(
            original
        )  # from the full notebook's markers, whatever the tags
        checks = [
            c.source
            for c in original
            if c.cell_type == "code" and "exercises.check_" in c.source
        ]
        assert solutions, f"{path.name} has no solutions to test the copy with"
        text = "\n".join(c.source for c in copy)
        assert not any(tagged(c) for c in copy), (
            f"{path.name}: a solution-tagged cell is in the copy"
        )
        assert "{solution" not in text, (
            f"{path.name}: a solution directive is in the copy"
        )
        leaked = [
            s.splitlines()[0] for s in solutions if any(s in c.source for c in copy)
        ]
        assert not leaked, f"{path.name}: solution text in the copy: {leaked}"
        assert [c.source for c in copy] == kept, (
            f"{path.name}: the copy is not the notebook less its solutions"
        )
        assert [c.source for c in copy if "exercises.check_" in c.source] == checks, (
            f"{path.name}: a check is lost"
        )
        code = [c for c in copy if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), (
            f"{path.name}: outputs left in the copy"
        )
        nbformat.validate(nbformat.read(tmp_path / path.name, as_version=4))


def hand_made(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def md(text, solution=False):
    cell = nbformat.v4.new_markdown_cell(text)
    if solution:
        cell.metadata["tags"] = ["solution"]
    return cell


def code(text, solution=False):
    cell = nbformat.v4.new_code_cell(text, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", text="42\n")]
    if solution:
        cell.metadata["tags"] = ["solution"]
    return cell


def test_a_placeholder_replaces_each_solution_with_code_and_the_original_is_kept():
    nb = hand_made(
        md("```{exercise} T\n:label: ex-99-1\n\nDo it.\n```"),
        md("```{solution-start} ex-99-1\n:class: dropdown\n```", True),
        code("x = secret()", True),
        code("answer = x + 1", True),
        md("```{solution-end}\n```", True),
        md("The next cell checks."),
        code("exercises.check_99_1(answer)"),
        md("```{exercise} Discuss\n:label: ex-99-2\n\nWhy?\n```"),
        md("```{solution-start} ex-99-2\n:class: dropdown\n```", True),
        md("Because.", True),
        md("```{solution-end}\n```", True),
    )
    out = student_copy.student_notebook(nb)
    assert [c.source for c in out.cells] == [
        nb.cells[0].source,
        student_copy.PLACEHOLDER,
        "The next cell checks.",
        "exercises.check_99_1(answer)",
        nb.cells[7].source,
    ]
    assert out.cells[3].outputs == [] and out.cells[3].execution_count is None
    assert len(nb.cells) == 11 and nb.cells[2].outputs, (
        "the original notebook must not change"
    )


def test_unbalanced_solution_markers_and_stray_directives_are_refused():
    start, end = (
        "```{solution-start} ex-99-1\n:class: dropdown\n```",
        "```{solution-end}\n```",
    )
    nb = hand_made(md(start), code("answer = 1", True))
    with pytest.raises(
        ValueError,
        match=r"99_bad\.ipynb: the solution opened in cell 0 has no \{solution-end\}",
    ):
        student_copy.student_notebook(nb, "99_bad.ipynb")
    nb = hand_made(md("Intro."), code("answer = 1"), md(end, True))
    with pytest.raises(ValueError, match="cell 2 ends a solution that no"):
        student_copy.student_notebook(nb, "99_bad.ipynb")
    nb = hand_made(md(start, True), md(start, True), md(end, True))
    with pytest.raises(ValueError, match="cell 1 opens a solution inside another"):
        student_copy.student_notebook(nb, "99_bad.ipynb")
    nb = hand_made(
        md("See the {solution-start} marker above.")
    )  # not a directive, but it would show
    with pytest.raises(
        ValueError, match="solution directives outside a solution's markers"
    ):
        student_copy.student_notebook(nb, "99_bad.ipynb")


def test_the_copy_never_replaces_the_notebooks(tmp_path):
    nbformat.write(hand_made(md("# 99. T")), tmp_path / "99_t.ipynb")
    with pytest.raises(ValueError, match="choose another folder"):
        student_copy.write_student_copy(tmp_path, tmp_path / "." / "")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no chapter notebooks"):
        student_copy.write_student_copy(tmp_path / "empty", tmp_path / "copy")
