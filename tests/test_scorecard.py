"""The reproduction scorecard: every claim points at a result a chapter wrote, every results file
follows the schema, and the committed page carries exactly the files' numbers."""

import html
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
        "results": [
            {
                "key": "probe_auroc.pixels",
                "metric": "test AUROC",
                "value": 0.9,
                "interval": [0.8, 0.95],
            }
        ],
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
        assert (RESULTS / f"{nb.stem}.ci.json").is_file(), (
            f"{nb.name} has no CI-mode results file"
        )
        assert "scorecard.write_results(" in nb.read_text(), (
            f"{nb.name} does not call scorecard.write_results"
        )


def test_every_claim_points_at_an_existing_result(claims, results):
    papers = {c["paper"] for c in claims}
    assert papers == set(scorecard.PAPERS), "every paper of the book has claims"
    bib = (REPO / "book" / "references.bib").read_text()
    for claim in claims:
        assert f"{{{claim['paper']},".lower() in bib.lower(), (
            f"{claim['id']}: unknown paper {claim['paper']}"
        )
        target = claim["compared_with"]
        if target is None:
            continue
        assert (target["chapter"], "ci") in results, (
            f"{claim['id']}: no CI results file for {target['chapter']}"
        )
        keys = {r["key"] for r in results[target["chapter"], "ci"]["results"]}
        assert target["key"] in keys, (
            f"{claim['id']}: {target['chapter']} has no result {target['key']!r}"
        )


def test_reported_values_say_where_they_come_from(claims):
    for claim in claims:
        if claim["reported"] is None and claim["reported_text"] is None:
            continue
        assert "not readable" not in claim["source"] and re.search(
            r"\d{4}\.\d{5}|Table|Figure", claim["source"]
        ), f"{claim['id']}: a reported number needs the page it was read from"
        assert claim["evidence"] in scorecard.EVIDENCE, (
            f"{claim['id']}: a reported number needs its evidence level"
        )
        if claim["evidence"].startswith("secondary"):
            assert "transcription" in claim["source"], (
                f"{claim['id']}: say the number is a transcription"
            )


