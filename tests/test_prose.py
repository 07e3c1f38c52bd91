"""Every sentence that carries a result marker says what its chapter's checked result says
(medvae_lib.prose), and the checker fails on a sentence its result contradicts."""

from pathlib import Path

import nbformat
import pytest

from medvae_lib import prose, scorecard

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_prose_of_each_chapter_says_what_its_results_say(path):
    results = scorecard.load_results(scorecard.RESULTS_DIR)[path.stem, "ci"]
    checked = prose.check_notebook(path, results)
    assert checked  # the summary's markers at least


def _notebook(summary: str, body: str = "") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(body),
        nbformat.v4.new_markdown_cell(summary),
    ]
    return nb


RESULTS = {
    "chapter": "99_example",
    "results": [
        {
            "key": "gain.psnr",
            "metric": "PSNR gain",
            "value": 0.5,
            "interval": [0.2, 0.8],
        },
        {"key": "test_psnr", "metric": "test PSNR", "value": 27.4},
    ],
}


@pytest.mark.parametrize(
    "sentence, supported",
    [
        ("beats it <!-- result: gain.psnr above 0 -->", True),
        ("is worse <!-- result: gain.psnr below 0 -->", False),
        ("no difference detectable <!-- result: gain.psnr holds 0 -->", False),
        ("up to a dB <!-- result: gain.psnr holds 0.7 -->", True),
        ("about 27 dB <!-- result: test_psnr between 26.5 28 -->", True),
        ("about 29 dB <!-- result: test_psnr between 28.5 29.5 -->", False),
        ("a value has no interval <!-- result: test_psnr holds 27.4 -->", False),
    ],
)
def test_a_sentence_is_checked_against_its_result(tmp_path, sentence, supported):
    path = tmp_path / "99_example.ipynb"
    nbformat.write(_notebook(f"## Summary\n\n* It {sentence}."), path)
    if supported:
        assert len(prose.check_notebook(path, RESULTS)) == 1
    else:
        with pytest.raises(
            prose.ProseError, match="the sentence says this, but the result is"
        ):
            prose.check_notebook(path, RESULTS)


def test_markers_outside_the_summary_are_checked_too(tmp_path):
    path = tmp_path / "99_example.ipynb"
    nb = _notebook(
        "## Summary\n\n* Gain. <!-- result: gain.psnr above 0 -->",
        body="Worse. <!-- result: gain.psnr below 0 -->",
    )
    nbformat.write(nb, path)
    with pytest.raises(prose.ProseError, match="cell 0: gain.psnr below 0"):
        prose.check_notebook(path, RESULTS)


@pytest.mark.parametrize(
    "summary, message",
    [
        ("## Summary\n\n* It beats resizing.", "states no result"),
        (
            "## Summary\n\n* x <!-- result: gain.ssim above 0 -->",
            "has no result 'gain.ssim'",
        ),
        (
            "## Summary\n\n* x <!-- result: gain.psnr better 0 -->",
            "cannot read the result marker",
        ),
        ("## Summary\n\n* x <!-- result: gain.psnr above 0 1 -->", "takes 1 number"),
        (
            "## Summary\n\n* x <!-- result: test_psnr between 28 27 -->",
            "the range is empty",
        ),
        (
            "## Summary\n\n* It beats it\n  <!-- result: gain.psnr above 0 -->.",
            "starts a line",
        ),
    ],
)
def test_a_summary_without_a_readable_marker_of_an_existing_result_fails(
    tmp_path, summary, message
):
    path = tmp_path / "99_example.ipynb"
    nbformat.write(_notebook(summary), path)
    with pytest.raises(prose.ProseError, match=message):
        prose.check_notebook(path, RESULTS)
