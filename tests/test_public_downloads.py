"""Files kept beside the repository (../shared/data) are also downloadable from their public source at a
pinned revision (Colab has no ../shared): the shared copy is served from a loopback HTTP server under the
public URL layout, the repository's manifests are pointed at it, and each chapter's own loader must
download the file, verify its sha256 and read the same data as from ../shared."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, SHA, LoopbackServer

from medvae_lib import data

SHARED = REPO.parent / "shared" / "data"
BRAIN_COMMIT = "a2d3fffe821e0dfd3bb62520985239324eaeda9a"
RAW = "https://raw.githubusercontent.com/"
ZENODO = "https://zenodo.org/"
SUBJECT = "TCGA-DU-7294"

pytestmark = pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data is not here"
)


def test_every_brain_file_has_a_pinned_public_url():
    manifest = data.load_manifest("brain_mri")
    for key, f in manifest.files.items():
        assert f.local is not None and f.sha256, key
        assert f.url and f.url.startswith(
            f"{RAW}BrainLesion/tutorials/{BRAIN_COMMIT}/"
        ), key
    for name, key in (
        ("breastmnist", "64"),
        ("adrenalmnist3d", "28"),
        ("adrenalmnist3d", "64"),
    ):
        f = data.load_manifest(name).file(key)
        assert f.local is not None and f.sha256, (name, key)
        assert f.url == f"{ZENODO}records/10519652/files/{f.filename}?download=1", (
            name,
            key,
        )


def _mirror(
    tmp_path: Path,
    server: LoopbackServer,
    names,
    prefix: str,
    keys,
    wrong: str | None = None,
) -> Path:
    """A copy of the repository's manifests (``names``) with ``prefix`` URLs pointing at ``server``, beside
    an empty ``shared/data`` (the Colab situation); each file of ``keys`` is served (as a link to its shared
    copy) under its public path. ``wrong`` names a file whose recorded sha256 is replaced by another."""
    served, folder = tmp_path / "served", tmp_path / "repo" / "data_manifests"
    folder.mkdir(parents=True, exist_ok=True)
    (tmp_path / "shared" / "data").mkdir(parents=True, exist_ok=True)
    for name in names:
        text = (REPO / "data_manifests" / f"{name}.yaml").read_text()
        manifest = data.load_manifest(name)
        for key in keys.get(name, ()):
            f = manifest.file(key)
            target = served / f.url[len(prefix) :].split("?")[0]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f.local)
            if key == wrong:
                text = text.replace(f"sha256: {f.sha256}", f"sha256: '{SHA}'")
        (folder / f"{name}.yaml").write_text(text.replace(prefix, server.url("")))
    return folder


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """Manifests found in tmp_path (whose ../shared/data is empty), pooch's cache in tmp_path too."""
    served = tmp_path / "served"
    served.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    with LoopbackServer(served) as server:
        yield server


def test_chapter_brain_loaders_download_verify_and_read_the_same_volumes(
    colab, tmp_path, monkeypatch, capsys
):
    from medvae_lib import medvae_3d, multimodal_theory

    keys = [f"{SUBJECT}/{c}" for c in ("t1", "t1c", "t2", "flair")]
    from_shared = multimodal_theory.load_brain_subject(SUBJECT)
    volume_shared = medvae_3d.load_brain_volume(SUBJECT, "t2", spacing=4)
    monkeypatch.setenv(
        data.MANIFEST_DIR_ENV,
        str(_mirror(tmp_path, colab, ["brain_mri"], RAW, {"brain_mri": keys})),
    )
    manifest = data.load_manifest("brain_mri")
    assert not any(manifest.file(k).local.is_file() for k in keys), (
        "the test must not see ../shared"
    )

    downloaded = multimodal_theory.load_brain_subject(SUBJECT)  # chapter 6
    assert "downloading the same file from http://127.0.0.1" in capsys.readouterr().out
    assert colab.requests == 4
    assert downloaded.keys() == from_shared.keys()
    for c in from_shared:
        assert np.array_equal(downloaded[c], from_shared[c]), c
    volume = medvae_3d.load_brain_volume(
        SUBJECT, "t2", spacing=4
    )  # chapter 5, from the cache
    assert torch.equal(volume, volume_shared) and colab.requests == 4, (
        "a verified cached file is not fetched again"
    )
    for key in keys:
        path = data.fetch(manifest, key)
        assert (
            path.is_relative_to(tmp_path / "cache")
            and data.file_digest(path) == manifest.file(key).sha256
        )


def test_a_download_with_the_wrong_checksum_is_refused(colab, tmp_path, monkeypatch):
    from medvae_lib import personalized_invariant

    keys = list(data.load_manifest("brain_mri").files)
    folder = _mirror(
        tmp_path, colab, ["brain_mri"], RAW, {"brain_mri": keys}, wrong=f"{SUBJECT}/t1c"
    )
    manifest = data.load_manifest(folder / "brain_mri.yaml")
    with pytest.raises(
        data.ChecksumError,
        match=f"TCGA-DU-7294_t1c_bet.nii.gz does not match the manifest's sha256 {SHA}",
    ):
        data.fetch(manifest, f"{SUBJECT}/t1c")
    with pytest.raises(
        data.ChecksumError, match="does not match the manifest's sha256"
    ):
        personalized_invariant.manifest_subjects(
            manifest
        )  # chapter 7's loader refuses it too
    cached = list((tmp_path / "cache").rglob("TCGA-DU-7294_t1c_bet.nii.gz"))
    assert cached == [], "a file that fails its checksum must not be left in the cache"


def test_breastmnist_64_downloads_verifies_and_reads_the_same_data(
    colab, tmp_path, monkeypatch
):
    from medvae_lib import contrastive_benchmark

    from_shared = contrastive_benchmark.load_external("breast", 32, None)
    folder = _mirror(tmp_path, colab, ["breastmnist"], ZENODO, {"breastmnist": ["64"]})
    monkeypatch.setenv(data.MANIFEST_DIR_ENV, str(folder))
    assert not data.load_manifest("breastmnist").file("64").local.is_file()
    downloaded = contrastive_benchmark.load_external("breast", 32, None)  # chapter 8
    assert colab.requests == 1
    for split in ("train", "test"):
        assert torch.equal(downloaded[split][0], from_shared[split][0])
        assert np.array_equal(downloaded[split][1], from_shared[split][1])
