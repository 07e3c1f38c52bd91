from pathlib import Path

import pytest

from medvae_lib.data import load_manifest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def manifest():
    return load_manifest("pneumoniamnist")


@pytest.fixture(scope="session")
def ci_file(manifest):
    """The real PneumoniaMNIST subset beside the repository (../shared/data), as the manifest names it."""
    path = manifest.file("ci").local
    if not path.is_file():
        pytest.fail(f"the CI data file is missing at {path}; see ../shared/data/README.md")
    return path