@pytest.mark.parametrize(
    "change, field",
    [
        ({"mode": "fast"}, "mode"),
        ({"date": "yesterday"}, "date"),
        ({"seeds": []}, "seeds"),
        ({"extra": 1}, "extra"),
        ({"results": [{"key": "a", "metric": "m", "value": float("nan")}]}, "value"),
        (
            {
                "results": [
                    {"key": "a", "metric": "m", "value": 1.0, "interval": [2.0, 1.0]}
                ]
            },
            "interval",
        ),
        ({"results": [{"key": "Bad Key", "metric": "m", "value": 1.0}]}, "key"),
        ({"results": [{"key": "a", "value": 1.0}]}, "metric"),
        (
            {
                "results": [
                    {"key": "a", "metric": "m", "value": 1},
                    {"key": "a", "metric": "m", "value": 2},
                ]
            },
            "twice",
        ),
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
    rows = [
        {
            "key": "x.y",
            "metric": "a number",
            "value": 0.123456789,
            "interval": (0.1, 0.2),
        }
    ]
    path = scorecard.write_results(
        "04_latent_downstream", "ci", rows, seed=0, data={"k": 1}, results_dir=tmp_path
    )
    doc = json.loads(path.read_text())
    assert (
        path.name == "04_latent_downstream.ci.json"
        and doc["results"][0]["value"] == 0.123457
    )
    assert doc["library_version"] == scorecard.__version__ and doc["seeds"] == [0]
    doc["date"] = "2000-01-01"
    path.write_text(json.dumps(doc))
    scorecard.write_results(
        "04_latent_downstream",
        "ci",
        rows,
        seed=[0],
        data={"k": 1},
        results_dir=tmp_path,
    )
    assert json.loads(path.read_text())["date"] == "2000-01-01", (
        "an unchanged result must keep its file"
    )
    rows[0]["value"] = 0.5
    scorecard.write_results(
        "04_latent_downstream", "ci", rows, seed=0, data={"k": 1}, results_dir=tmp_path
    )
    assert json.loads(path.read_text())["date"] != "2000-01-01"
    with pytest.raises(scorecard.ResultsError, match="value"):
        scorecard.write_results(
            "04_latent_downstream",
            "ci",
            [{"key": "a", "metric": "m", "value": float("inf")}],
            0,
            {},
        )


def test_write_results_goes_to_the_folder_named_by_the_environment(
    tmp_path, monkeypatch
):
    # make test sets MEDVAE_RESULTS_DIR so that nbval's re-run does not rewrite the committed files
    monkeypatch.setenv("MEDVAE_RESULTS_DIR", str(tmp_path / "scratch"))
    monkeypatch.chdir(tmp_path)
    rows = [{"key": "a", "metric": "m", "value": 1.0}]
    path = scorecard.write_results("01_data_prep", "ci", rows, seed=0, data={})
    assert path == tmp_path / "scratch" / "01_data_prep.ci.json" and path.is_file()
    assert not (tmp_path / "results").exists()
    monkeypatch.delenv("MEDVAE_RESULTS_DIR")
    assert scorecard.write_results("01_data_prep", "ci", rows, seed=0, data={}) == Path(
        "results/01_data_prep.ci.json"
    )


def test_the_committed_page_is_the_generated_page():
    page = (REPO / "book" / "scorecard.md").read_text()
    assert page == scorecard.build_page(RESULTS, scorecard.CLAIMS), (
        "book/scorecard.md is stale: run python -m medvae_lib.scorecard (make html does)"
    )


def _rows(page):
    """The page's claim rows, in order: [number, claim, paper, ours, verdict], entities decoded."""
    return [
        [html.unescape(c.strip()) for c in line.split("|")[1:-1]]
        for line in page.splitlines()
        if re.match(r"\| \d+ \|", line)
    ]


def test_the_pages_numbers_are_the_files_numbers(claims, results):
    page = (REPO / "book" / "scorecard.md").read_text()
    rows = _rows(page)
    assert len(rows) == len(claims), "one row per claim"
    ordered = sorted(claims, key=lambda c: list(scorecard.PAPERS).index(c["paper"]))
    for claim, cells in zip(ordered, rows, strict=True):
        paper, ours, verdict = cells[2], cells[3], cells[4]
        if claim["reported"] is not None:
            assert paper.startswith(scorecard.fmt(claim["reported"])), claim["id"]
        elif claim["reported_text"] is not None:
            assert paper.startswith(claim["reported_text"]), claim["id"]
        else:
            assert paper.startswith(scorecard.NOT_READABLE), claim["id"]
        if claim["evidence"]:
            assert paper.endswith(f"({scorecard.EVIDENCE_SHORT[claim['evidence']]})"), (
                claim["id"]
            )
        assert f"```{{dropdown}} {cells[0]}. {claim['id']}" in page, (
            f"{claim['id']}: no folded details"
        )
        if claim["compared_with"] is None:
            assert (
                ours == scorecard.NOT_REPRODUCED and verdict == scorecard.NOT_TESTABLE
            ), claim["id"]
            continue
        result = scorecard.find_result(results, claim["compared_with"], "ci")
        numbers = [
            float(x)
            for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", ours.split(";")[0])
        ]
        expected = [
            float(scorecard.fmt(v))
            for v in [result["value"], *(result.get("interval") or [])]
        ]
        assert numbers == expected, f"{claim['id']}: page {ours!r}, file {expected}"
        assert verdict == scorecard.verdict(claim, result)[0], claim["id"]


def test_claims_without_results_show_not_yet_reproduced(tmp_path):
    shutil.copytree(RESULTS, tmp_path / "results")
    claims = yaml.safe_load(scorecard.CLAIMS.read_text())
    claims["claims"][0]["compared_with"] = {
        "chapter": "07_missing_chapter",
        "key": "a.b",
    }
    claims["claims"][1]["compared_with"] = None
    claims["claims"][1]["reported"] = 12.5
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(claims))
    claims["claims"][1]["evidence"] = "primary"
    path.write_text(yaml.safe_dump(claims))
    page = scorecard.build_page(tmp_path / "results", path)
    rows = _rows(page)
    assert rows[0][3] == "no CI-mode result" and rows[0][4] == scorecard.NOT_TESTABLE
    assert rows[1][3] == scorecard.NOT_REPRODUCED and rows[1][2] == "12.5 (primary)"
    claims["claims"][1]["evidence"] = None
    path.write_text(yaml.safe_dump(claims))
    with pytest.raises(scorecard.ResultsError, match="evidence"):
        scorecard.build_page(tmp_path / "results", path)


def test_the_verdict_reads_the_interval_not_the_value():
    value = {"value": 0.5, "interval": [0.2, 0.8]}
    verdict = scorecard.same_direction
    assert verdict({"sign": "greater", "than": 0}, value) == scorecard.REPRODUCED
    assert (
        verdict({"sign": "less", "than": 0}, value) == scorecard.NOT_REPRODUCED_VERDICT
    )
    assert verdict({"sign": "greater", "than": 0.5}, value) == scorecard.CONSISTENT
    assert (
        verdict({"sign": "greater", "than": 0.3}, value) == scorecard.CONSISTENT
    )  # the value alone clears it
    assert (
        verdict({"sign": "greater", "than": 0.3}, {"value": 0.5})
        == scorecard.REPRODUCED
    )
    assert (
        verdict({"sign": "not_less", "than": 0.9}, value)
        == scorecard.NOT_REPRODUCED_VERDICT
    )
    assert verdict({"sign": "not_less", "than": 0.3}, value) == scorecard.CONSISTENT
    assert (
        verdict({"sign": "not_less", "than": 0.3, "margin": 0.1}, value)
        == scorecard.REPRODUCED
    )
    assert verdict({"sign": "less", "than": 1}, {"value": 0.3}) == scorecard.REPRODUCED
    assert verdict(None, value) == scorecard.NOT_TESTABLE
    assert verdict({"sign": "greater", "than": 0}, None) == scorecard.NOT_TESTABLE


def _claims_file(tmp_path, **changes):
    doc = yaml.safe_load(scorecard.CLAIMS.read_text())
    claim = next(c for c in doc["claims"] if c["id"] == "medvae_throughput_largest")
    claim.update(changes)
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_test_that_cannot_fail_against_the_papers_number_is_refused(tmp_path):
    """No "> 1" for a 70x claim: a threshold must lie half way from no effect to the paper's number."""
    with pytest.raises(scorecard.ResultsError, match="half way"):
        scorecard.load_claims(
            _claims_file(
                tmp_path, direction={"sign": "greater", "than": 1, "no_effect": 1}
            )
        )
    with pytest.raises(scorecard.ResultsError, match="points away"):
        scorecard.load_claims(
            _claims_file(
                tmp_path, direction={"sign": "less", "than": 1, "no_effect": 1}
            )
        )
    scorecard.load_claims(
        _claims_file(
            tmp_path, direction={"sign": "greater", "than": 35.5, "no_effect": 1}
        )
    )
    assert scorecard.trivial_test(
        {"sign": "greater", "than": 0.01}, 0.059
    )  # a 5.9-point gain needs > 2.95
    assert scorecard.trivial_test({"sign": "greater", "than": 0.0295}, 0.059) is None
    assert (
        scorecard.trivial_test({"sign": "less", "than": 0.5, "no_effect": 1}, 0.0)
        is None
    )
    assert (
        scorecard.trivial_test({"sign": "greater", "than": 0}, None) is None
    )  # no number: the sign is the claim


def test_every_committed_test_could_fail(claims):
    """A claim reproduced with a test its paper's own number meets trivially would be a false success;
    and a speed-up test of "> 1" without the paper's number cannot fail at all."""
    for claim in claims:
        direction = claim["direction"]
        if direction is None:
            continue
        assert scorecard.trivial_test(direction, claim["reported"]) is None, claim["id"]
        if "(x)" in claim["metric"]:
            assert claim["reported"] is not None and direction["than"] > 2, (
                f"{claim['id']}: a ratio test of > 1"
            )


# --- hostile results files: nothing a results file holds can add Markdown, MyST or HTML to the page -----

INJECTION = "0.1.0\n\n## Injected heading\n\n```{literalinclude} /etc/hostname\n```\n\n<script>alert(1)</script>"


def _myst():
    """The Markdown parser the book's build uses (MyST, with Jupyter Book's default extensions)."""
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    extensions = {"colon_fence", "dollarmath", "linkify", "substitution", "tasklist"}
    return create_md_parser(MdParserConfig(enable_extensions=extensions), RendererHTML)


def _structure(page):
    """(headings, fence infos, raw HTML, roles and math) of a page, details inside dropdowns included."""
    parser, headings, fences, raw = _myst(), [], [], []
    pending = [page]
    while pending:
        tokens = parser.parse(pending.pop())
        for i, token in enumerate(tokens):
            if token.type == "heading_open":
                headings.append(tokens[i + 1].content)
            elif token.type == "fence":
                fences.append(token.info)
                pending.append(token.content)
            elif token.type in ("html_block", "math_block"):
                raw.append(token.content)
            for child in token.children or []:
                if child.type in (
                    "html_inline",
                    "math_inline",
                    "code_inline",
                ) or child.type.startswith("myst_"):
                    raw.append(child.content)
    return headings, fences, raw


@pytest.mark.parametrize(
    "change, field",
    [
        ({"library_version": INJECTION}, "library_version"),
        ({"library_version": "0.1.0 <script>"}, "library_version"),
        ({"date": "2026-01-01\n# x"}, "date"),
        ({"chapter": "04_latent_downstream\n"}, "chapter"),
        ({"data": {"manifest": "<b>pneumoniamnist</b>"}}, "manifest"),
        (
            {"data": {"real": {"manifest": "x`{literalinclude}` /etc/hostname"}}},
            "real.manifest",
        ),
        ({"data": {"people": ["ok", "a\nb"]}}, "people[1]"),
        ({"data": {"bad key!": 1}}, "bad key"),
        ({"data": {"x": "y" * 201}}, "at most 200"),
        ({"data": {"x": [[[[[[1]]]]]]}}, "deeply"),
        ({"data": {"x": float("nan")}}, "finite"),
        ({"data": {"x": {"y"}}}, "unexpected set"),
        ({"seeds": [0, True]}, "seeds"),
        (
            {"results": [{"key": "a", "metric": "m |col| `code`", "value": 1.0}]},
            "metric",
        ),
        (
            {
                "results": [
                    {
                        "key": "a",
                        "metric": "m",
                        "value": 1.0,
                        "setting": "s\n## heading",
                    }
                ]
            },
            "setting",
        ),
        ({"results": [{"key": "a", "metric": "m" * 201, "value": 1.0}]}, "at most 200"),
        ({"results": [{"key": "a", "metric": "{cite}", "value": 1.0}]}, "metric"),
        ({"results": [{"key": "a", "metric": "$x$", "value": 1.0}]}, "metric"),
        ({"results": [{"key": "a" * 121, "metric": "m", "value": 1.0}]}, "key"),
    ],
)
def test_a_hostile_results_file_is_refused_naming_the_field(change, field):
    with pytest.raises(scorecard.ResultsError, match=re.escape(field)):
        scorecard.validate_results(_good(**change))


def test_an_injecting_results_file_never_reaches_the_page(tmp_path):
    """Issue 24, cause 6: a library_version with line breaks added a heading, a literalinclude and a
    script to the page. Such a file is refused when the page is built, naming it."""
    shutil.copytree(RESULTS, tmp_path / "results")
    path = tmp_path / "results" / "04_latent_downstream.ci.json"
    doc = json.loads(path.read_text())
    doc["library_version"] = INJECTION
    path.write_text(json.dumps(doc))
    with pytest.raises(
        scorecard.ResultsError,
        match="04_latent_downstream.ci.json: field 'library_version'",
    ):
        scorecard.build_page(tmp_path / "results", scorecard.CLAIMS)
    doc["library_version"] = "0.1.0"
    doc["data"]["manifest"] = "<img src=x onerror=alert(1)>"
    path.write_text(json.dumps(doc))
    with pytest.raises(scorecard.ResultsError, match="manifest"):
        scorecard.build_page(tmp_path / "results", scorecard.CLAIMS)


def test_every_value_is_escaped_where_it_is_written(tmp_path):
    """Escaping, the second line of defence: claims.yaml is not held to the results files' characters,
    so hostile claim text must come out of the page as text, with no heading, directive, role, math,
    code span or HTML beyond the page's own."""
    page = scorecard.build_page(RESULTS, scorecard.CLAIMS)
    headings, fences, raw = _structure(page)
    hostile = "x |\n\n## Injected\n\n```{literalinclude} /etc/hostname\n```\n<script>alert(1)</script> {cite}`a` $y$ *"
    doc = yaml.safe_load(scorecard.CLAIMS.read_text())
    for claim in doc["claims"]:
        for field in (
            "where",
            "metric",
            "setting",
            "source",
            "reason_if_different",
            "reported_direction",
        ):
            claim[field] = hostile
        claim["reported_text"], claim["evidence"] = hostile, "primary"
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(doc))
    bad = scorecard.build_page(RESULTS, path)
    assert _structure(bad) == (headings, fences, raw), (
        "a claim's text changed the page's structure"
    )
    assert (
        "Injected" not in headings
        and "<script>" not in bad
        and "{literalinclude}" not in bad
    )
    assert all(len(row) == 5 for row in _rows(bad)), "a | in a value split a table cell"
    rendered = _myst().render(bad)
    assert (
        "<script>" not in rendered
        and "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered
    )


