"""medvae_lib.markup: the chapters' Colab-readable markup, as the book reads it."""

import nbformat
import pytest

from medvae_lib import markup

EXERCISE = "<!-- exercise ex-05-2 -->\n### Exercise 5.2: Which slices?\n\nDo it.\n"


def test_exercises_and_solutions_become_sphinx_exercise_directives():
    assert markup.to_myst(EXERCISE) == (
        "```{exercise} Which slices?\n:label: ex-05-2\n\nDo it.\n```"
    )
    start = "<!-- solution-start ex-05-2 -->\n#### Solution to Exercise 5.2"
    assert markup.to_myst(start) == (
        "```{solution-start} ex-05-2\n:class: dropdown\n```"
    )
    end = "<!-- solution-end -->\n*End of the solution.*"
    assert markup.to_myst(end) == "```{solution-end}\n```"
    fenced = "<!-- exercise ex-01-1 -->\n### Exercise 1.1: T\n\n```python\nx = 1\n```"
    assert markup.to_myst(fenced).startswith("````{exercise} T") and (
        markup.to_myst(fenced).endswith("```\n````")
    ), "a longer fence around code in the task"
    assert markup.to_myst("Plain text, $[0, 1)$.") == "Plain text, $[0, 1)$."


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- exercise ex-05-2 -->\n### Exercise 5.3: T\n\nDo.", "is Exercise 5.2"),
        ("<!-- exercise ex-5-2 -->\n### Exercise 5.2: T\n\nDo.", "not of the form"),
        ("<!-- solution-start ex-05-2 -->\n#### Solution\n", "must be written"),
        ("<!-- solution-end -->\nThe end.", "must be written"),
        ("Intro.\n<!-- exercise ex-05-2 -->\n### Exercise 5.2: T\n", "must be written"),
    ],
)
def test_a_mistyped_marker_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        markup.to_myst(text)


def test_citation_links_become_roles():
    t = '[Varma et al. (2025)](https://doi.org/x "cite:varma2025medvae") shows'
    assert markup.to_myst(t) == "{cite:t}`varma2025medvae` shows"
    p = 'as shown ([A et al., 2020](u "cite:a"); [B and C, 2021](v "cite:b")).'
    assert markup.to_myst(p) == "as shown {cite:p}`a,b`."
    bracket = 'values in $[0, 1)$, as [A (2020)](u "cite:a") showed'
    assert markup.to_myst(bracket) == "values in $[0, 1)$, as {cite:t}`a` showed"
    plain = "[a paper](https://doi.org/x) and [a title](u 'cite:a')"
    assert markup.to_myst(plain) == plain


def test_library_source_reads_functions_methods_and_decorated_code():
    assert markup.library_source("data.py", "verify_file").startswith(
        "def verify_file("
    )
    method = markup.library_source("medvae_3d/trainer.py", "Stage1Trainer3D")
    assert method.startswith("class Stage1Trainer3D")
    decorated = markup.library_source("medvae_3d/inference.py", "encode_sliding")
    assert "def encode_sliding(" in decorated
    with pytest.raises(ValueError, match="imported into"):
        markup.library_source("markup.py", "Path")
    with pytest.raises(ValueError, match="not defined"):
        markup.library_source("data.py", "no_such_function")
    with pytest.raises(ValueError, match="not a Python file of medvae_lib"):
        markup.library_source("../tests/helpers.py", "tiny")


def test_refresh_rewrites_stale_code_and_reports_unrun_cells():
    nb = nbformat.v4.new_notebook()
    shown = nbformat.v4.new_code_cell('show_code("data.py", "verify_file")')
    shown.execution_count = 3
    shown.outputs = [
        nbformat.v4.new_output(
            "execute_result", data={"text/markdown": "old"}, execution_count=3
        )
    ]
    unrun = nbformat.v4.new_code_cell('show_code("data.py", "fetch")')
    nb.cells = [shown, unrun]
    assert markup.refresh(nb) == ["data.py:verify_file", "data.py:fetch (not executed)"]
    assert shown.outputs[0]["data"]["text/markdown"].startswith(
        "```python\ndef verify_file("
    )
    assert not unrun.outputs
    assert markup.refresh(nb) == ["data.py:fetch (not executed)"]
