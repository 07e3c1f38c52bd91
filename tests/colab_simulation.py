"""Chapters re-executed as a Colab reader runs them, within ``make test``'s nbval pass.

``pytest -p colab_simulation --simulate-colab=05,06,07 ... notebooks`` (with ``tests/`` on
``PYTHONPATH``) runs those chapters' notebooks with no ``../shared`` beside the manifests, every
file downloaded from a loopback HTTP server that serves the shared copies under their public URL
layout (``medvae_lib.mirror``, through ``MEDVAE_MIRROR``), and an empty download cache of their
own, so each file is fetched and checksum-verified exactly as on Colab. The other notebooks run as
before. The kernel of a notebook inherits the environment at its first cell, which is set here.

Only chapters whose every file has a public copy in ``../shared`` can be simulated: chapters 1-4
read the class-balanced PneumoniaMNIST subset (on Colab they draw one from the official 28x28
file, which ``../shared`` does not hold), and chapter 8 reads
MedPix 2.0's converted JPEGs (on Colab rebuilt from the repository's PNGs, which ``../shared``
does not hold either); their download paths are tested on loopback servers in
``tests/test_data.py``, ``tests/test_public_downloads.py`` and ``tests/test_medpix2.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from helpers import LoopbackServer

VARIABLES = (
    "MEDVAE_MANIFEST_DIR",
    "MEDVAE_MIRROR",
    "XDG_CACHE_HOME",
    "MEDVAE_DATA_ROOT",
)
# What a download prints, which the committed outputs (made from ../shared) do not have: medvae_lib's
# notice and pooch's log line. Only these lines are left out when a checked cell's outputs are compared.
CHATTER = re.compile(
    r"^.* is not at .*; downloading the same file from .*\n"
    r"|^Downloading data from '[^']*' to file '[^']*'\.\n",
    re.M,
)


def without_download_chatter(outputs):
    """``outputs`` with the download lines removed from their streams (and streams left empty)."""
    kept = []
    for output in outputs:
        if output.get("output_type") == "stream":
            text = CHATTER.sub("", output.get("text", ""))
            if not text:
                continue
            output = nbformat.NotebookNode({**output, "text": text})
        kept.append(output)
    return kept


def pytest_addoption(parser):
    parser.addoption(
        "--simulate-colab",
        default="",
        help="comma-separated chapter numbers (05,06,07) whose notebooks run as on Colab: no "
        "../shared, every file downloaded from a loopback mirror, an empty cache",
    )


def pytest_configure(config):
    chapters = {c.strip() for c in config.getoption("--simulate-colab").split(",")} - {
        ""
    }
    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    unknown = sorted(c for c in chapters if not list(notebooks.glob(f"{c}_*.ipynb")))
    if unknown:
        raise pytest.UsageError(
            f"--simulate-colab: no chapter notebook numbered {unknown} (write 05, not 5)"
        )
    if chapters:
        simulation = Simulation(chapters)
        config.pluginmanager.register(simulation, "colab-simulation")
        config.add_cleanup(simulation.close)


class Simulation:
    def __init__(self, chapters: set[str]):
        from medvae_lib.data import manifest_dir
        from medvae_lib.mirror import build_mirror

        self.chapters = chapters
        self.root = Path(tempfile.mkdtemp(prefix="colab-simulation-"))
        self.files = build_mirror(self.root / "mirror")
        clone = self.root / "clone" / "data_manifests"  # no shared/ beside this clone
        shutil.copytree(manifest_dir(), clone)
        self.server = LoopbackServer(self.root / "mirror").__enter__()
        self.base = {"MEDVAE_MANIFEST_DIR": str(clone)}
        if (
            self.files
        ):  # without ../shared (CI elsewhere) the public hosts serve, as on Colab
            self.base["MEDVAE_MIRROR"] = self.server.url("")
        self.saved = {k: os.environ.get(k) for k in VARIABLES}
        self.requests: dict[str, int] = {}
        self.current: str | None = None

    def close(self):
        self.server.__exit__(None, None, None)
        shutil.rmtree(self.root, ignore_errors=True)

    def _chapter(self, item) -> str | None:
        path = Path(str(item.fspath))
        return path.name[:2] if path.suffix == ".ipynb" else None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        chapter = self._chapter(item)
        if chapter in self.chapters:
            os.environ.pop(
                "MEDVAE_DATA_ROOT", None
            )  # the data folder beside the clone: none
            if hasattr(item, "compare_outputs") and not hasattr(item, "_colab"):
                compare = item.compare_outputs
                item.compare_outputs = lambda test, ref, skip=None: compare(
                    without_download_chatter(test), ref, skip
                )
                item._colab = True
            env = {**self.base, "XDG_CACHE_HOME": str(self.root / "cache" / chapter)}
            os.environ.update(env)
            if chapter != self.current:
                self.requests.setdefault(chapter, 0)
            self.current, self._before = chapter, self.server.requests
        else:
            for key, value in self.saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self.current = None

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item):
        if self.current is not None:
            self.requests[self.current] += self.server.requests - self._before

    def pytest_sessionfinish(self, session):
        if not self.files:
            return  # downloads went to the public hosts, not counted here
        quiet = [c for c, n in self.requests.items() if n == 0]
        if quiet and session.exitstatus == 0:
            session.exitstatus = 1
            self.failure = (
                f"chapters {quiet} were to run as on Colab but downloaded nothing: "
                "they read their data some other way"
            )

    def pytest_terminal_summary(self, terminalreporter):
        ran = ", ".join(f"{c}: {n} downloads" for c, n in sorted(self.requests.items()))
        source = (
            f"{len(self.files)} files on a loopback mirror"
            if self.files
            else "no ../shared to mirror: public hosts"
        )
        terminalreporter.write_line(
            f"simulated Colab (no ../shared, {source}): {ran or 'no simulated chapter ran'}"
        )
        if getattr(self, "failure", None):
            terminalreporter.write_line(self.failure, red=True)
