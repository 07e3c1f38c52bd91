"""Every manifest in data_manifests/ is valid, and every file it keeps beside the repository matches its checksum."""

from pathlib import Path

import pytest

from medvae_lib import data

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((REPO / "data_manifests").glob("*.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_manifest_loads_and_its_local_files_verify(path):
    manifest = data.load_manifest(path)
    assert manifest.name == path.stem, (
        "a manifest is found by name: its file name must be its name"
    )
    local = [f for f in manifest.files.values() if f.local is not None]
    present = [f for f in local if f.local.is_file()]
    if local and not present:
        pytest.skip(
            f"none of {manifest.name}'s local files is here (../shared/data missing)"
        )
    for f in present:
        data.verify_file(
            f.local, f
        )  # raises ChecksumError naming the file when it does not match


def test_brain_mri_lists_four_contrasts_per_subject():
    manifest = data.load_manifest("brain_mri")
    subjects = {key.split("/")[0] for key in manifest.files}
    assert len(subjects) == 3
    for subject in subjects:
        contrasts = {
            key.split("/")[1] for key in manifest.files if key.startswith(subject + "/")
        }
        assert {"t1", "t1c", "t2", "flair"} <= contrasts, subject
