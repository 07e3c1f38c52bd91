import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import HEADER, MD5, REPO, SHA, SHARED_README_SHA256, LoopbackServer

from medvae_lib.data import (
    ChecksumError,
    ManifestError,
    apply_transform,
    fetch,
    file_digest,
    image_transform,
    load_dataset,
    load_manifest,
    load_medmnist_npz,
    verify_file,
)
from medvae_lib.data_prep import prepare_splits, subsample


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """Local files of test manifests lie in tmp_path, made the data folder for the test."""
    monkeypatch.setenv("MEDVAE_DATA_ROOT", str(tmp_path))
    return tmp_path


def test_manifest_describes_source_licence_and_checksums(manifest):
    assert manifest.licence == "CC BY 4.0"
    assert manifest.source.startswith("https://")
    assert "Kermany" in manifest.citation
    assert set(manifest.files) == {"ci", "28", "64", "128", "224"}
    assert manifest.file("ci").sha256 == SHARED_README_SHA256
    for key in ("64", "128", "224"):
        f = manifest.file(key)
        assert (
            f.url
            and f.url.startswith("https://zenodo.org/")
            and f.image_size == int(key)
        )
        assert f.checksum[0] in ("sha256", "md5") and len(f.checksum[1]) in (32, 64)


def test_real_file_matches_manifest_and_loads(manifest, ci_file):
    assert file_digest(ci_file) == SHARED_README_SHA256
    splits = load_dataset(manifest, "ci")
    assert {k: len(v.images) for k, v in splits.items()} == {
        "train": 2428,
        "val": 270,
        "test": 468,
    }
    assert (
        splits["train"].images.shape[1:] == (28, 28)
        and splits["train"].images.dtype == np.uint8
    )
    assert set(np.unique(splits["test"].labels)) == {0, 1}


def test_corrupt_file_raises_checksum_error(manifest, ci_file, tmp_path):
    bad = tmp_path / "pneumoniamnist.npz"
    data = bytearray(ci_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(
        ChecksumError, match="sha256 is .* but the manifest records f36c2b3e"
    ):
        verify_file(bad, manifest.file("ci"))


def test_missing_file_raises_with_the_file_named(manifest, tmp_path):
    with pytest.raises(FileNotFoundError, match="pneumoniamnist.npz"):
        verify_file(tmp_path / "nowhere.npz", manifest.file("ci"))


def test_missing_local_copy_points_to_downloadable_files(tmp_path, data_root):
    local = tmp_path / "m.yaml"
    local.write_text(
        HEADER
        + f"files:\n  ci: {{filename: x.npz, image_size: 28, local: {tmp_path}/absent.npz, sha256: '{SHA}'}}\n"
        f"  '28': {{filename: x.npz, image_size: 28, url: 'http://127.0.0.1:9/x.npz', md5: '{MD5}'}}\n"
    )
    with pytest.raises(
        FileNotFoundError,
        match=r"is not there; files that can be downloaded instead: \['28'\]",
    ):
        fetch(local, "ci")


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: m\n", r"lacks required field\(s\) \['title'"),
        ("- just\n- a list\n", "must be a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
        (
            HEADER + "files:\n  a: {filename: x.npz, image_size: 28, local: x.npz}\n",
            "records no checksum",
        ),
        (
            HEADER
            + f"files:\n  a: {{filename: x.npz, image_size: 28, sha256: '{SHA}'}}\n",
            "no 'url', 'local' or 'bundled' path",
        ),
        (
            HEADER
            + "files:\n  a: {filename: x.npz, image_size: 28, local: x.npz, md5: 123}\n",
            "md5 must be str",
        ),
    ],
)
def test_malformed_manifests_are_rejected_with_the_reason(tmp_path, text, message):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=message):
        load_manifest(path)


def test_unknown_manifest_and_file_key(manifest):
    with pytest.raises(ManifestError, match="known manifests: .*pneumoniamnist"):
        load_manifest("no_such_dataset")
    with pytest.raises(ManifestError, match="has no file '512'"):
        manifest.file("512")


