"""The book's structure: every chapter notebook has its library module, two run modes, a Colab
badge pointing at the configured repository, and committed outputs without errors."""

import importlib
import re
from pathlib import Path

import nbformat
import pytest
import yaml

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
    module = importlib.import_module(f"medvae_lib.{path.stem[3:]}")  # 01_data_prep -> medvae_lib.data_prep
    assert set(module.MODES) == {"ci", "full"}

    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and re.search(r'^mode = "ci"$', params[0].source, re.M)
    assert "seed = " in params[0].source and "overrides = {}" in params[0].source

    repo_url = CONFIG["repository"]["url"]
    colab = repo_url.replace("https://github.com", "https://colab.research.google.com/github")
    assert f"{colab}/blob/main/notebooks/{path.name}" in nb.cells[0].source
    install = next(c for c in nb.cells if c.cell_type == "code")
    assert 'if "google.colab" in sys.modules:' in install.source and repo_url in install.source
    assert "requirements-colab.txt" in install.source, "on Colab install only what Colab lacks"

    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for heading in ("**Learning goals.**", "**Prerequisites.**", "**Time to run.**", "## Summary", "## Exercises", "## References"):
        assert heading in text, f"{path.name} lacks {heading}"

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "commit the notebook executed (make book)"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} was committed with errors: {[e['ename'] for e in errors]}"
    assert sum("# NBVAL_CHECK_OUTPUT" in c.source for c in code) >= 2, "nbval needs cells whose outputs it re-checks"
    streams = [o for c in code for o in c.outputs if o.output_type == "stream"]
    assert not any("it/s]" in o.text or "s/it]" in o.text for o in streams), "progress bars committed (run with TQDM_DISABLE=1)"
    assert all(o.text.count("\n") <= 20 for o in streams), "keep committed text output to a short summary"


def _pins(path):
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


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
    assert set(colab) <= requirements, "requirements-colab.txt must pin the versions requirements.txt pins"
    kept = {"torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib", "ipykernel", "tqdm", "pyyaml"}
    assert not {c.split("==")[0] for c in colab} & kept, "do not re-pin packages Colab already has in its running kernel"


def test_python_version_is_stated_consistently():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in pyproject
    assert "Python ≥ 3.11" in (REPO / "README.md").read_text()
