"""MedPix 2.0 rebuilt from its public repository, for readers without ``../shared`` (Colab).

Chapter 8's copy of MedPix 2.0 (``../shared/data/medpix2/``) is a conversion: 2,050 greyscale JPEGs
with a long side of 224 px and a table ``pairs.csv``, made from the repository CHILab1/MedPix-2.0 at
commit d3bc431576ec8041114806ec3eb58d75adf45029. :func:`build_medpix2` makes the same files from that
commit: it downloads ``Descriptions.json`` and ``splitted_dataset/uid_list.json`` (checked against
the manifest's sha256), then each image's 512 px PNG from the same commit
(``MedPix-2-0/images/<image>.png``, real files in git, not LFS), converts it as the shared copy was
converted, and writes ``pairs.csv``, which must then equal the manifest's sha256 byte for byte. The
table records each PNG's and each JPEG's sha256, so that one check covers every image.

The conversion (found by rebuilding all 2,050 files byte for byte from the repository's PNGs):
greyscale first (``convert("L")``: the PNGs are grey RGB or RGBA), then ``Image.thumbnail((224, 224),
LANCZOS)`` (it never enlarges: 16 images are smaller and keep their size), then JPEG at quality 90
with optimised Huffman tables. Pillow 13.0.0 reproduces every file; Pillow 11.3 and 12.0 resize 3 of
the 2,050 strongly shrunk images a few grey levels differently (their LANCZOS changed): the table is
then checked without the JPEGs' digests (``sources_sha256``), and the difference is said. ``pairs.csv``: one row per entry of ``Descriptions.json``, in its
order; ``split``/``train_half`` from ``uid_list.json``; captions with runs of white space made one
space; written by ``csv.DictWriter`` (``\\r\\n`` line ends).

``vqa.csv`` (questions from VQA-Med 2019, CC BY 4.0, and VQA-RAD, CC0) does not come from this
repository; it ships with the book (``data_manifests/medpix2/vqa.csv``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from medvae_lib import data as mdata

from .downloads import _download

COLUMNS = (
    "image",
    "case_uid",
    "split",
    "train_half",
    "scan_type",
    "modality",
    "plane",
    "location",
    "location_category",
    "sex",
    "age",
    "acr_codes",
    "caption",
    "orig_width",
    "orig_height",
    "orig_png_sha256",
    "jpg_sha256",
)
LONG_SIDE = 224
JPEG_QUALITY = 90
CONVERTED_WITH = "13.0.0"  # the Pillow that made the shared copy (and reproduces it)


def png_to_jpeg(png: bytes) -> tuple[bytes, tuple[int, int]]:
    """One MedPix PNG as the shared copy's JPEG (see the module's docstring), and the PNG's size."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        size = im.size
        grey = im.convert("L")
    grey.thumbnail((LONG_SIDE, LONG_SIDE), Image.LANCZOS)
    out = io.BytesIO()
    grey.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue(), size


def pair_rows(descriptions: list[dict], uid_list: dict) -> list[dict]:
    """The text columns of ``pairs.csv``, one row per description, in the file's order."""
    split = {u: s for s in ("train", "dev", "test") for u in uid_list[s]}
    half = {u: s for s in ("train_1", "train_2") for u in uid_list[s]}
    rows = []
    for entry in descriptions:
        text = entry["Description"]
        uid = entry["U_id"]
        if uid not in split:
            raise mdata.ManifestError(
                f"MedPix case {uid} ({entry['image']}) is in no split of uid_list.json"
            )
        rows.append(
            {
                "image": entry["image"] + ".jpg",
                "case_uid": uid,
                "split": split[uid],
                "train_half": half.get(uid, ""),
                "scan_type": entry["Type"],
                "modality": text["Modality"] or "",
                "plane": text["Plane"] or "",
                "location": entry["Location"] or "",
                "location_category": entry["Location Category"] or "",
                "sex": text["Sex"] or "",
                "age": text["Age"] or "",
                "acr_codes": text["ACR Codes"] or "",
                "caption": re.sub(r"\s+", " ", text["Caption"] or "").strip(),
            }
        )
    return rows


def image_url(manifest: mdata.Manifest, image: str) -> str:
    """The PNG of ``image`` (``MPX1009_synpic46283``) at the commit the manifest's
    ``Descriptions.json`` comes from."""
    base = manifest.file("descriptions").url
    if not base or not base.endswith("/Descriptions.json"):
        raise mdata.ManifestError(
            f"{manifest.path}: file 'descriptions' needs the url of Descriptions.json"
        )
    return f"{base.removesuffix('/Descriptions.json')}/images/{image}.png"