def test_npz_layout_errors_name_the_problem(tmp_path, ci_file):
    real = dict(np.load(ci_file))
    broken = {k: v for k, v in real.items() if k != "val_labels"}
    np.savez(tmp_path / "missing.npz", **broken)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['val_labels'\]"):
        load_medmnist_npz(tmp_path / "missing.npz")
    np.savez(
        tmp_path / "float.npz",
        **{**real, "train_images": real["train_images"].astype(np.float32)},
    )
    with pytest.raises(
        ValueError, match="train_images has dtype float32, expected uint8"
    ):
        load_medmnist_npz(tmp_path / "float.npz")
    np.savez(
        tmp_path / "short.npz", **{**real, "test_labels": real["test_labels"][:-1]}
    )
    with pytest.raises(ValueError, match="test has 468 images but 467 labels"):
        load_medmnist_npz(tmp_path / "short.npz")
    with pytest.raises(
        ValueError, match="train has 2428 images, the manifest says 2000"
    ):
        load_medmnist_npz(ci_file, n_samples={"train": 2000})
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_medmnist_npz(tmp_path / "text.npz")


def test_download_is_verified_and_cached(manifest, ci_file, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(ci_file, served / "pneumoniamnist.npz")
    cache = tmp_path / "cache"
    with LoopbackServer(served) as server:
        url = server.url("pneumoniamnist.npz")
        path = fetch(manifest, "ci", cache_dir=cache, url=url)
        assert path.parent == cache and file_digest(path) == SHARED_README_SHA256
        assert fetch(manifest, "ci", cache_dir=cache, url=url) == path
        assert server.requests == 1, (
            "a verified file in the cache must not be downloaded again"
        )


def test_a_mirror_serves_the_public_layout_and_is_still_verified(
    manifest, ci_file, tmp_path, monkeypatch
):
    """$MEDVAE_MIRROR replaces the public host by the mirror's base URL, keeping host and
    path as folders; the file is checked against the manifest as before."""
    from medvae_lib.data import mirrored

    public = "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"
    folder = tmp_path / "mirror" / "zenodo.org" / "records" / "10519652" / "files"
    folder.mkdir(parents=True)
    shutil.copy(ci_file, folder / "pneumoniamnist.npz")
    with LoopbackServer(tmp_path / "mirror") as server:
        monkeypatch.setenv("MEDVAE_MIRROR", server.url("") + "/")
        assert mirrored(public) == server.url(
            "zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"
        )
        path = fetch(manifest, "ci", cache_dir=tmp_path / "cache", url=public)
        assert file_digest(path) == SHARED_README_SHA256 and server.requests == 1
        (folder / "pneumoniamnist.npz").write_bytes(b"not the file")
        with pytest.raises(ChecksumError, match="does not match the manifest's sha256"):
            fetch(manifest, "ci", cache_dir=tmp_path / "other", url=public)
    monkeypatch.setenv("MEDVAE_MIRROR", "")
    assert mirrored(public) == public
    monkeypatch.setenv("MEDVAE_MIRROR", "http://mirror")
    with pytest.raises(ValueError, match="not an http"):
        mirrored("ftp.example/file")


def test_corrupt_download_raises_and_leaves_nothing(manifest, ci_file, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "pneumoniamnist.npz").write_bytes(
        ci_file.read_bytes()[:-100]
    )  # truncated transfer
    cache = tmp_path / "cache"
    with LoopbackServer(served) as server:
        with pytest.raises(ChecksumError, match="does not match the manifest's sha256"):
            fetch(manifest, "ci", cache_dir=cache, url=server.url("pneumoniamnist.npz"))
    assert not (cache / "pneumoniamnist.npz").exists()


def test_transform_normalises_and_resizes_real_images(ci_file):
    images = np.load(ci_file)["test_images"][:8]
    x = apply_transform(images, image_transform(32))
    assert (
        type(x) is torch.Tensor
        and x.shape == (8, 1, 32, 32)
        and x.dtype == torch.float32
    )
    assert 0.0 <= x.min() and x.max() <= 1.0
    z = apply_transform(images, image_transform(28, normalisation="zscore"))
    assert torch.allclose(z.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-5)
    # At the stored size, minmax is exactly value / 255.
    m = apply_transform(images, image_transform(28))
    assert torch.allclose(
        m[:, 0], torch.as_tensor(images, dtype=torch.float32) / 255, atol=1e-6
    )


def test_transform_3d_and_bad_arguments():
    volume = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 20), dtype=np.uint8)
    assert apply_transform(volume, image_transform(16, spatial_dims=3)).shape == (
        2,
        1,
        16,
        16,
        16,
    )
    with pytest.raises(ValueError, match="unknown normalisation 'std'"):
        image_transform(32, normalisation="std")
    with pytest.raises(ValueError, match="no images"):
        apply_transform(volume[:0], image_transform(16, spatial_dims=3))


