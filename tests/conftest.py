from pathlib import Path

import pytest
import torch

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
        pytest.fail(
            f"the CI data file is missing at {path}; see ../shared/data/README.md"
        )
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny convolutions on a shared 2-core machine run far faster so."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