def _sources_digest(text: str) -> str:
    """sha256 of a pairs table (as text) less its ``jpg_sha256`` column, written as the table is."""
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    columns = [c for c in COLUMNS if c != "jpg_sha256"]
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return hashlib.sha256(out.getvalue().encode("utf-8")).hexdigest()


def verify_table(path: Path, manifest: mdata.Manifest) -> bool:
    """Check a (rebuilt) ``pairs.csv``: True if it is the shared copy byte for byte, False if only
    its sources match (images converted by another Pillow); raise ChecksumError otherwise."""
    entry = manifest.file("pairs")
    if mdata.file_digest(path) == entry.sha256:
        return True
    if entry.sources_sha256 and (
        _sources_digest(path.read_text(encoding="utf-8")) == entry.sources_sha256
    ):
        return False
    raise mdata.ChecksumError(
        f"{path}: MedPix 2.0 rebuilt from {manifest.source} differs from the copy the manifest "
        f"describes in its text, its PNGs' sizes or their sha256 (not only in the JPEGs); the "
        f"repository's files at the pinned commit are not what they were"
    )


def build_medpix2(
    folder: str | Path,
    manifest: str | mdata.Manifest = "medpix2",
    workers: int = 8,
    retries: int = 3,
) -> Path:
    """Download MedPix 2.0's PNGs and tables from the pinned commit and write ``pairs.csv`` and
    ``images_224/`` into ``folder``; return ``pairs.csv`` once it is verified (:func:`verify_table`).

    Every source byte is checked: the two tables against the manifest's sha256, and the PNGs' sizes
    and sha256s (with every caption and split) through ``sources_sha256``. The JPEGs are the shared
    copy's byte for byte with Pillow 13.0.0 (then the whole table equals the manifest's sha256);
    another Pillow may resize a few of them a few grey levels differently, which is said, and their
    own digests are recorded in the table, against which :func:`load_medpix2` checks them later.
    A ``pairs.csv`` already there is verified and returned (nothing is downloaded again).
    Raises :class:`~medvae_lib.data.ChecksumError` when a source differs (no ``pairs.csv`` is
    written; converted images may stay in ``images_224/``), :class:`~medvae_lib.data.NetworkError`
    when a file cannot be had (the other downloads are cancelled). Honours ``MEDVAE_MIRROR``."""
    if not isinstance(manifest, mdata.Manifest):
        manifest = mdata.load_manifest(manifest)
    folder = Path(folder)
    target = folder / manifest.file("pairs").filename
    if target.is_file():
        verify_table(target, manifest)
        return target
    descriptions = json.loads(
        mdata.fetch(manifest, "descriptions", cache_dir=folder).read_text()
    )
    uid_list = json.loads(
        mdata.fetch(manifest, "uid_list", cache_dir=folder).read_text()
    )
    rows = pair_rows(descriptions, uid_list)
    images = folder / "images_224"
    images.mkdir(parents=True, exist_ok=True)

    def one(row: dict) -> dict:
        stem = row["image"].removesuffix(".jpg")
        png = _download(image_url(manifest, stem), None, retries, f"MedPix 2.0 {stem}")
        jpeg, (width, height) = png_to_jpeg(png)
        path = images / row["image"]
        part = mdata.temp_file_beside(path)
        try:
            part.write_bytes(jpeg)
            part.replace(path)
        finally:
            part.unlink(missing_ok=True)
        return {
            **row,
            "orig_width": width,
            "orig_height": height,
            "orig_png_sha256": hashlib.sha256(png).hexdigest(),
            "jpg_sha256": hashlib.sha256(jpeg).hexdigest(),
        }

    print(
        f"MedPix 2.0: downloading {len(rows)} PNGs (all 2,050: about 320 MB) from "
        f"{image_url(manifest, '...').rsplit('/images/', 1)[0]} and converting them"
    )
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        rows = list(pool.map(one, rows))
    finally:  # on an error, do not wait for the downloads not yet started
        pool.shutdown(cancel_futures=True)
    part = mdata.temp_file_beside(target)
    try:
        with open(part, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        if not verify_table(part, manifest):
            import PIL

            print(
                "MedPix 2.0: every source file matches, but some JPEGs differ from the shared "
                f"copy's (converted here by Pillow {PIL.__version__}, the copy by "
                f"{CONVERTED_WITH}): expect a few of the 2,050 to differ by a few grey levels; "
                "their own sha256s are recorded and checked from now on"
            )
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target
