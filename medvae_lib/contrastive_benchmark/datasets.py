"""The data: MedPix 2.0 pairs (verified, masked, resized, split by case), the MedMNIST
sets of the external tasks, and the public pair sets (PMC-OA, ROCO) that full mode adds
to the training pairs."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medvae_lib import data as mdata
from medvae_lib.image_text_data import build_medpix2

from .settings import EXTERNAL_TASKS, BenchmarkError


@dataclass
class MedPixData:
    """MedPix 2.0 pairs, preprocessed once: images (N, 1, S, S) in [0, 1], captions, labels, splits."""

    table: pd.DataFrame
    images: torch.Tensor
    vqa: pd.DataFrame
    digest: str  # sha256 of the verified pairs.csv: the data identity
    dropped: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # rows left out, with the reason

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.table["split"].to_numpy() == split)


def mask_burned_in_text(image: np.ndarray, fraction: float = 0.08) -> np.ndarray:
    """Zero the top and bottom ``fraction`` of the rows, where MedPix burns in its
    "MedPix®" watermark (top right) and the uploader, source and date (bottom line), so
    no method can learn them."""
    if not 0 <= fraction < 0.5:
        raise BenchmarkError(f"mask fraction must be in [0, 0.5), got {fraction}")
    out = np.array(image, copy=True)
    n = int(math.ceil(fraction * out.shape[0]))
    if n:
        out[:n] = 0
        out[out.shape[0] - n :] = 0
    return out


def square_resize(image: np.ndarray, size: int) -> torch.Tensor:
    """Pad a 2D uint8 image with zeros to a centred square, then resize (area) to ``size`` x ``size``."""
    h, w = image.shape
    side = max(h, w)
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = image / 255.0
    x = torch.from_numpy(canvas)[None, None]
    return F.interpolate(x, size=(size, size), mode="area")[0]


# MedPix's template text where an uploader left the caption unwritten (21 rows of pairs.csv)
PLACEHOLDER_CAPTION = re.compile(r"^\s*replace this\b", re.IGNORECASE)


def normalise_case_uid(uids: pd.Series) -> pd.Series:
    """Case ids as the leak check compares them: Unicode-normalised (NFKC), stripped, upper-case, so that
    ``"mpx1009 "`` and ``"MPX1009"`` are one case."""
    return uids.astype(str).map(
        lambda u: unicodedata.normalize("NFKC", u).strip().upper()
    )


def check_case_split(table: pd.DataFrame) -> None:
    """Raise if any case (``case_uid``, normalised) has images in more than one split, or if one image
    (the same ``jpg_sha256``, where the table has it) lies in two splits: images of one patient case
    share anatomy and often a caption, so a case split across train and test would leak."""
    per_case = (
        table.assign(case=normalise_case_uid(table["case_uid"]))
        .groupby("case")["split"]
        .nunique()
    )
    leaky = per_case[per_case > 1]
    if len(leaky):
        raise BenchmarkError(
            f"{len(leaky)} case(s) appear in more than one split, e.g. {list(leaky.index[:3])}"
        )
    if "jpg_sha256" in table:
        per_image = table.groupby("jpg_sha256")["split"].nunique()
        shared = per_image[per_image > 1]
        if len(shared):
            names = table.loc[table["jpg_sha256"].isin(shared.index), "image"].tolist()
            raise BenchmarkError(
                f"{len(shared)} identical image(s) (same sha256) lie in more than one split, e.g. {names[:4]}"
            )


def confined_path(folder: Path, name: str) -> Path:
    """``folder / name`` for a file name read from a data table, refused (:class:`BenchmarkError`) if it
    is absolute or leads outside ``folder`` (``..``, a link out of it), as the manifests refuse it."""
    relative = Path(str(name))
    if relative.is_absolute() or ".." in relative.parts or not str(name).strip():
        raise BenchmarkError(
            f"image path {name!r} in the pairs table leaves the set's folder {folder}"
        )
    path = folder / relative
    if not path.resolve().is_relative_to(folder.resolve()):
        raise BenchmarkError(
            f"image path {name!r} in the pairs table leads outside {folder}"
        )
    return path


def medpix2_folder(manifest: str | mdata.Manifest = "medpix2") -> Path:
    """The folder that holds MedPix 2.0's ``pairs.csv`` and ``images_224/``: the shared copy where
    it lies beside the repository, else the download cache that :func:`load_medpix2` rebuilds it in
    (Colab)."""
    if not isinstance(manifest, mdata.Manifest):
        manifest = mdata.load_manifest(manifest)
    pairs = manifest.file("pairs")
    if pairs.local is not None and pairs.local.is_file():
        return pairs.local.parent
    return mdata.default_cache(manifest)


def load_medpix2(
    size: int,
    mask_fraction: float = 0.08,
    manifest: str | mdata.Manifest = "medpix2",
    image_dir: str | Path | None = None,
) -> MedPixData:
    """Verify (sha256) and load MedPix 2.0: pairs.csv and vqa.csv through the manifest, then every image
    against the sha256 that pairs.csv records for it; mask the burned-in text and resize. Where the
    shared copy is absent (Colab), pairs.csv and the images are first rebuilt from the public
    repository (:func:`medvae_lib.image_text_data.build_medpix2`, about 320 MB of PNGs, once).

    The authors' ``dev`` split is renamed ``val``. Rows whose caption is MedPix's placeholder ("Replace
    this - DESCRIPTION OF THE IMAGE OR FINDINGS.") are dropped with their VQA questions and listed in
    ``dropped``. Raises :class:`BenchmarkError` for a missing image, an image path outside the image
    folder, an empty caption or a case (or an identical image) found in two splits, and
    ``ChecksumError`` for a changed file."""
    if not isinstance(manifest, mdata.Manifest):
        manifest = mdata.load_manifest(manifest)
    folder = medpix2_folder(manifest)
    if manifest.file("pairs").local == folder / manifest.file("pairs").filename:
        pairs_path = mdata.fetch(manifest, "pairs")
    else:  # no ../shared (Colab): rebuilt from the public repository, same sha256
        pairs_path = build_medpix2(folder, manifest)
    vqa_path = mdata.fetch(manifest, "vqa")
    table = pd.read_csv(pairs_path, dtype={"case_uid": str})
    table["split"] = table["split"].replace({"dev": "val"})
    bad_split = sorted(set(table["split"]) - set(mdata.SPLITS))
    if bad_split:
        raise BenchmarkError(f"{pairs_path}: unknown split name(s) {bad_split}")
    captions = table["caption"].fillna("").astype(str).str.strip()
    empty = table.loc[captions == "", "image"].tolist()
    if empty:
        raise BenchmarkError(
            f"{len(empty)} image(s) have an empty caption, e.g. {empty[:3]}"
        )
    table["caption"] = captions
    check_case_split(table)
    placeholder = captions.str.contains(PLACEHOLDER_CAPTION).to_numpy()
    dropped = table.loc[placeholder, ["image", "case_uid", "split"]].assign(
        reason="placeholder caption"
    )
    table = table.loc[~placeholder].reset_index(drop=True)
    image_dir = (
        Path(image_dir) if image_dir is not None else pairs_path.parent / "images_224"
    )
    from PIL import Image

    images = []
    for name, digest in zip(table["image"], table["jpg_sha256"], strict=True):
        path = confined_path(image_dir, name)
        if not path.is_file():
            raise BenchmarkError(
                f"image {name!r} listed in pairs.csv is missing from {image_dir}"
            )
        actual = mdata.file_digest(path)
        if actual != digest:
            raise mdata.ChecksumError(
                f"{path}: sha256 is {actual}, but pairs.csv records {digest}"
            )
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L"))
        images.append(square_resize(mask_burned_in_text(pixels, mask_fraction), size))
    vqa = pd.read_csv(vqa_path)
    vqa["medpix2_split"] = vqa["medpix2_split"].replace({"dev": "val"})
    on_dropped = vqa["image"].isin(set(dropped["image"])).to_numpy()
    dropped["vqa_questions"] = (
        dropped["image"]
        .map(vqa.loc[on_dropped, "image"].value_counts())
        .fillna(0)
        .astype(int)
    )
    vqa = vqa.loc[~on_dropped].reset_index(drop=True)
    index = {name: i for i, name in enumerate(table["image"])}
    missing = sorted(set(vqa["image"]) - set(index))
    if missing:
        raise BenchmarkError(
            f"vqa.csv names {len(missing)} image(s) not in pairs.csv, e.g. {missing[:3]}"
        )
    vqa["row"] = vqa["image"].map(index)
    wrong = (
        vqa["medpix2_split"].to_numpy()
        != table["split"].to_numpy()[vqa["row"].to_numpy()]
    )
    if wrong.any():
        raise BenchmarkError(
            f"{int(wrong.sum())} VQA row(s) carry a split different from their image's case split"
        )
    digest = mdata.file_digest(pairs_path)
    return MedPixData(
        table=table, images=torch.stack(images), vqa=vqa, digest=digest, dropped=dropped
    )


def load_external(task: str, size: int, n_train: int | None, seed: int = 0) -> dict:
    """A MedMNIST task of :data:`EXTERNAL_TASKS` (verified through its manifest): the training split, or a
    class-balanced subset of ``n_train`` of it, for the linear probe, and the whole test split; resized
    to ``size``. Returns ``{"train": (images, labels), "test": (images, labels)}``."""
    if task not in EXTERNAL_TASKS:
        raise BenchmarkError(
            f"unknown external task {task!r}; known: {list(EXTERNAL_TASKS)}"
        )
    spec = EXTERNAL_TASKS[task]
    splits = mdata.load_dataset(spec.manifest, spec.key)
    train = splits["train"]
    if n_train is not None:
        train = mdata.balanced_subset(train, min(n_train, len(train.labels)), seed=seed)

    def prep(split):
        x = torch.from_numpy(split.images).float()[:, None] / 255.0
        return F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False
        ), split.labels

    return {"train": prep(train), "test": prep(splits["test"])}


def load_pair_table(name: str, root: str | Path, split: str = "train") -> pd.DataFrame:
    """The image-caption table (``image_path``, ``caption``) of a downloaded public set in mmlearn's
    layout: ``"pmc_oa"`` or ``"roco"`` (radiology group), read by :mod:`medvae_lib.image_text_data`."""
    from medvae_lib import image_text_data as itd

    if name == "pmc_oa":
        return itd.load_pmc_oa(root, {"val": "valid"}.get(split, split))
    if name == "roco":
        return itd.load_roco(root, {"val": "validation"}.get(split, split), "radiology")
    raise BenchmarkError(f"unknown pair set {name!r}; known: ['pmc_oa', 'roco']")


def download_pair_set(name: str, root: str | Path, settings: Mapping) -> Path:
    """Download (full mode, on Colab) one of the paper's public sets into ``root`` with
    :mod:`medvae_lib.image_text_data`: PMC-OA from the Hugging Face hub (the
    ``extra_max_pairs`` that training uses, their images read from the archive by range
    requests; the whole archive, tens of GB, when that is None), ROCO's training
    radiology images from the PMC open-access packages, as its ``fetch.py`` does
    (``roco_limit`` images)."""
    from medvae_lib import image_text_data as itd

    if name == "pmc_oa":
        n = settings.get("extra_max_pairs")
        if n is None:
            return itd.download_pmc_oa(root, splits=("train",))
        return itd.sample_pmc_oa(root, n)  # the pairs pair_images would draw
    if name == "roco":
        return itd.download_roco(
            root,
            "train",
            "radiology",
            limit=settings.get("roco_limit"),
            skip_missing=True,
        )
    raise BenchmarkError(f"unknown pair set {name!r}; known: ['pmc_oa', 'roco']")


def pair_images(
    table: pd.DataFrame, size: int, max_pairs: int | None = None, seed: int = 0
):
    """Up to ``max_pairs`` rows of a pair table (drawn with ``seed``), their images read as grey-scale,
    padded to a square and resized to ``size`` (float16, (N, 1, S, S) in [0, 1]), and their captions.
    These sets carry no MedPix watermark, so nothing is masked. A missing image or an empty caption is
    an error (:func:`load_pair_table` checks both), never a silent drop."""
    from PIL import Image

    if max_pairs is not None and len(table) > max_pairs:
        table = table.iloc[
            np.sort(
                np.random.default_rng(seed).choice(len(table), max_pairs, replace=False)
            )
        ]
    images = []
    for path in table[
        "image_path"
    ]:  # load_pair_table has checked that every image is there
        with Image.open(path) as im:
            images.append(
                square_resize(np.asarray(im.convert("L")), size).to(torch.float16)
            )
    return torch.stack(images), [str(c) for c in table["caption"]]