def test_md_shows_every_character_as_text():
    text = "a_b *c* `d` {e} [f](g) <h> | $i$ \\ # ~ ^ !+& γ≥ 1.5e-3 (x) 95%"
    rendered = _myst().render(scorecard.md(text)).strip()
    assert html.unescape(rendered) == f"<p>{text}</p>"
    assert scorecard.md("two\nlines\r\n\tand tabs") == "two lines and tabs"


def test_text_fields_take_any_script_but_no_control_characters():
    ok = {"results": [{"key": "a", "metric": "‖Â‖_F ≥ ρ, γ_S − η (95%)", "value": 1.0}]}
    scorecard.validate_results(_good(**ok))
    for bad in (
        "right\u202eto left",
        "line\u2028separator",
        "zero\u200bwidth",
        "tab\there",
    ):
        with pytest.raises(scorecard.ResultsError, match="not allowed"):
            scorecard.validate_results(
                _good(results=[{"key": "a", "metric": bad, "value": 1.0}])
            )


def test_nothing_on_the_page_is_too_wide_to_show():
    """Code does not wrap: the claim tables hold none, and no code span on the page is longer than fits
    the book's text column (about 67 characters), so nothing is cut off; details are folded."""
    page = (REPO / "book" / "scorecard.md").read_text()
    spans = [
        child.content
        for token in _myst().parse(page.replace("```{dropdown}", "```"))
        for child in token.children or []
        if child.type == "code_inline"
    ]
    assert spans and max(map(len, spans)) <= 60, max(spans, key=len)
    for row in _rows(page):
        assert "`" not in "".join(row), row
    details = [
        _myst().parse(t.content)
        for t in _myst().parse(page)
        if t.info.startswith("{dropdown}")
    ]
    detail_spans = [
        c.content
        for d in details
        for t in d
        for c in t.children or []
        if c.type == "code_inline"
    ]
    assert detail_spans and max(map(len, detail_spans)) <= 60, max(
        detail_spans, key=len
    )


def test_the_papers_numbers_are_the_collected_ones(claims):
    """Every decimal number a claim quotes from a paper is in ../shared/papers/reported_numbers.yaml (the
    numbers collected from readable copies, with their evidence): none is typed from memory."""
    collected = REPO.parent / "shared" / "papers" / "reported_numbers.yaml"
    if not collected.is_file():
        pytest.skip(f"{collected} is not beside the repository")
    text = collected.read_text()
    quoted = [
        (c["id"], n)
        for c in claims
        for n in re.findall(r"\d+\.\d+", c["reported_text"] or "")
    ]
    assert len(quoted) > 20
    missing = [(i, n) for i, n in quoted if n not in text]
    assert not missing, f"numbers not in {collected.name}: {missing}"
