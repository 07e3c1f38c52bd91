"""The reproduction scorecard: every claim points at a result a chapter wrote, every results file
follows the schema, and the committed page carries exactly the files' numbers."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from medvae_lib import scorecard

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "notebooks" / "results"


@pytest.fixture(scope="module")
def claims():
    return scorecard.load_claims(scorecard.CLAIMS)


@pytest.fixture(scope="module")
def results():
    return scorecard.load_results(RESULTS)


def _good(**changes):
    doc = {
        "schema": 1,
        "chapter": "04_latent_downstream",
        "mode": "ci",
        "seeds": [0],
        "data": {"manifest": "pneumoniamnist"},
        "date": "2026-01-01",
        "library_version": "0.1.0",
        "results": [{"key": "probe_auroc.pixels", "metric": "test AUROC", "value": 0.9, "interval": [0.8, 0.95]}],
    }
    doc.update(changes)
    return doc


def test_every_results_file_is_valid(results):
    files = sorted(RESULTS.glob("*.json"))
    assert files, "no results files: run the chapters (make book)"
    assert len(results) == len(files)
    for (chapter, mode), doc in results.items():
        assert (REPO / "notebooks" / f"{chapter}.ipynb").is_file(), (
            f"results for a chapter that does not exist: {chapter}"
        )
        assert doc["library_version"] == scorecard.__version__ or mode == "full"


def test_every_chapter_writes_results():
    for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert (RESULTS / f"{nb.stem}.ci.json").is_file(), f"{nb.name} has no CI-mode results file"
        assert "scorecard.write_results(" in nb.read_text(), f"{nb.name} does not call scorecard.write_results"


def test_every_claim_points_at_an_existing_result(claims, results):
    papers = {c["paper"] for c in claims}
    assert papers == set(scorecard.PAPERS), "every paper of the book has claims"
    bib = (REPO / "book" / "references.bib").read_text()
    for claim in claims:
        assert f"{{{claim['paper']},".lower() in bib.lower(), f"{claim['id']}: unknown paper {claim['paper']}"
        target = claim["compared_with"]
        if target is None:
            continue
        assert (target["chapter"], "ci") in results, f"{claim['id']}: no CI results file for {target['chapter']}"
        keys = {r["key"] for r in results[target["chapter"], "ci"]["results"]}
        assert target["key"] in keys, f"{claim['id']}: {target['chapter']} has no result {target['key']!r}"


def test_reported_values_say_where_they_come_from(claims):
    for claim in claims:
        if claim["reported"] is None:
            continue
        assert "not readable" not in claim["source"] and re.search(r"\d{4}\.\d{5}|Table|Figure", claim["source"]), (
            f"{claim['id']}: a reported number needs the page it was read from"
        )


@pytest.mark.parametrize(
    "change, field",
    [
        ({"mode": "fast"}, "mode"),
        ({"date": "yesterday"}, "date"),
        ({"seeds": []}, "seeds"),
        ({"extra": 1}, "extra"),
        ({"results": [{"key": "a", "metric": "m", "value": float("nan")}]}, "value"),
        ({"results": [{"key": "a", "metric": "m", "value": 1.0, "interval": [2.0, 1.0]}]}, "interval"),
        ({"results": [{"key": "Bad Key", "metric": "m", "value": 1.0}]}, "key"),
        ({"results": [{"key": "a", "value": 1.0}]}, "metric"),
        ({"results": [{"key": "a", "metric": "m", "value": 1}, {"key": "a", "metric": "m", "value": 2}]}, "twice"),
    ],
)
def test_a_bad_results_file_is_rejected_naming_the_field(change, field):
    scorecard.validate_results(_good())
    with pytest.raises(scorecard.ResultsError, match=re.escape(field)):
        scorecard.validate_results(_good(**change))
    missing = _good()
    del missing["library_version"]
    with pytest.raises(scorecard.ResultsError, match="library_version"):
        scorecard.validate_results(missing)


def test_write_results_keeps_an_unchanged_file_and_its_date(tmp_path):
    rows = [{"key": "x.y", "metric": "a number", "value": 0.123456789, "interval": (0.1, 0.2)}]
    path = scorecard.write_results("04_latent_downstream", "ci", rows, seed=0, data={"k": 1}, results_dir=tmp_path)
    doc = json.loads(path.read_text())
    assert path.name == "04_latent_downstream.ci.json" and doc["results"][0]["value"] == 0.123457
    assert doc["library_version"] == scorecard.__version__ and doc["seeds"] == [0]
    doc["date"] = "2000-01-01"
    path.write_text(json.dumps(doc))
    scorecard.write_results("04_latent_downstream", "ci", rows, seed=[0], data={"k": 1}, results_dir=tmp_path)
    assert json.loads(path.read_text())["date"] == "2000-01-01", "an unchanged result must keep its file"
    rows[0]["value"] = 0.5
    scorecard.write_results("04_latent_downstream", "ci", rows, seed=0, data={"k": 1}, results_dir=tmp_path)
    assert json.loads(path.read_text())["date"] != "2000-01-01"
    with pytest.raises(scorecard.ResultsError, match="value"):
        scorecard.write_results(
            "04_latent_downstream", "ci", [{"key": "a", "metric": "m", "value": float("inf")}], 0, {}
        )


def test_write_results_goes_to_the_folder_named_by_the_environment(tmp_path, monkeypatch):
    # make test sets MEDVAE_RESULTS_DIR so that nbval's re-run does not rewrite the committed files
    monkeypatch.setenv("MEDVAE_RESULTS_DIR", str(tmp_path / "scratch"))
    monkeypatch.chdir(tmp_path)
    rows = [{"key": "a", "metric": "m", "value": 1.0}]
    path = scorecard.write_results("01_data_prep", "ci", rows, seed=0, data={})
    assert path == tmp_path / "scratch" / "01_data_prep.ci.json" and path.is_file()
    assert not (tmp_path / "results").exists()
    monkeypatch.delenv("MEDVAE_RESULTS_DIR")
    assert scorecard.write_results("01_data_prep", "ci", rows, seed=0, data={}) == Path("results/01_data_prep.ci.json")


def test_the_committed_page_is_the_generated_page():
    page = (REPO / "book" / "scorecard.md").read_text()
    assert page == scorecard.build_page(RESULTS, scorecard.CLAIMS), (
        "book/scorecard.md is stale: run python -m medvae_lib.scorecard (make html does)"
    )


def _rows(page):
    """The page's claim rows: {claim text: cells}."""
    return [
        [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        for line in page.splitlines()
        if line.startswith("| ")
        and not line.startswith("| Claim")
        and not line.startswith("| File")
        and not line.startswith("| `")
    ]


def test_the_pages_numbers_are_the_files_numbers(claims, results):
    page = (REPO / "book" / "scorecard.md").read_text()
    rows = _rows(page)
    assert len(rows) == len(claims), "one row per claim"
    for claim, cells in zip(sorted(claims, key=lambda c: list(scorecard.PAPERS).index(c["paper"])), rows, strict=True):
        reported, ci, full = cells[1], cells[2], cells[3]
        if claim["reported"] is None:
            assert reported.startswith(scorecard.NOT_READABLE), claim["id"]
        else:
            assert reported.startswith(scorecard.fmt(claim["reported"])), claim["id"]
        if claim["compared_with"] is None:
            assert ci == full == scorecard.NOT_REPRODUCED, f"{claim['id']} must show '{scorecard.NOT_REPRODUCED}'"
            continue
        result = scorecard.find_result(results, claim["compared_with"], "ci")
        numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", ci.split("(")[0])]
        expected = [float(scorecard.fmt(v)) for v in [result["value"], *(result.get("interval") or [])]]
        assert numbers == expected, f"{claim['id']}: page {ci!r}, file {expected}"
        if scorecard.find_result(results, claim["compared_with"], "full") is None:
            assert full == "no full run yet"


def test_claims_without_results_show_not_yet_reproduced(tmp_path):
    shutil.copytree(RESULTS, tmp_path / "results")
    claims = yaml.safe_load(scorecard.CLAIMS.read_text())
    claims["claims"][0]["compared_with"] = {"chapter": "07_missing_chapter", "key": "a.b"}
    claims["claims"][1]["compared_with"] = None
    claims["claims"][1]["reported"] = 12.5
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(claims))
    page = scorecard.build_page(tmp_path / "results", path)
    rows = _rows(page)
    assert "no CI-mode result" in rows[0][2]
    assert rows[1][2] == scorecard.NOT_REPRODUCED and rows[1][1].startswith("12.5")


def test_same_direction():
    value = {"value": 0.5, "interval": [0.2, 0.8]}
    assert scorecard.same_direction({"sign": "greater", "than": 0}, value) == "yes"
    assert scorecard.same_direction({"sign": "less", "than": 0}, value) == "no"
    assert scorecard.same_direction({"sign": "greater", "than": 0.5}, value) == "unclear"
    assert scorecard.same_direction({"sign": "not_less", "than": 0.9}, value) == "no"
    assert scorecard.same_direction({"sign": "less", "than": 1}, {"value": 0.3}) == "yes"
    assert scorecard.same_direction(None, value) == "n/a"