def test_subsample_is_stratified_and_seeded(manifest):
    train = load_dataset(manifest, "ci")["train"]
    a, b = subsample(train, 101, seed=3), subsample(train, 101, seed=3)
    assert len(a.labels) == 101 and np.array_equal(a.images, b.images)
    assert sorted(np.bincount(a.labels)) == [50, 51]
    assert subsample(train, None, seed=0) is train


def test_prepare_splits_gives_model_ready_tensors(manifest):
    prepared = prepare_splits(manifest, "ci", 32, n={"train": 64})
    x, y = prepared["train"]
    assert x.shape == (64, 1, 32, 32) and y.shape == (64,) and y.dtype == torch.int64
    assert prepared["test"][0].shape == (468, 1, 32, 32)


def test_image_shape_is_checked_against_the_manifest(ci_file, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"train_images have shape \(28, 28\) per image, the manifest says \(64, 64\)",
    ):
        load_medmnist_npz(ci_file, image_size=64, spatial_dims=2)
    with pytest.raises(ValueError, match=r"the manifest says \(28, 28, 28\)"):
        load_medmnist_npz(ci_file, image_size=28, spatial_dims=3)
    assert load_medmnist_npz(ci_file, image_size=28, spatial_dims=2)[
        "val"
    ].images.shape == (270, 28, 28)


