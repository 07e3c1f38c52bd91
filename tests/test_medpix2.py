"""MedPix 2.0 where ../shared is absent (Colab): pairs.csv and the images rebuilt from the public
repository (medvae_lib.image_text_data.medpix2), and vqa.csv shipped with the book."""

import csv
import hashlib
import io
import json

import pytest
from helpers import REPO, LoopbackServer
from PIL import Image

from medvae_lib import contrastive_benchmark as cb
from medvae_lib import data as mdata
from medvae_lib.image_text_data import build_medpix2, medpix2
from medvae_lib.image_text_data import downloads as itd_downloads

SHARED = REPO.parent / "shared" / "data" / "medpix2"
COMMIT = "d3bc431576ec8041114806ec3eb58d75adf45029"
REPO_PATH = f"raw.githubusercontent.com/CHILab1/MedPix-2.0/{COMMIT}/MedPix-2-0"
needs_shared = pytest.mark.skipif(
    not (SHARED / "pairs.csv").is_file(), reason="needs ../shared/data/medpix2"
)


def _shared_rows() -> list[dict]:
    with open(SHARED / "pairs.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@needs_shared
def test_the_tables_rebuild_every_text_column_of_the_shared_copy():
    """pairs.csv's rows, splits and captions come from the repository's Descriptions.json and
    uid_list.json (the shared copies are those files, sha256-checked by the manifest)."""
    manifest = mdata.load_manifest("medpix2")
    descriptions = json.loads(mdata.fetch(manifest, "descriptions").read_text())
    uid_list = json.loads(mdata.fetch(manifest, "uid_list").read_text())
    rebuilt = medpix2.pair_rows(descriptions, uid_list)
    shared = _shared_rows()
    assert len(rebuilt) == len(shared) == 2050
    text_columns = [c for c in medpix2.COLUMNS if c in rebuilt[0]]
    assert len(text_columns) == 13
    for mine, theirs in zip(rebuilt, shared, strict=True):
        assert {c: str(mine[c]) for c in text_columns} == {
            c: theirs[c] for c in text_columns
        }


def test_the_manifest_points_every_source_at_the_pinned_commit():
    manifest = mdata.load_manifest("medpix2")
    for key in ("descriptions", "uid_list"):
        assert f"/CHILab1/MedPix-2.0/{COMMIT}/" in manifest.file(key).url
    assert medpix2.image_url(manifest, "MPX1009_synpic46283") == (
        f"https://{REPO_PATH}/images/MPX1009_synpic46283.png"
    )
    vqa = manifest.file("vqa")
    assert vqa.local is None and vqa.bundled.is_relative_to(REPO / "data_manifests")
    assert mdata.fetch(manifest, "vqa") == vqa.bundled  # verified in place


@needs_shared
def test_the_bundled_vqa_table_is_the_shared_one():
    manifest = mdata.load_manifest("medpix2")
    assert (
        mdata.file_digest(SHARED / "vqa.csv")
        == mdata.file_digest(manifest.file("vqa").bundled)
        == manifest.file("vqa").sha256
    )


def _mirror(tmp_path, n: int = 3):
    """A mirror laid out as the public repository at the commit, holding ``n`` of the shared
    images (as PNGs: the originals are not in ../shared) and their descriptions, and a manifest
    whose checksums are those of these files; the expected pairs.csv is built from the shared
    table's rows with the stand-ins' sizes and digests."""
    descriptions = json.loads(
        (SHARED / "source_text" / "Descriptions.json").read_text()
    )[:n]
    uid_list = (SHARED / "source_text" / "uid_list.json").read_bytes()
    root = tmp_path / "mirror" / REPO_PATH
    (root / "images").mkdir(parents=True)
    (root / "splitted_dataset").mkdir()
    (root / "Descriptions.json").write_text(json.dumps(descriptions))
    (root / "splitted_dataset" / "uid_list.json").write_bytes(uid_list)
    shared = {r["image"]: r for r in _shared_rows()}
    rows = []
    for entry in descriptions:
        buf = io.BytesIO()
        with Image.open(SHARED / "images_224" / f"{entry['image']}.jpg") as im:
            im.convert("RGB").resize((300, 260)).save(buf, "PNG")
        png = buf.getvalue()
        (root / "images" / f"{entry['image']}.png").write_bytes(png)
        jpeg, size = medpix2.png_to_jpeg(png)
        assert size == (300, 260) and Image.open(io.BytesIO(jpeg)).size == (224, 194)
        rows.append(
            {
                **{c: shared[entry["image"] + ".jpg"][c] for c in medpix2.COLUMNS},
                "orig_width": 300,
                "orig_height": 260,
                "orig_png_sha256": hashlib.sha256(png).hexdigest(),
                "jpg_sha256": hashlib.sha256(jpeg).hexdigest(),
            }
        )
    expected = io.StringIO(newline="")
    writer = csv.DictWriter(expected, fieldnames=medpix2.COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    pairs_sha = hashlib.sha256(expected.getvalue().encode()).hexdigest()
    manifests = tmp_path / "repo" / "data_manifests"
    (manifests / "medpix2").mkdir(parents=True)
    vqa = (REPO / "data_manifests" / "medpix2" / "vqa.csv").read_text().splitlines()
    (manifests / "medpix2" / "vqa.csv").write_text(
        vqa[0] + "\n"
    )  # no question on these
    text = (REPO / "data_manifests" / "medpix2.yaml").read_text()
    text = text.replace(
        mdata.load_manifest("medpix2").file("vqa").sha256,
        mdata.file_digest(manifests / "medpix2" / "vqa.csv"),
    )
    text = text.replace(mdata.load_manifest("medpix2").file("pairs").sha256, pairs_sha)
    text = text.replace(
        mdata.load_manifest("medpix2").file("pairs").sources_sha256,
        medpix2._sources_digest(expected.getvalue()),
    )
    text = text.replace(
        mdata.load_manifest("medpix2").file("descriptions").sha256,
        hashlib.sha256((root / "Descriptions.json").read_bytes()).hexdigest(),
    )
    (manifests / "medpix2.yaml").write_text(text)
    return manifests / "medpix2.yaml", root, expected.getvalue()


@needs_shared
def test_build_medpix2_from_a_mirror_without_the_shared_copy(tmp_path, monkeypatch):
    """As on Colab: no ../shared beside the manifests, every file from the mirror at the public
    layout (MEDVAE_MIRROR), each checked; the table equals the expected bytes, the second load
    downloads nothing, and load_medpix2 reads the rebuilt copy from the download cache."""
    path, root, expected = _mirror(tmp_path)
    monkeypatch.setattr(itd_downloads, "_BACKOFF_S", 0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    manifest = mdata.load_manifest(path)
    assert not manifest.file("pairs").local.is_file()
    with LoopbackServer(tmp_path / "mirror") as server:
        monkeypatch.setenv("MEDVAE_MIRROR", server.url(""))
        pairs = build_medpix2(tmp_path / "out", manifest)
        assert pairs.read_bytes().decode() == expected
        assert sorted(p.name for p in (tmp_path / "out" / "images_224").iterdir()) == [
            d["image"] + ".jpg"
            for d in json.loads((root / "Descriptions.json").read_text())
        ]
        requests = server.requests
        assert requests == 2 + 3  # two tables, three images
        assert build_medpix2(tmp_path / "out", manifest) == pairs
        assert server.requests == requests
        loaded = cb.load_medpix2(32, manifest=manifest)
        assert server.requests == requests + 2 + 3  # into the cache, once
    assert loaded.images.shape[1:] == (1, 32, 32)
    assert loaded.digest == hashlib.sha256(expected.encode()).hexdigest()
    assert (
        len(loaded.vqa) == 0
    )  # none of the 1,265 questions is about these three images


@needs_shared
def test_another_pillows_jpegs_are_accepted_when_every_source_matches(
    tmp_path, monkeypatch, capsys
):
    """Another Pillow may resize a few images differently: the table then differs from the
    shared copy only in the JPEGs' digests, which is said; every source byte is still checked,
    and the rebuilt copy is verified (against its own JPEG digests) when it is read again."""
    path, _, expected = _mirror(tmp_path)
    convert = medpix2.png_to_jpeg

    def other_pillow(png):
        jpeg, size = convert(png)
        with Image.open(io.BytesIO(jpeg)) as im:
            out = io.BytesIO()
            im.save(out, "JPEG", quality=80)
        return out.getvalue(), size

    monkeypatch.setattr(medpix2, "png_to_jpeg", other_pillow)
    monkeypatch.setattr(itd_downloads, "_BACKOFF_S", 0)
    manifest = mdata.load_manifest(path)
    with LoopbackServer(tmp_path / "mirror") as server:
        monkeypatch.setenv("MEDVAE_MIRROR", server.url(""))
        pairs = build_medpix2(tmp_path / "out", manifest)
    assert "some JPEGs differ from the shared copy's" in capsys.readouterr().out
    assert pairs.read_bytes().decode() != expected
    assert medpix2.verify_table(pairs, manifest) is False
    pairs.write_text(pairs.read_text().replace("MPX", "MPY", 1))
    with pytest.raises(mdata.ChecksumError, match="not only in the JPEGs"):
        medpix2.verify_table(pairs, manifest)


@needs_shared
def test_a_changed_image_is_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    path, root, _ = _mirror(tmp_path)
    png = next((root / "images").iterdir())
    with Image.open(png) as im:
        im.rotate(1).save(png)  # another image under the same name
    monkeypatch.setattr(itd_downloads, "_BACKOFF_S", 0)
    with LoopbackServer(tmp_path / "mirror") as server:
        monkeypatch.setenv("MEDVAE_MIRROR", server.url(""))
        with pytest.raises(mdata.ChecksumError, match="differs from the copy"):
            build_medpix2(tmp_path / "out", mdata.load_manifest(path))
    assert not (tmp_path / "out" / "pairs.csv").exists()
    assert not [
        p for p in (tmp_path / "out").iterdir() if p.name.startswith(".pairs.csv")
    ]


@needs_shared
def test_a_changed_table_is_refused_before_any_image_is_fetched(tmp_path, monkeypatch):
    path, root, _ = _mirror(tmp_path)
    (root / "splitted_dataset" / "uid_list.json").write_text("{}")
    monkeypatch.setattr(itd_downloads, "_BACKOFF_S", 0)
    with LoopbackServer(tmp_path / "mirror") as server:
        monkeypatch.setenv("MEDVAE_MIRROR", server.url(""))
        with pytest.raises(mdata.ChecksumError):
            build_medpix2(tmp_path / "out", mdata.load_manifest(path))
        assert server.requests == 2
