"""The book's structure: every chapter notebook has its library module, two run modes, a Colab
badge pointing at the configured repository, and committed outputs without errors."""

import importlib
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from medvae_lib import markup, nbhygiene

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CONFIG = yaml.safe_load((REPO / "book" / "_config.yml").read_text())


def test_every_notebook_is_in_the_table_of_contents():
    toc = (REPO / "book" / "_toc.yml").read_text()
    assert NOTEBOOKS, "no chapter notebooks found"
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in toc


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_notebook(path):
    nb = nbformat.read(path, as_version=4)
    module = importlib.import_module(
        f"medvae_lib.{path.stem[3:]}"
    )  # 01_data_prep -> medvae_lib.data_prep
    assert set(module.MODES) == {"ci", "full"}

    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and re.search(r'^mode = "ci"$', params[0].source, re.M)
    assert "seed = " in params[0].source and "overrides = {}" in params[0].source

    repo_url = CONFIG["repository"]["url"]
    colab = repo_url.replace(
        "https://github.com", "https://colab.research.google.com/github"
    )
    assert f"{colab}/blob/main/notebooks/{path.name}" in nb.cells[0].source
    install = next(c for c in nb.cells if c.cell_type == "code")
    assert (
        'if "google.colab" in sys.modules:' in install.source
        and repo_url in install.source
    )
    assert "requirements-colab.txt" in install.source, (
        "on Colab install only what Colab lacks"
    )

    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    number = int(path.stem[:2])
    assert re.match(rf"# {number}\. \S", nb.cells[0].source), (
        "the first cell starts with the chapter's title '# N. ...'"
    )
    template = [
        "**Learning goals.**",
        "**Prerequisites.**",
        "**Time to run.**",
        "## Summary",
        "## Exercises",
        "## What's next",
        "## References",
    ]
    positions = [text.find(part) for part in template]
    assert all(p >= 0 for p in positions), (
        f"{path.name} lacks {[t for t, p in zip(template, positions, strict=True) if p < 0]}"
    )
    assert positions == sorted(positions), (
        "the template's parts must come in the order of CONTRIBUTING.md"
    )
    sections = re.findall(rf"^## {number}\.(\d+) ", text, re.M)
    assert sections and [int(n) for n in sections] == list(
        range(1, len(sections) + 1)
    ), "number the sections N.1, N.2, ..."

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), (
        "commit the notebook executed (make book)"
    )
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, (
        f"{path.name} was committed with errors: {[e['ename'] for e in errors]}"
    )
    checked = [c for c in code if "nbval-check-output" in c.metadata.get("tags", [])]
    assert len(checked) >= 2, (
        "nbval needs cells whose outputs it re-checks (tag: nbval-check-output)"
    )
    assert not any("NBVAL_CHECK_OUTPUT" in c.source for c in code), (
        "mark checked cells with the tag nbval-check-output, not a comment the page shows"
    )
    streams = [o for c in code for o in c.outputs if o.output_type == "stream"]
    assert not any("it/s]" in o.text or "s/it]" in o.text for o in streams), (
        "progress bars committed (run with TQDM_DISABLE=1)"
    )
    lines = {
        i: sum(o.text.count("\n") for o in c.outputs if o.output_type == "stream")
        for i, c in enumerate(code)
    }
    assert all(n <= 20 for n in lines.values()), (
        f"keep committed text output to a short summary: {lines}"
    )
    texts = [
        o.text if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
        for c in code
        for o in c.outputs
    ]
    assert all(t.count("\n") < 100 for t in texts), (
        "no committed text output of 100 lines or more"
    )
    assert not nbhygiene.clean(nb), (
        "volatile metadata committed: run python -m medvae_lib.nbhygiene on the notebook"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_comes_before_every_code_cell(path):
    """Every code cell follows a markdown cell that has prose in it, not only a heading (library
    code shown by show_code cells in between counts with the prose it illustrates)."""
    cells = nbformat.read(path, as_version=4).cells
    shows = [markup.SHOW_CODE.match(c.source.strip()) for c in cells]
    for k, cell in enumerate(cells[1:], start=1):
        if cell.cell_type != "code" or shows[k]:
            continue
        # library code shown right before a cell belongs to the prose before it
        before = next(cells[j] for j in range(k - 1, -1, -1) if not shows[j])
        first = cell.source.splitlines()[0] if cell.source else ""
        assert before.cell_type == "markdown", (
            f"{path.name}: code cell '{first}' follows another code cell"
        )
        prose = [
            line
            for line in before.source.splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert prose, (
            f"{path.name}: code cell '{first}' follows a heading without prose"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_shown_library_code_is_the_librarys(path):
    """Chapters show the library's own code with show_code cells (medvae_lib.markup), whose committed
    output is what Colab and GitHub show before anything runs: it must be the library's code as it
    is now, so a renamed function or an edited one fails here rather than showing stale code."""
    nb = nbformat.read(path, as_version=4)
    shown = [c for c in nb.cells if c.cell_type == "code" and "show_code(" in c.source]
    assert shown, f"{path.name} shows no library code"
    for cell in shown:
        assert markup.SHOW_CODE.match(cell.source.strip()), (
            f'{path.name}: write show_code("<file under medvae_lib>", "<name>") '
            f"alone in its cell, not {cell.source!r}"
        )
        assert "remove-input" in cell.metadata.get("tags", []), (
            f"{path.name}: tag {cell.source!r} remove-input (the site shows the code alone)"
        )
    stale = markup.refresh(nb)
    assert not stale, (
        f"{path.name} shows old code of {stale}: "
        f"python -m medvae_lib.markup --refresh {path.relative_to(REPO)}"
    )


def _pins(path):
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_environment_yml_lists_the_pinned_requirements():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    requirements = _pins(REPO / "requirements.txt")
    assert sorted(p for p in pip if "==" in p) == sorted(requirements)
    assert all("==" in r for r in requirements), "pin every requirement exactly"
    # torchvision has to match torch: lpips (full mode) and MONAI's perceptual losses import it.
    assert {"torch==2.14.1", "torchvision==0.29.1", "lpips==0.1.4"} <= set(requirements)


def test_colab_installs_only_what_colab_lacks_with_the_same_pins():
    requirements = set(_pins(REPO / "requirements.txt"))
    colab = _pins(REPO / "requirements-colab.txt")
    assert set(colab) <= requirements, (
        "requirements-colab.txt must pin the versions requirements.txt pins"
    )
    kept = {
        "torch",
        "torchvision",
        "numpy",
        "scipy",
        "pandas",
        "matplotlib",
        "ipykernel",
        "tqdm",
        "pyyaml",
    }
    assert not {c.split("==")[0] for c in colab} & kept, (
        "do not re-pin packages Colab already has in its running kernel"
    )


def test_the_code_that_chapters_teach_is_shown():
    teaching = {
        "02_medvae_stage1": [
            "reconstruction_nll",
            "kl_divergence",
            "adaptive_adv_weight",
        ]
    }
    for stem, objects in teaching.items():
        nb = nbformat.read(REPO / "notebooks" / f"{stem}.ipynb", as_version=4)
        shown = {
            m["name"]
            for c in nb.cells
            if c.cell_type == "code" and (m := markup.SHOW_CODE.match(c.source.strip()))
        }
        for obj in objects:
            assert obj in shown, f"{stem} explains {obj} without showing its code"


def test_licence_and_citation():
    assert (
        "MIT License" in (REPO / "LICENSE").read_text()
        and "data_manifests" in (REPO / "LICENSE").read_text()
    )
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert (
        citation["cff-version"] == "1.2.0"
        and citation["repository-code"] == CONFIG["repository"]["url"]
    )


def test_ruff_pins_agree():
    pin = next(p for p in _pins(REPO / "requirements.txt") if p.startswith("ruff=="))
    hooks = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    rev = next(r["rev"] for r in hooks["repos"] if "ruff" in r["repo"])
    assert rev == "v" + pin.split("==")[1]


def test_python_version_is_stated_consistently():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in pyproject
    assert "Python ≥ 3.11" in (REPO / "README.md").read_text()


def test_the_workflow_tests_builds_and_deploys_the_configured_branch():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    jobs = workflow["jobs"]
    steps = jobs["test-and-build"]["steps"]
    commands = [s.get("run", "") for s in steps]
    assert any(c.startswith("make test") for c in commands) and any(
        c.startswith("make html") for c in commands
    )
    assert commands.index(
        next(c for c in commands if c.startswith("make test"))
    ) < commands.index(next(c for c in commands if c.startswith("make html"))), (
        "test before building"
    )
    upload = next(s for s in steps if "upload-pages-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "_build/html"
    branch = CONFIG["repository"]["branch"]
    assert (
        upload["if"] == jobs["deploy"]["if"] == f"github.ref == 'refs/heads/{branch}'"
    )
    assert any("deploy-pages" in s.get("uses", "") for s in jobs["deploy"]["steps"])


# MyST syntax as Colab and JupyterLab would show it, after their CommonMark rendering: a directive
# becomes a code block whose language is "{name}", a role "{name}" before inline code.
MYST_LEFT = re.compile(
    r'class="language-\{[\w:-]+\}|\{[a-z][\w-]*(?::[\w-]+)?\}<code>|^:(?:label|class|pyobject):',
    re.M,
)


def _as_colab_shows(markdown: str) -> str:
    """HTML from CommonMark (with tables), as Colab and JupyterLab render a markdown cell."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(markdown)


def test_the_colab_check_sees_myst():
    for text in (
        "```{exercise} T\n:label: ex-99-1\n\nDo it.\n```",
        "As {cite:p}`varma2025medvae` shows.",
        "```{literalinclude} ../medvae_lib/data.py\n:pyobject: f\n```",
    ):
        assert MYST_LEFT.search(_as_colab_shows(text)), text
    colab = '<!-- exercise ex-99-1 -->\n### Exercise 99.1: T\n\nDo it [A (2020)](u "cite:a").'
    assert not MYST_LEFT.search(_as_colab_shows(colab))
    assert "{exercise}" in markup.to_myst(colab) and "{cite:t}`a`" in markup.to_myst(
        colab
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_and_jupyterlab_show_no_myst_syntax(path):
    """Every exercise, solution, citation and piece of library code reads as text in Colab and
    JupyterLab: no markdown cell or markdown output leaves MyST syntax for them to show raw, and
    every exercise has its number and title in a heading there."""
    nb = nbformat.read(path, as_version=4)
    texts = [c.source for c in nb.cells if c.cell_type == "markdown"]
    texts += [
        "".join(o["data"]["text/markdown"])
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "text/markdown" in o.get("data", {})
    ]
    left = [
        (m[0], text[:60])
        for text in texts
        for m in MYST_LEFT.finditer(_as_colab_shows(text))
    ]
    assert not left, f"{path.name}: MyST syntax Colab would show raw: {left[:5]}"
    headings = re.findall(
        r"<h3>Exercise (\d+\.\d+): .+</h3>", _as_colab_shows("\n\n".join(texts))
    )
    book = markup.myst_notebook(nb)
    labels = re.findall(
        r"\{exercise\}[^\n]*\n:label: (\S+)",
        "\n".join(c.source for c in book.cells if c.cell_type == "markdown"),
    )
    assert headings == [markup.exercise_number(label) for label in labels] != [], (
        f"{path.name}: exercise headings {headings}, labels {labels}"
    )