def test_missing_ci_copy_falls_back_to_a_balanced_subset_of_the_release(
    ci_file, tmp_path, capsys, data_root
):
    """On Colab the copy beside the repository is absent: the same kind of subset (class-balanced, of
    the sizes the manifest records) is drawn from the verified public release instead."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(ci_file, served / "release.npz")
    with LoopbackServer(served) as server:
        path = tmp_path / "m.yaml"
        path.write_text(
            HEADER + "files:\n"
            f"  ci: {{filename: x.npz, image_size: 28, local: {tmp_path}/absent.npz, sha256: '{SHA}', fallback: '28',\n"
            "       n_samples: {train: 100, val: 20, test: 40}}\n"
            f"  '28': {{filename: release.npz, image_size: 28, url: '{server.url('release.npz')}', sha256: '{SHARED_README_SHA256}'}}\n"
        )
        splits = load_dataset(path, "ci", cache_dir=tmp_path / "cache")
        again = load_dataset(path, "ci", cache_dir=tmp_path / "cache")
    assert "drawing the same kind of subset" in capsys.readouterr().out
    assert {s: np.bincount(v.labels).tolist() for s, v in splits.items()} == {
        "train": [50, 50],
        "val": [10, 10],
        "test": [20, 20],
    }
    assert np.array_equal(splits["train"].images, again["train"].images)


def test_a_fallback_must_name_another_file(tmp_path, data_root):
    path = tmp_path / "m.yaml"
    path.write_text(
        HEADER
        + f"files:\n  ci: {{filename: x.npz, image_size: 28, local: {tmp_path}/x.npz, sha256: '{SHA}', fallback: '64', n_samples: {{train: 2}}}}\n"
    )
    with pytest.raises(ManifestError, match="fallback '64' must name another file"):
        load_manifest(path)


def test_manifests_resolve_without_an_editable_install(tmp_path):
    """A plain (non-editable) install puts medvae_lib in site-packages, away from data_manifests/."""
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    shutil.copytree(
        REPO / "medvae_lib",
        site / "medvae_lib",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    code = "from medvae_lib.data import load_manifest; print(load_manifest('pneumoniamnist').file('ci').local)"
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MEDVAE_MANIFEST_DIR", None)

    def run(cwd, **extra):
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=cwd,
            env={**env, **extra},
            capture_output=True,
            text=True,
        )

    inside = run(REPO / "notebooks")
    assert inside.returncode == 0, inside.stderr
    assert (
        Path(inside.stdout.strip())
        == (REPO.parent / "shared" / "data" / "pneumoniamnist.npz").resolve()
    )
    outside = run(tmp_path)
    assert outside.returncode != 0 and "set $MEDVAE_MANIFEST_DIR" in outside.stderr
    assert (
        run(tmp_path, MEDVAE_MANIFEST_DIR=str(REPO / "data_manifests")).returncode == 0
    )


def test_resizing_figure_shows_only_shrinking(ci_file):
    import matplotlib

    matplotlib.use("Agg")
    from medvae_lib.data_prep import plot_resizing

    image = np.load(ci_file)["val_images"][0]
    fig = plot_resizing(image, [14, 9, 7])
    diff = (
        fig.axes[-1].images[0].get_array()
    )  # the last |difference| panel: anti-aliasing changed pixels
    assert float(np.max(diff)) > 0.01
    with pytest.raises(ValueError, match="only acts when shrinking"):
        plot_resizing(image, [14, 32])


def test_a_bundled_copy_is_used_where_the_shared_one_is_absent(tmp_path):
    """A small file that ships with the repository (beside the manifests) is verified in place when
    the ../shared copy is missing; a changed one is refused, and one outside the folder too."""
    manifests = tmp_path / "repo" / "data_manifests"
    (manifests / "m").mkdir(parents=True)
    bundled = manifests / "m" / "t.csv"
    bundled.write_text("a,b\n1,2\n")
    digest = file_digest(bundled)
    path = manifests / "m.yaml"
    entry = (
        "{filename: t.csv, image_size: 1, local: ../shared/data/t.csv, bundled: m/t.csv"
    )
    path.write_text(HEADER + f"files:\n  t: {entry}, sha256: '{digest}'}}\n")
    assert fetch(path, "t") == bundled
    bundled.write_text("a,b\n1,3\n")
    with pytest.raises(ChecksumError, match="t.csv"):
        fetch(path, "t")
    path.write_text(
        HEADER
        + f"files:\n  t: {{filename: t.csv, image_size: 1, bundled: ../../x.csv, "
        f"sha256: '{digest}'}}\n"
    )
    with pytest.raises(ManifestError, match="outside the manifests' folder"):
        load_manifest(path)


def test_a_mirror_is_laid_out_from_verified_local_copies(tmp_path, monkeypatch):
    """python -m medvae_lib.mirror: each file with a public URL and a local copy goes to
    <host>/<path>; a changed local copy is refused; one with no local copy is left out."""
    from medvae_lib import mirror

    repo, shared = tmp_path / "repo", tmp_path / "shared" / "data"
    (repo / "data_manifests").mkdir(parents=True)
    shared.mkdir(parents=True)
    (shared / "a.npz").write_bytes(b"real bytes")
    digest = file_digest(shared / "a.npz")
    url = "https://zenodo.org/records/1/files/a.npz?download=1"
    (repo / "data_manifests" / "m.yaml").write_text(
        HEADER + f"files:\n  a: {{filename: a.npz, image_size: 28, url: '{url}', "
        f"local: ../shared/data/a.npz, sha256: '{digest}'}}\n"
        f"  b: {{filename: b.npz, image_size: 28, url: 'https://x.org/b.npz', md5: '{MD5}'}}\n"
    )
    monkeypatch.setenv("MEDVAE_MANIFEST_DIR", str(repo / "data_manifests"))
    written = mirror.build_mirror(tmp_path / "mirror")
    assert written == [tmp_path / "mirror" / "zenodo.org/records/1/files/a.npz"]
    assert written[0].read_bytes() == b"real bytes"
    (shared / "a.npz").write_bytes(b"other bytes")
    with pytest.raises(ChecksumError):
        mirror.build_mirror(tmp_path / "mirror2")
    with pytest.raises(ManifestError, match="not a plain"):
        mirror.public_path("https://x.org/../../etc/passwd")
