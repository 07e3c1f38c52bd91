"""Chapter 7: a personalised invariant representation X_h learned from co-registered brain MRI contrasts
(Tan et al., ICCV 2025, "PUIR"; code: github.com/zhaorui-tan/PUIR_ICCV25).

Every contrast of one person (T1, T1 with contrast, T2, FLAIR) is treated as a view of one representation
X_h. A network gets *one* contrast and reconstructs *all four*; its bottleneck features, fused with a
learnable prior they attend to, are X_h. Training adds, per the released code:

* a foreground-weighted MSE reconstruction of all contrasts (:func:`reconstruction_loss`);
* an individual-level constraint: the X_h of each contrast of a person is pulled towards a running mean
  of the X_h of that person's contrasts seen before it (:func:`consistency_loss`);
* a learnable biological prior, an ``nn.Parameter`` the bottleneck features attend to (:class:`PriorFusion`);
* rotation prediction and contrastive self-supervision on X_h (:func:`ssl_losses`).

CI mode works on 2D axial slices (4 mm pixels, 48 x 48) with a small MONAI ``BasicUNet``; full mode on 3D
96^3 patches with MONAI's ``SwinUNETR`` at the paper's size. Scores are MONAI PSNR and SSIM computed on the
brain mask only (:func:`masked_psnr`, :func:`masked_ssim`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai import transforms as mt
from torch import nn

from .data import Manifest, fetch, load_manifest
from .training import CheckpointedTrainer, seed_everything

CONTRASTS = ("t1", "t1c", "t2", "flair")
# The four models of the ablation, each adding one part to the one before it.
# ``skips``: whether the decoder gets the encoder's skip connections; absent: the mode's ``skips``
# setting. "unet" is the released decoder (all skips) with the baseline's losses, kept for comparison.
VARIANTS = {
    "baseline": {"consistency": False, "prior": False, "ssl": False},
    "consistency": {"consistency": True, "prior": False, "ssl": False},
    "prior": {"consistency": True, "prior": True, "ssl": False},
    "full": {"consistency": True, "prior": True, "ssl": True},
    "unet": {"consistency": False, "prior": False, "ssl": False, "skips": True},
}
VARIANT_LABELS = {
    "baseline": "baseline (reconstruction)",
    "consistency": "+ individual constraint",
    "prior": "+ learnable prior",
    "full": "full (+ rotation, contrastive)",
    "unet": "baseline, U-Net skips (released)",
}
# BraTS 2023 file suffixes of the four contrasts (full mode reads a BraTS folder).
BRATS_SUFFIXES = {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f"}

MODES = {
    "ci": {
        "manifest": "brain_mri",
        "spatial_dims": 2,
        "backbone": "basicunet",
        "features": (8, 8, 16, 32, 64, 8),
        "feature_size": 12,
        "image_size": 48,  # 2D: slices of 192 x 192 mm pooled by 4 to 48 x 48 (4 mm pixels)
        "crop_mm": 192,
        "pool": 4,
        "slice_step": 4,  # every fourth axial slice (4 mm apart)
        "min_brain_fraction": 0.35,  # keep slices whose brain area is >= 35% of the subject's largest
        "window": (
            -3.0,
            5.0,
        ),  # z-scores (on the brain) mapped linearly to [0, 1], clipped
        "test_subjects": ("TCGA-FG-6692",),
        "folds": "leave_one_out",  # every person is the test person once
        "val_fraction": 0.2,
        "val_gap": 2,
        "skips": False,  # decoder without skip connections: it sees the image only through X_h
        "steps": 40,
        "batch_size": 4,
        "lr": 3e-3,
        "weight_decay": 1e-5,
        "fg_weight": 10.0,
        "consistency_weight": 1.0,
        "ssl_weight": 1.0,
        "prior_heads": 3,
        "contrastive_dim": 128,
        "temperature": 0.1,
        "ssim_kernel": 7,
        "seeds": (0, 1, 2),
        "variants": tuple(VARIANTS),
        "brats_folder": "",
        "n_train_subjects": 0,
        "n_test_subjects": 0,
        "volume_size": (),
        "threads": 1,  # torch threads per process: one is as fast as two for these small convolutions
        "workers": 2,  # processes training (fold, variant) jobs side by side: the 2 cores of CI
    },
    "full": {
        "manifest": "brain_mri",
        "spatial_dims": 3,
        "backbone": "swinunetr",
        "features": (32, 32, 64, 128, 256, 32),
        "feature_size": 48,
        "image_size": 96,  # 3D: random 96^3 patches at 1 mm, as the released training script
        "crop_mm": 0,
        "pool": 1,
        "slice_step": 1,
        "min_brain_fraction": 0.0,
        "window": (-3.0, 5.0),
        "test_subjects": (),  # empty: hold out test_fraction of the BraTS patients
        "folds": "holdout",  # one split: test_fraction of the patients
        "skips": False,
        "test_fraction": 0.2,
        "val_fraction": 0.1,
        "val_gap": 0,
        "steps": 5000,
        "batch_size": 2,
        "lr": 2e-4,
        "weight_decay": 1e-5,
        "fg_weight": 10.0,
        "consistency_weight": 1.0,
        "ssl_weight": 1.0,
        "prior_heads": 3,
        "contrastive_dim": 512,
        "temperature": 0.1,
        "ssim_kernel": 11,
        "seeds": (0, 1, 2),
        "variants": tuple(VARIANTS),
        "brats_folder": "",  # a folder of BraTS 2023 GLI subjects (see download_brats); "" = the local files
        "n_train_subjects": 80,  # training people held in memory (cropped to volume_size, float16): RAM, not the method, sets this
        "n_test_subjects": 40,  # test people scored (sliding-window synthesis of 16 pairs each)
        "volume_size": (
            160,
            192,
            160,
        ),  # every brain cropped / padded to this box (BraTS brains fit)
        "threads": 0,  # 0: leave torch's default
        "workers": 1,
    },
}


# --------------------------------------------------------------------------------------------------- data
def manifest_subjects(
    manifest: Manifest | str = "brain_mri",
) -> dict[str, dict[str, Path]]:
    """The subjects a manifest describes, each with a verified path per contrast (sha256 checked by
    :func:`medvae_lib.data.fetch` before anything is read)."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    subjects: dict[str, dict[str, Path]] = {}
    for key in manifest.files:
        subject, _, contrast = key.rpartition("/")
        if contrast in CONTRASTS:
            subjects.setdefault(subject, {})[contrast] = fetch(manifest, key)
    incomplete = {
        s: sorted(set(CONTRASTS) - set(c))
        for s, c in subjects.items()
        if set(c) != set(CONTRASTS)
    }
    if incomplete:
        raise ValueError(
            f"manifest {manifest.name!r}: subjects without all four contrasts: {incomplete}"
        )
    return dict(sorted(subjects.items()))


def brats_subjects(folder: str | Path) -> dict[str, dict[str, Path]]:
    """The subjects of a BraTS 2023 folder (``<folder>/BraTS-GLI-xxxxx-xxx/BraTS-GLI-xxxxx-xxx-t1n.nii.gz``
    and its t1c, t2w, t2f siblings), as the challenge distributes them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no BraTS folder at {folder}")
    subjects = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        paths = {
            c: sub / f"{sub.name}-{suffix}.nii.gz"
            for c, suffix in BRATS_SUFFIXES.items()
        }
        missing = [p.name for p in paths.values() if not p.is_file()]
        if missing and len(missing) < 4:
            raise FileNotFoundError(f"BraTS subject {sub.name} lacks {missing}")
        if not missing:
            subjects[sub.name] = paths
    if not subjects:
        raise FileNotFoundError(
            f"{folder} holds no BraTS subject folders with -t1n/-t1c/-t2w/-t2f .nii.gz files"
        )
    return subjects


def download_brats(
    synapse_id: str, destination: str | Path, auth_token: str | None = None
) -> Path:
    """Download and unpack BraTS 2023 data from Synapse, the challenge's official source.

    The data are released to registered participants who accept the data terms on
    https://www.synapse.org/brats2023; the reader passes the Synapse id of the zip their account may
    read (shown on that page) and a personal access token (or sets ``SYNAPSE_AUTH_TOKEN``).
    ``synapseclient`` (not in this book's requirements: ``pip install synapseclient``) checks each file's
    MD5 against Synapse's record while downloading. Returns the folder to pass to :func:`brats_subjects`.
    """
    if not re.fullmatch(r"syn\d+", str(synapse_id)):
        raise ValueError(f"a Synapse id looks like 'syn12345678', got {synapse_id!r}")
    try:
        import synapseclient
    except ImportError:
        raise ImportError(
            "download_brats needs synapseclient: pip install synapseclient"
        ) from None
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    syn = synapseclient.Synapse()
    syn.login(authToken=auth_token) if auth_token else syn.login()
    entity = syn.get(synapse_id, downloadLocation=str(destination))
    return unpack_brats(entity.path, destination)


def unpack_brats(archive: str | Path, destination: str | Path) -> Path:
    """Unpack a BraTS zip into ``destination`` and return the folder that holds the subject folders."""
    import zipfile

    archive, destination = Path(archive), Path(destination)
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if (
                    not (destination / name)
                    .resolve()
                    .is_relative_to(destination.resolve())
                ):
                    raise ValueError(
                        f"{archive} holds a path outside the destination: {name!r}"
                    )
            z.extractall(destination)
    roots = sorted({p.parent.parent for p in destination.rglob("*-t1n.nii.gz")})
    if not roots:
        raise FileNotFoundError(f"no BraTS subject folders under {destination}")
    return roots[0]


GRID_TOLERANCE_MM = (
    0.01  # affines of one person's contrasts may differ by this much (header rounding)
)


def load_subject(paths: dict[str, str | Path]) -> torch.Tensor:
    """The four contrasts of one person as one (4, X, Y, Z) float tensor, read with MONAI ``LoadImaged``
    and reoriented to RAS. A contrast on another grid (another shape, or an affine whose voxel size,
    direction or origin differs by more than ``GRID_TOLERANCE_MM``) is refused: X_h is learned voxel by
    voxel. So is a file that is not one readable 3D volume, or holds NaN or infinite voxels; every error
    names the file."""
    missing = [c for c in CONTRASTS if c not in paths]
    if missing:
        raise ValueError(f"missing contrast(s) {missing}; need {list(CONTRASTS)}")
    load = mt.Compose(
        [
            mt.LoadImaged(keys=["image"], image_only=True),
            mt.EnsureChannelFirstd(keys=["image"]),
            mt.Orientationd(
                keys=["image"],
                axcodes="RAS",
                labels=(("L", "R"), ("P", "A"), ("I", "S")),
            ),
        ]
    )
    data = {}
    for c in CONTRASTS:
        path = Path(paths[c])
        if not path.is_file():
            raise FileNotFoundError(f"no {c} volume at {path}")
        try:
            data[c] = load({"image": str(path)})["image"]
        except (
            Exception
        ) as err:  # MONAI, nibabel and gzip raise many kinds; the cause is kept
            raise ValueError(
                f"{c} volume {path} is not a readable NIfTI file (corrupt, truncated or another format): "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            ) from err
        if data[c].ndim != 4 or data[c].shape[0] != 1:
            raise ValueError(
                f"{c} volume {path} holds an array of shape {tuple(data[c].shape[1:])} after its channel "
                "axis; one 3D volume per file is expected"
            )
        bad = int((~torch.isfinite(torch.as_tensor(data[c]))).sum())
        if bad:
            raise ValueError(
                f"{c} volume {path} has {bad} NaN or infinite voxel(s); repair or replace the file"
            )
    shapes = {c: tuple(data[c].shape[1:]) for c in CONTRASTS}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"the contrasts of one subject must share one grid; got shapes {shapes} ({paths[CONTRASTS[0]]})"
        )
    first = CONTRASTS[0]
    reference = np.asarray(data[first].affine, dtype=np.float64)
    for c in CONTRASTS[1:]:
        affine = np.asarray(data[c].affine, dtype=np.float64)
        if not np.allclose(affine, reference, rtol=0.0, atol=GRID_TOLERANCE_MM):
            voxel = np.linalg.norm(affine[:3, :3], axis=0).round(3).tolist()
            voxel_ref = np.linalg.norm(reference[:3, :3], axis=0).round(3).tolist()
            shift = float(np.linalg.norm(affine[:3, 3] - reference[:3, 3]))
            raise ValueError(
                f"the contrasts of one subject must share one grid, but {c} ({paths[c]}) is not on the grid "
                f"of {first} ({paths[first]}): voxel sizes {voxel} vs {voxel_ref} mm, origins {shift:.2f} mm "
                "apart (or other directions); resample it onto the grid of the others (co-register)"
            )
    return torch.cat(
        [
            torch.as_tensor(
                data[c].as_tensor() if hasattr(data[c], "as_tensor") else data[c]
            )
            for c in CONTRASTS
        ]
    ).float()


def normalise(
    volume: torch.Tensor, window: tuple[float, float] = (-3.0, 5.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-score each contrast on the brain mask (voxels > 0 in every contrast: the images are skull-stripped),
    then map z in ``window`` linearly to [0, 1] (clipped) and set the background to 0.

    Returns ``(images, mask)``: (4, ...) in [0, 1] and a (1, ...) float mask."""
    if volume.ndim < 3 or volume.shape[0] != len(CONTRASTS):
        raise ValueError(
            f"expected ({len(CONTRASTS)}, ...) contrasts first, got shape {tuple(volume.shape)}"
        )
    mask = (volume > 0).all(0, keepdim=True)
    if mask.sum() < 100:
        raise ValueError(
            f"the brain mask has only {int(mask.sum())} voxels; are the images skull-stripped?"
        )
    lo, hi = window
    out = torch.zeros_like(volume)
    for i in range(len(CONTRASTS)):
        brain = volume[i][mask[0]]
        z = (volume[i] - brain.mean()) / brain.std().clamp_min(1e-6)
        out[i] = ((z - lo) / (hi - lo)).clamp(0, 1) * mask[0]
    return out, mask.float()


def clipped_fraction(images: torch.Tensor, mask: torch.Tensor) -> float:
    """The share of brain voxels the intensity window clipped (at 0 or 1)."""
    inside = images[:, mask[0] > 0]
    return float(((inside <= 0) | (inside >= 1)).float().mean())


def axial_slices(
    images: torch.Tensor, mask: torch.Tensor, s: dict
) -> tuple[torch.Tensor, np.ndarray]:
    """2D samples of one person for CI mode: axial slices every ``slice_step`` mm whose brain area is at
    least ``min_brain_fraction`` of the largest, cropped to ``crop_mm`` around the brain's centre and
    average-pooled by ``pool``. Returns (N, 5, H, W) (four contrasts and the mask) and each slice's index."""
    area = mask[0].sum((0, 1))
    keep = torch.nonzero(area >= s["min_brain_fraction"] * area.max()).flatten()
    index = np.arange(int(keep.min()), int(keep.max()) + 1, s["slice_step"])
    ys, xs = torch.nonzero(mask[0].any(-1), as_tuple=True)
    centre = [
        (int(ys.min()) + int(ys.max())) // 2,
        (int(xs.min()) + int(xs.max())) // 2,
    ]
    half = s["crop_mm"] // 2
    stack = torch.cat([images, mask])[..., index]  # (5, X, Y, n)
    stack = F.pad(stack, (0, 0, half, half, half, half))  # so any centre can be cropped
    stack = stack[:, centre[0] : centre[0] + 2 * half, centre[1] : centre[1] + 2 * half]
    stack = stack.permute(3, 0, 1, 2)  # (n, 5, crop, crop)
    pooled = F.avg_pool2d(stack, s["pool"])
    pooled[:, 4] = (pooled[:, 4] >= 0.5).float()
    pooled[:, :4] *= pooled[:, 4:5]
    return pooled.contiguous(), index


def split_subjects(subjects, test_subjects) -> tuple[list[str], list[str]]:
    """Whole people go to test: (train, test) lists with no person in both."""
    subjects, test = list(subjects), list(test_subjects)
    unknown = sorted(set(test) - set(subjects))
    if unknown:
        raise ValueError(
            f"test subject(s) {unknown} are not among the subjects {subjects}"
        )
    train = [s for s in subjects if s not in test]
    if not train or not test:
        raise ValueError(
            f"need at least one training and one test subject, got train {train}, test {test}"
        )
    return train, test


def split_slices(
    n: int, val_fraction: float, gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validation slices of a training person: the top (most superior) ``val_fraction`` of its ``n``
    slices, with ``gap`` slices left out between them and the training slices (neighbouring slices are
    almost the same image). Returns (train indices, validation indices)."""
    n_val = max(1, round(n * val_fraction))
    if n_val + gap >= n:
        raise ValueError(
            f"{n} slices are too few for {n_val} validation slices and a gap of {gap}"
        )
    return np.arange(0, n - n_val - gap), np.arange(n - n_val, n)


@dataclass
class SubjectData:
    name: str
    samples: (
        torch.Tensor
    )  # (N, 5, *spatial): four contrasts in [0, 1] and the brain mask
    position: np.ndarray  # relative axial position of each sample in [0, 1]
    clipped: float


def patient_of(name: str) -> str:
    """The patient a subject folder belongs to: BraTS names a patient's timepoints or repeat scans
    ``BraTS-GLI-00001-000``, ``BraTS-GLI-00001-001``; both are patient ``BraTS-GLI-00001``. Other
    names are their own patient."""
    found = re.fullmatch(r"(BraTS-[A-Za-z]+-\d+)-\d+", name)
    return found.group(1) if found else name


def by_patient(names) -> dict[str, list[str]]:
    """Subject folders grouped by :func:`patient_of`, patients sorted."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(patient_of(name), []).append(name)
    return dict(sorted(groups.items()))


def _default_subjects(settings: dict) -> dict[str, dict[str, Path]]:
    if settings["brats_folder"]:
        return brats_subjects(settings["brats_folder"])
    return manifest_subjects(settings["manifest"])


def load_person(name: str, paths: dict[str, Path], settings: dict) -> SubjectData:
    """One person, normalised and cut into samples: every 2D slice (CI mode) or the brain-cropped
    volume in one box (full mode), in float32."""
    images, mask = normalise(load_subject(paths), tuple(settings["window"]))
    clipped = clipped_fraction(images, mask)
    if settings["spatial_dims"] == 2:
        samples, index = axial_slices(images, mask, settings)
        return SubjectData(name, samples, index / (images.shape[-1] - 1), clipped)
    box = mt.Compose(
        [
            mt.CropForeground(select_fn=lambda x: x > 0, margin=0),
            mt.ResizeWithPadOrCrop(spatial_size=tuple(settings["volume_size"])),
        ]
    )
    stack = box(torch.cat([images, mask]))
    samples = torch.as_tensor(
        stack.as_tensor() if hasattr(stack, "as_tensor") else stack
    )[None]
    return SubjectData(name, samples, np.array([0.5]), clipped)


def prepare_data(
    settings: dict,
    subjects: dict[str, dict[str, Path]] | None = None,
    cache: dict | None = None,
) -> dict:
    """Load every subject, normalise it and cut it into samples (2D slices in CI mode; in full mode the
    brain-cropped volume, from which training draws random patches). Returns train / val / test
    dictionaries of :class:`SubjectData` and the split. People are split by *patient*
    (:func:`patient_of`): all folders of one patient go to the same part. ``cache`` (a dict, filled
    here) keeps loaded people between calls, so that the folds of :func:`leave_one_out` read each
    person once."""
    if subjects is None:
        subjects = _default_subjects(settings)
    cache = {} if cache is None else cache
    patients = by_patient(subjects)
    test_names = list(settings["test_subjects"])
    if not test_names:
        order = np.random.default_rng(0).permutation(list(patients))
        n_test = max(1, round(len(order) * settings.get("test_fraction", 0.2)))
        test_names = sorted(n for p in order[:n_test] for n in patients[p])
    else:  # a named test subject takes the other folders of its patient with it
        test_names = sorted(
            {n for t in test_names if t in subjects for n in patients[patient_of(t)]}
            | set(test_names)
        )
    train_names, test_names = split_subjects(subjects, test_names)
    if settings["n_train_subjects"]:
        train_names = train_names[: settings["n_train_subjects"]]
    if settings["n_test_subjects"]:
        test_names = test_names[: settings["n_test_subjects"]]
    val_names = []
    train_patients = by_patient(train_names)
    if (
        settings["spatial_dims"] == 3
        and len(train_patients) >= 3
        and settings["val_fraction"] > 0
    ):
        # 3D: whole patients for validation, taken from the training patients
        n_val = max(1, round(len(train_patients) * settings["val_fraction"]))
        val_names = [
            n for p in list(train_patients)[-n_val:] for n in train_patients[p]
        ]
        train_names = [n for n in train_names if n not in val_names]
    out = {
        "train": {},
        "val": {},
        "test": {},
        "split": {"train": train_names, "val": val_names, "test": test_names},
    }
    for name in train_names + val_names + test_names:
        if name not in cache:
            cache[name] = load_person(name, subjects[name], settings)
        person = cache[name]
        if name in test_names:
            out["test"][name] = person
        elif name in val_names:
            out["val"][name] = person
        elif settings["spatial_dims"] == 2:
            tr, va = split_slices(
                len(person.samples), settings["val_fraction"], settings["val_gap"]
            )
            out["train"][name] = SubjectData(
                name, person.samples[tr], person.position[tr], person.clipped
            )
            out["val"][name] = SubjectData(
                name, person.samples[va], person.position[va], person.clipped
            )
        else:
            out["train"][name] = SubjectData(
                name, person.samples.half(), person.position, person.clipped
            )
    return out


def leave_one_out(
    settings: dict, subjects: dict[str, dict[str, Path]] | None = None
) -> list[dict]:
    """The folds of the chapter. ``folds="leave_one_out"``: every patient is the test set once (the
    others train), each person read once; ``"holdout"``: the one split of :func:`prepare_data`."""
    if subjects is None:
        subjects = _default_subjects(settings)
    if settings["folds"] == "holdout":
        return [prepare_data(settings, subjects)]
    if settings["folds"] != "leave_one_out":
        raise ValueError(
            f"folds must be 'leave_one_out' or 'holdout', got {settings['folds']!r}"
        )
    cache: dict = {}
    return [
        prepare_data(dict(settings, test_subjects=tuple(names)), subjects, cache)
        for names in by_patient(subjects).values()
    ]


# --------------------------------------------------------------------------------------------------- model
class PriorFusion(nn.Module):
    """The learnable biological prior and the fusion into X_h, as
    ``SSLHead.refine_semantic`` of the released code: a parameter ``static_prior`` of
    the bottleneck's shape is the key and value of a multi-head attention whose queries
    are the bottleneck features. As in the code, the attention's tokens are the C
    channels and each token is the channel's map over the bottleneck's positions (27
    numbers for 3 x 3 x 3). The attended prior goes through two convolutions and is
    fused with the features by a convolution of [features, attended prior, features]."""

    def __init__(self, channels: int, spatial: tuple[int, ...], heads: int):
        super().__init__()
        n = math.prod(spatial)
        if n % heads:
            raise ValueError(
                f"{heads} attention heads do not divide the {n} bottleneck positions {spatial}"
            )
        conv = nn.Conv2d if len(spatial) == 2 else nn.Conv3d
        self.static_prior = nn.Parameter(torch.randn(1, channels, *spatial))
        self.attn = nn.MultiheadAttention(n, heads, batch_first=True)
        self.transfer = nn.Sequential(
            conv(channels, channels, 3, padding=1),
            conv(channels, channels, 3, padding=1),
        )
        self.fuse = conv(3 * channels, channels, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if tuple(features.shape[1:]) != tuple(self.static_prior.shape[1:]):
            raise ValueError(
                f"bottleneck features {tuple(features.shape[1:])} do not match the prior {tuple(self.static_prior.shape[1:])}"
            )
        prior = self.static_prior.expand(
            len(features), *self.static_prior.shape[1:]
        ).flatten(2)
        attended = self.attn(features.flatten(2), prior, prior, need_weights=False)[
            0
        ].reshape(features.shape)
        attended = self.transfer(attended)
        return self.fuse(torch.cat([features, attended, features], 1))


class PUIRNet(nn.Module):
    """One contrast in (repeated to four channels, as the released code), four contrasts out, X_h at the
    bottleneck. ``backbone`` is MONAI's ``SwinUNETR`` (the paper's) or ``BasicUNet`` (a small U-Net for CPU
    runs); their encoder and decoder blocks are reused, with :class:`PriorFusion` between them when
    ``prior`` is on, and rotation / contrastive heads on X_h when ``ssl`` is on."""

    def __init__(
        self,
        spatial_dims: int = 2,
        image_size: int = 64,
        backbone: str = "basicunet",
        features=(8, 16, 32, 48, 64, 8),
        feature_size: int = 12,
        prior: bool = False,
        ssl: bool = False,
        prior_heads: int = 4,
        contrastive_dim: int = 128,
        skips: bool = True,
    ):
        super().__init__()
        self.skips = skips
        from monai.networks.nets import BasicUNet, SwinUNETR

        n = len(CONTRASTS)
        self.backbone_name = backbone
        if backbone == "basicunet":
            self.net = BasicUNet(
                spatial_dims=spatial_dims,
                in_channels=n,
                out_channels=n,
                features=tuple(features),
            )
            channels, factor = features[4], 16
        elif backbone == "swinunetr":
            self.net = SwinUNETR(
                in_channels=n,
                out_channels=n,
                feature_size=feature_size,
                spatial_dims=spatial_dims,
            )
            channels, factor = 16 * feature_size, 32
        else:
            raise ValueError(
                f"backbone must be 'basicunet' or 'swinunetr', got {backbone!r}"
            )
        if image_size % factor:
            raise ValueError(
                f"{backbone} needs an image size divisible by {factor}, got {image_size}"
            )
        self.spatial = (image_size // factor,) * spatial_dims
        self.channels = channels
        self.prior = PriorFusion(channels, self.spatial, prior_heads) if prior else None
        self.rotation_head = nn.Linear(channels, 4) if ssl else None
        self.contrastive_head = nn.Linear(channels, contrastive_dim) if ssl else None

    def encode(self, x: torch.Tensor):
        """Skip features and the bottleneck features of one input."""
        net = self.net
        if self.backbone_name == "basicunet":
            x0 = net.conv_0(x)
            x1 = net.down_1(x0)
            x2 = net.down_2(x1)
            x3 = net.down_3(x2)
            return (x0, x1, x2, x3), net.down_4(x3)
        hidden = net.swinViT(x, net.normalize)
        skips = (
            net.encoder1(x),
            net.encoder2(hidden[0]),
            net.encoder3(hidden[1]),
            net.encoder4(hidden[2]),
            hidden[3],
        )
        return skips, hidden[4]

    def decode(self, skips, x_h: torch.Tensor) -> torch.Tensor:
        """The four contrasts from X_h and the skip features. Without skip connections
        (``skips=False``) the skips are zeros: the image reaches the decoder only
        through X_h."""
        net = self.net
        if not self.skips:
            skips = tuple(torch.zeros_like(s) for s in skips)
        if self.backbone_name == "basicunet":
            x0, x1, x2, x3 = skips
            u = net.upcat_4(x_h, x3)
            u = net.upcat_3(u, x2)
            u = net.upcat_2(u, x1)
            return net.final_conv(net.upcat_1(u, x0))
        enc0, enc1, enc2, enc3, h3 = skips
        d = net.decoder5(net.encoder10(x_h), h3)
        d = net.decoder4(d, enc3)
        d = net.decoder3(d, enc2)
        d = net.decoder2(d, enc1)
        return net.out(net.decoder1(d, enc0))

    def x_h(self, x: torch.Tensor) -> torch.Tensor:
        """The personalised representation of an input: the bottleneck, fused with the prior if there is one."""
        _, bottleneck = self.encode(x)
        return self.prior(bottleneck) if self.prior is not None else bottleneck

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        skips, bottleneck = self.encode(x)
        x_h = self.prior(bottleneck) if self.prior is not None else bottleneck
        out = {"out": self.decode(skips, x_h), "x_h": x_h}
        if self.rotation_head is not None:
            tokens = x_h.flatten(2).transpose(
                1, 2
            )  # (B, positions, C); as the code: token 0 and token 1
            out["rotation"] = self.rotation_head(tokens[:, 0])
            out["contrastive"] = self.contrastive_head(tokens[:, 1])
        return out


def build_model(settings: dict, variant: str) -> PUIRNet:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {list(VARIANTS)}")
    v = VARIANTS[variant]
    return PUIRNet(
        spatial_dims=settings["spatial_dims"],
        image_size=settings["image_size"],
        backbone=settings["backbone"],
        features=settings["features"],
        feature_size=settings["feature_size"],
        prior=v["prior"],
        ssl=v["ssl"],
        prior_heads=settings["prior_heads"],
        contrastive_dim=settings["contrastive_dim"],
        skips=v.get("skips", settings.get("skips", True)),
    )


# --------------------------------------------------------------------------------------------------- losses
def reconstruction_loss(
    out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, fg_weight: float = 10.0
):
    """The released code's reconstruction of all contrasts: ``fg_weight`` x the squared
    error averaged over foreground (here: brain) voxels, plus the squared error averaged
    over the whole image."""
    mask = mask.expand_as(target)
    squared = (out - target) ** 2
    return fg_weight * (squared * mask).sum() / mask.sum().clamp_min(1) + squared.mean()


def consistency_loss(x_h: torch.Tensor) -> torch.Tensor:
    """The individual-level constraint. ``x_h`` is (K, B, ...): the X_h of K contrasts
    of the same B samples, in the (shuffled) order they are visited. As in the released
    code, the first contrast sets a detached anchor; each next one pays the MSE to the
    anchor, which then becomes the average of itself and that contrast's (detached) X_h.
    Zero when every contrast gives the same X_h."""
    if x_h.ndim < 3 or len(x_h) < 2:
        raise ValueError(
            f"expected (contrasts >= 2, batch, ...) representations, got shape {tuple(x_h.shape)}"
        )
    anchor = x_h[0].detach()
    loss = x_h.new_zeros(())
    for k in range(1, len(x_h)):
        loss = loss + F.mse_loss(x_h[k], anchor)
        anchor = ((anchor + x_h[k]) / 2).detach()
    return loss / (len(x_h) - 1)


def rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each sample of ``x`` by ``k[i]`` quarter turns in the plane of its first two spatial axes."""
    return torch.stack([xi.rot90(int(ki), (1, 2)) for xi, ki in zip(x, k, strict=True)])


def patch_drop(
    x: torch.Tensor, max_drop: float = 0.3, max_block: float = 0.25
) -> torch.Tensor:
    """The released code's ``aug_rand`` in short: random blocks of each sample replaced by noise in [0, 1]
    until up to ``max_drop`` of the image is covered (torch's generator, so a seeded step repeats)."""
    x = x.clone()
    shape = x.shape[2:]
    for i in range(len(x)):
        target = float(torch.rand(())) * max_drop * math.prod(shape)
        covered = 0
        while covered < target:
            lo = [int(torch.randint(0, s - max(1, int(s * 0.05)), ())) for s in shape]
            size = [
                int(
                    torch.randint(max(1, int(s * 0.05)), max(2, int(s * max_block)), ())
                )
                for s in shape
            ]
            sl = tuple(
                slice(a, min(a + b, s)) for a, b, s in zip(lo, size, shape, strict=True)
            )
            x[(i, slice(None), *sl)] = torch.rand_like(x[(i, slice(None), *sl)])
            covered += math.prod(s.stop - s.start for s in sl)
    return x


def contrastive_loss(
    a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """InfoNCE between two views (positives on the diagonal), as the released
    ``contrast_loss`` but on L2-normalised vectors (the code uses raw dot products)."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


# --------------------------------------------------------------------------------------------------- training
@dataclass
class PUIRConfig:
    variant: str = "full"
    steps: int = 120
    batch_size: int = 6
    seed: int = 0
    log_every: int = 20
    lr: float = 3e-3
    weight_decay: float = 1e-5
    fg_weight: float = 10.0
    consistency_weight: float = 1.0
    ssl_weight: float = 1.0
    temperature: float = 0.1
    patch: int = (
        0  # 3D: random cubic patch side; 0 = train on whole samples (2D slices)
    )
    settings: dict = field(default_factory=dict)


def random_patches(batch: torch.Tensor, size: int) -> torch.Tensor:
    """One random cubic patch of side ``size`` per sample (same place in every channel)."""
    out = []
    for sample in batch:
        lo = [int(torch.randint(0, s - size + 1, ())) for s in sample.shape[1:]]
        out.append(sample[(slice(None), *(slice(a, a + size) for a in lo))])
    return torch.stack(out).float()


class PUIRTrainer(CheckpointedTrainer):
    """Trains one variant of the ablation. A step takes B samples, feeds each of the four contrasts
    (in a random order) through the network and adds the variant's losses."""

    name = "puir"

    def __init__(self, config: PUIRConfig, device="cpu"):
        super().__init__(config, device)
        torch.manual_seed(config.seed)
        self.model = build_model(config.settings, config.variant).to(self.device)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.parts = VARIANTS[config.variant]

    def modules(self):
        return {"model": self.model}

    def optimizers(self):
        return {"opt": self.opt}

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        c = self.config
        if c.patch:
            batch = random_patches(batch, c.patch)
        images, mask = (
            batch[:, : len(CONTRASTS)].float(),
            batch[:, len(CONTRASTS) :].float(),
        )
        b, k = len(images), len(CONTRASTS)
        order = torch.randperm(k)
        # contrast-major: rows [j * B:(j + 1) * B] are contrast order[j] of the B
        # samples, repeated to 4 channels
        inputs = (
            images[:, order]
            .transpose(0, 1)
            .reshape(k * b, 1, *images.shape[2:])
            .repeat_interleave(k, 1)
        )
        targets, masks = (
            images.repeat(k, *[1] * (images.ndim - 1)),
            mask.repeat(k, *[1] * (mask.ndim - 1)),
        )
        net = self.net("model")
        logs = {}
        if self.parts["ssl"]:
            turns = torch.randint(0, 4, (k * b,))
            rotated = rotate(inputs, turns)
            out = net(patch_drop(rotated))
            with torch.no_grad():
                second = net(
                    patch_drop(rotate(rotated, torch.randint(0, 4, (k * b,))))
                )["contrastive"]
            prediction = rotate(out["out"], (4 - turns) % 4)
            rot = F.cross_entropy(out["rotation"], turns)
            con = contrastive_loss(out["contrastive"], second, c.temperature)
            ssl = rot + con
            logs.update(rotation=rot.item(), contrastive=con.item())
        else:
            out = net(inputs)
            prediction, ssl = out["out"], 0.0
        rec = reconstruction_loss(prediction, targets, masks, c.fg_weight)
        loss = rec + c.ssl_weight * ssl
        if self.parts["consistency"]:
            cons = consistency_loss(out["x_h"].reshape(k, b, *out["x_h"].shape[1:]))
            loss = loss + c.consistency_weight * cons
            logs["consistency"] = cons.item()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item(), "reconstruction": rec.item(), **logs}


def train_variant(
    settings: dict,
    variant: str,
    seed: int,
    train_samples: torch.Tensor,
    device="cpu",
    verbose: bool = True,
) -> PUIRTrainer:
    """Train one variant with one seed on the training samples (N, 5, ...) and return the trainer
    (``verbose=False``: no progress bar, no summary line)."""
    seed_everything(seed)
    config = PUIRConfig(
        variant=variant,
        steps=settings["steps"],
        batch_size=settings["batch_size"],
        seed=seed,
        lr=settings["lr"],
        weight_decay=settings["weight_decay"],
        fg_weight=settings["fg_weight"],
        consistency_weight=settings["consistency_weight"],
        ssl_weight=settings["ssl_weight"],
        temperature=settings["temperature"],
        patch=settings["image_size"] if settings["spatial_dims"] == 3 else 0,
        settings={
            k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()
        },
    )
    trainer = PUIRTrainer(config, device)
    trainer.fit(train_samples, data={"variant": variant}, verbose=verbose)
    trainer.model.eval()
    return trainer


# --------------------------------------------------------------------------------------------------- evaluation
def masked_psnr(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """PSNR (data range 1) over the brain voxels only, one value per image.

    MONAI's ``PSNRMetric`` averages the squared error over the whole image; with both
    images set to 0 outside the mask, that mean is the brain's mean times (brain voxels
    / all voxels), so the brain's PSNR is MONAI's minus 10 log10(all voxels / brain
    voxels). NaN or infinite inputs are refused."""
    from monai.metrics import PSNRMetric

    for what, t in (("prediction", pred), ("target", target), ("mask", mask)):
        bad = int((~torch.isfinite(t.float())).sum())
        if bad:
            raise ValueError(f"the {what} has {bad} NaN or infinite value(s): no PSNR")
    mask = mask.float()
    whole = PSNRMetric(max_val=1.0, reduction="none")(
        pred * mask, target * mask
    ).reshape(-1)
    share = mask.flatten(1).sum(1) * pred.shape[1] / pred[0].numel()
    if (share <= 0).any():
        raise ValueError(
            "an image has an empty brain mask; its brain PSNR is undefined"
        )
    return whole + 10 * torch.log10(share)


def masked_ssim(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kernel_size: int = 11
) -> torch.Tensor:
    """SSIM averaged over the brain voxels only, one value per image: the SSIM map of
    ``monai.metrics.regression.compute_ssim_and_cs`` (Gaussian window, data range 1)
    averaged where the window's centre lies in the mask."""
    from monai.metrics.regression import compute_ssim_and_cs

    dims = pred.ndim - 2
    ssim_map, _ = compute_ssim_and_cs(
        pred.float(),
        target.float(),
        spatial_dims=dims,
        kernel_size=(kernel_size,) * dims,
        kernel_sigma=(1.5,) * dims,
        data_range=1.0,
        kernel_type="gaussian",
        k1=0.01,
        k2=0.03,
    )
    r = kernel_size // 2
    inner = mask[(slice(None), slice(None), *(slice(r, s - r) for s in mask.shape[2:]))]
    inner = inner.expand_as(ssim_map)
    return (ssim_map * inner).flatten(1).sum(1) / inner.flatten(1).sum(1).clamp_min(1)


@torch.no_grad()
def synthesise(
    model: PUIRNet, samples: torch.Tensor, settings: dict, batch: int = 64
) -> torch.Tensor:
    """For each source contrast, the four contrasts the model synthesises: (4 sources, N, 4 targets, ...).
    3D samples larger than a patch go through MONAI's ``sliding_window_inference`` (Gaussian, overlap 0.5)."""
    from monai.inferers import sliding_window_inference

    model.eval()
    device = next(model.parameters()).device
    images = samples[:, : len(CONTRASTS)].float()

    def predictor(x):
        return model(x.to(device))["out"].cpu()

    out = []
    for j in range(len(CONTRASTS)):
        x = images[:, j : j + 1].repeat_interleave(len(CONTRASTS), 1)
        if settings["spatial_dims"] == 3:
            y = sliding_window_inference(
                x,
                (settings["image_size"],) * 3,
                1,
                predictor,
                overlap=0.5,
                mode="gaussian",
            )
        else:
            y = torch.cat(
                [predictor(x[i : i + batch]) for i in range(0, len(x), batch)]
            )
        out.append(y.clamp(0, 1) * samples[:, len(CONTRASTS) :].float())
    return torch.stack(out)


def synthesis_scores(
    model: PUIRNet, samples: torch.Tensor, settings: dict
) -> dict[str, np.ndarray]:
    """PSNR and SSIM on the brain mask of every source -> target synthesis: arrays (4, 4, N)."""
    pred = synthesise(model, samples, settings)
    target, mask = (
        samples[:, : len(CONTRASTS)].float(),
        samples[:, len(CONTRASTS) :].float(),
    )
    k = len(CONTRASTS)
    psnr, ssim = np.zeros((k, k, len(samples))), np.zeros((k, k, len(samples)))
    for s in range(k):
        for t in range(k):
            psnr[s, t] = masked_psnr(
                pred[s][:, t : t + 1], target[:, t : t + 1], mask
            ).numpy()
            ssim[s, t] = masked_ssim(
                pred[s][:, t : t + 1],
                target[:, t : t + 1],
                mask,
                settings["ssim_kernel"],
            ).numpy()
    return {"psnr": psnr, "ssim": ssim}


def paper_protocol_scores(
    model: PUIRNet, samples: torch.Tensor, settings: dict
) -> dict[str, np.ndarray]:
    """The released evaluation's way, for comparison only: background voxels of the prediction replaced by
    the ground truth, then PSNR and SSIM over the *whole* image (MONAI ``PSNRMetric`` / ``SSIMMetric``).
    Every background voxel then counts as a perfect prediction."""
    from monai.metrics import PSNRMetric, SSIMMetric

    pred = synthesise(
        model, samples, settings
    )  # prediction inside the brain, target (0) outside
    target = samples[:, : len(CONTRASTS)].float()
    k, dims = len(CONTRASTS), settings["spatial_dims"]
    psnr_m = PSNRMetric(max_val=1.0, reduction="none")
    ssim_m = SSIMMetric(
        spatial_dims=dims,
        data_range=1.0,
        win_size=settings["ssim_kernel"],
        reduction="none",
    )
    psnr, ssim = np.zeros((k, k, len(samples))), np.zeros((k, k, len(samples)))
    for s in range(k):
        for t in range(k):
            p, y = pred[s][:, t : t + 1], target[:, t : t + 1]
            psnr[s, t] = psnr_m(p, y).reshape(-1).numpy()
            ssim[s, t] = ssim_m(p, y).reshape(-1).numpy()
    return {"psnr": psnr, "ssim": ssim}


@torch.no_grad()
def synthesise_with_x_h(
    model: PUIRNet, samples: torch.Tensor, replace: str = "none", donors=None
) -> torch.Tensor:
    """Synthesis of every contrast from every source with X_h replaced, the skips kept: the test of
    whether the decoder uses X_h. ``replace``: "none" (the model as it is), "zero" (X_h = 0) or
    "swap" (X_h of ``donors``: samples of the same shape, e.g. other slices or another person; the
    same source contrast). Returns (4 sources, N, 4 targets, ...) like :func:`synthesise` (2D or
    whole-patch 3D samples, no sliding window)."""
    if replace not in ("none", "zero", "swap"):
        raise ValueError(f"replace must be 'none', 'zero' or 'swap', got {replace!r}")
    if replace == "swap" and (donors is None or donors.shape != samples.shape):
        raise ValueError("swap needs donor samples of the same shape as the samples")
    model.eval()
    device = next(model.parameters()).device
    k = len(CONTRASTS)
    out = []
    for j in range(k):
        x = samples[:, j : j + 1].float().repeat_interleave(k, 1).to(device)
        skips, bottleneck = model.encode(x)
        if replace == "swap":
            x_h = model.x_h(
                donors[:, j : j + 1].float().repeat_interleave(k, 1).to(device)
            )
        else:
            x_h = model.prior(bottleneck) if model.prior is not None else bottleneck
            x_h = torch.zeros_like(x_h) if replace == "zero" else x_h
        y = model.decode(skips, x_h).cpu()
        out.append(y.clamp(0, 1) * samples[:, k:].float())
    return torch.stack(out)


def same_height(person: SubjectData, other: SubjectData) -> torch.Tensor:
    """The samples of ``other`` at the relative heights nearest to each sample of ``person``: the
    donors for a swap of X_h between people (:func:`synthesise_with_x_h`)."""
    nearest = np.abs(other.position[None, :] - person.position[:, None]).argmin(1)
    return other.samples[torch.as_tensor(nearest)]


def scores_of(
    pred: torch.Tensor, samples: torch.Tensor, metric: str = "psnr", kernel: int = 7
) -> np.ndarray:
    """PSNR or SSIM on the brain mask of a (4 sources, N, 4 targets, ...) synthesis: (4, 4, N)."""
    target, mask = (
        samples[:, : len(CONTRASTS)].float(),
        samples[:, len(CONTRASTS) :].float(),
    )
    k = len(CONTRASTS)
    out = np.zeros((k, k, len(samples)))
    for s in range(k):
        for t in range(k):
            p, y = pred[s][:, t : t + 1], target[:, t : t + 1]
            out[s, t] = (
                masked_psnr(p, y, mask)
                if metric == "psnr"
                else masked_ssim(p, y, mask, kernel)
            ).numpy()
    return out


@torch.no_grad()
def x_h_dependence(
    model: PUIRNet, samples: torch.Tensor, shift: int | None = None
) -> dict:
    """Per sample, the cross-contrast PSNR (mean of the 12 pairs) of the model as it is
    (``"none"``) and with X_h replaced, the skips kept: by zeros (``"zero"``), and by
    the X_h of the sample ``shift`` places away in the same person, same source contrast
    (``"swap"``; default half the samples, so far in height). A decoder that uses X_h
    loses dB under both; one that synthesises through its skip connections does not."""
    n, k = len(samples), len(CONTRASTS)
    if n < 2:
        raise ValueError("the swap needs at least two samples")
    shift = n // 2 if shift is None else shift
    model.eval()
    device = next(model.parameters()).device
    mask = samples[:, k:].float()
    preds = {"none": [], "zero": [], "swap": []}
    for j in range(k):
        x = samples[:, j : j + 1].float().repeat_interleave(k, 1).to(device)
        skips, bottleneck = model.encode(x)
        x_h = model.prior(bottleneck) if model.prior is not None else bottleneck
        other = x_h.roll(shift, 0)  # X_h of the sample `shift` places away
        for name, z in (
            ("none", x_h),
            ("zero", torch.zeros_like(x_h)),
            ("swap", other),
        ):
            preds[name].append(model.decode(skips, z).cpu().clamp(0, 1) * mask)
    return {
        r: off_diagonal_mean(scores_of(torch.stack(p), samples))
        for r, p in preds.items()
    }


def off_diagonal_mean(scores: np.ndarray) -> np.ndarray:
    """Per sample, the mean over the 12 cross-contrast pairs (source != target) of a (4, 4, N) array."""
    k = scores.shape[0]
    off = ~np.eye(k, dtype=bool)
    return scores[off].mean(0)


@torch.no_grad()
def embeddings(
    model: PUIRNet, subjects: dict[str, SubjectData], settings: dict
) -> dict[str, np.ndarray]:
    """X_h of every sample of every subject from each contrast, flattened: arrays (4, N, D) by subject.
    3D samples are represented by their central patch."""
    model.eval()
    out = {}
    for name, data in subjects.items():
        images = data.samples[:, : len(CONTRASTS)].float()
        if settings["spatial_dims"] == 3:
            size = settings["image_size"]
            lo = [(s - size) // 2 for s in images.shape[2:]]
            images = images[
                (slice(None), slice(None), *(slice(a, a + size) for a in lo))
            ]
        rows = []
        for j in range(len(CONTRASTS)):
            x = images[:, j : j + 1].repeat_interleave(len(CONTRASTS), 1)
            rows.append(
                model.x_h(x.to(next(model.parameters()).device))
                .flatten(1)
                .cpu()
                .numpy()
            )
        out[name] = np.stack(rows)
    return out


def xh_agreement(
    emb: dict[str, np.ndarray], positions: dict[str, np.ndarray], person: str
) -> dict[str, float]:
    """How much the X_h that different contrasts give agree, for one person against the
    others.

    The X_h are centred (the mean over every subject, contrast and sample is removed)
    and compared by cosine similarity. ``same_person``: between two different contrasts
    of the same slice of ``person``. ``different_people``: between a contrast of a slice
    of ``person`` and a *different* contrast of the slice of another person at the
    nearest relative position (the volumes share an atlas-like grid). ``gap`` =
    same_person - different_people: above 0 when X_h carries who the person is, whatever
    the contrast."""
    if person not in emb or len(emb) < 2:
        raise ValueError(
            f"need {person!r} and at least one other person, got {sorted(emb)}"
        )
    mean = np.concatenate([e.reshape(-1, e.shape[-1]) for e in emb.values()]).mean(0)

    def unit(a):
        a = a - mean
        return a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)

    mine = unit(emb[person])  # (4, N, D)
    k = len(mine)
    pairs = [(a, b) for a in range(k) for b in range(k) if a != b]
    same = np.mean([(mine[a] * mine[b]).sum(-1).mean() for a, b in pairs])
    between = []
    for other, e in emb.items():
        if other == person:
            continue
        theirs = unit(e)
        nearest = np.abs(positions[other][None, :] - positions[person][:, None]).argmin(
            1
        )
        between += [(mine[a] * theirs[b][nearest]).sum(-1).mean() for a, b in pairs]
    return {
        "same_person": float(same),
        "different_people": float(np.mean(between)),
        "gap": float(same - np.mean(between)),
    }


def pca_2d(emb: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str], list[str]]:
    """The X_h of every subject and contrast projected on their first two principal components, with the
    person and the contrast of each point."""
    from sklearn.decomposition import PCA

    rows, people, contrasts = [], [], []
    for name, e in emb.items():
        for j, c in enumerate(CONTRASTS):
            rows.append(e[j])
            people += [name] * len(e[j])
            contrasts += [c] * len(e[j])
    return PCA(2, random_state=0).fit_transform(np.concatenate(rows)), people, contrasts


def stack_samples(subjects: dict[str, SubjectData]) -> torch.Tensor:
    return torch.cat([d.samples for d in subjects.values()])


def central_patch(samples: torch.Tensor, size: int) -> torch.Tensor:
    """The central cube (or square) of side ``size`` of samples larger than that; others unchanged."""
    if all(s <= size for s in samples.shape[2:]):
        return samples
    lo = [(s - size) // 2 for s in samples.shape[2:]]
    return samples[(slice(None), slice(None), *(slice(a, a + size) for a in lo))]


def constant_prediction(train: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """The trivial control of the synthesis: every target contrast predicted as its mean brain
    intensity over the training samples, whatever the source (no image is read). The brain mask of
    each sample is applied, as to every model's prediction. (4 sources, N, 4 targets, ...)."""
    k = len(CONTRASTS)
    mask = train[:, k:].float()
    means = (train[:, :k].float() * mask).flatten(2).sum((0, 2)) / mask.sum().clamp_min(
        1
    )
    shape = (1, k) + (1,) * (samples.ndim - 2)
    pred = means.reshape(shape) * samples[:, k:].float()
    return (
        pred.expand(len(samples), k, *samples.shape[2:])
        .unsqueeze(0)
        .repeat(k, *[1] * samples.ndim)
    )


def control_embeddings(
    subjects: dict[str, SubjectData], kind: str, size: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Trivial "encoders" for the agreement of section 7.8, in the shape :func:`embeddings` returns
    ((4, N, D) per subject): ``"pixels"``, each contrast average-pooled to the bottleneck's ``size``
    (3 x 3 in CI mode); ``"mask"``, the brain mask pooled the same way, the same for every contrast.
    A trained X_h whose person gap is no larger than theirs shows nothing a pooled image does not."""
    if kind not in ("pixels", "mask"):
        raise ValueError(f"kind must be 'pixels' or 'mask', got {kind!r}")
    k = len(CONTRASTS)
    pool = F.adaptive_avg_pool2d if len(size) == 2 else F.adaptive_avg_pool3d
    out = {}
    for name, data in subjects.items():
        x = data.samples.float()
        x = x[:, :k] if kind == "pixels" else x[:, k:].expand(-1, k, *x.shape[2:])
        out[name] = pool(x, size).flatten(2).transpose(0, 1).numpy()  # (4, N, D)
    return out


def _run_variant(
    settings: dict, data: dict, variant: str, device="cpu", score_val: bool = True
) -> dict:
    """Train one variant with every seed on one fold and score it (the part of :func:`run_fold` that
    one worker process does)."""
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    train, test = stack_samples(data["train"]), stack_samples(data["test"])
    val = stack_samples(data["val"]) if data["val"] and score_val else None
    everyone = {**data["train"], **data["test"]}
    positions = {n: d.position for n, d in everyone.items()}
    crop = settings["image_size"] if settings["spatial_dims"] == 3 else None
    out = {
        "test": {},
        "val": {},
        "agreement": {},
        "models": {},
        "history": {},
        "dependence": {},
    }
    for seed in settings["seeds"]:
        # one line per run would fill the page (folds x variants x seeds); the loss curves are kept
        trainer = train_variant(settings, variant, seed, train, device, verbose=False)
        model = trainer.model  # scored on the training device, then kept on the CPU
        out["spatial"] = model.spatial
        out["history"][variant, seed] = trainer.history
        out["test"][variant, seed] = synthesis_scores(model, test, settings)
        if val is not None:
            out["val"][variant, seed] = synthesis_scores(model, val, settings)
        if variant in ("baseline", "full", "unet"):
            out["dependence"][variant, seed] = x_h_dependence(
                model, central_patch(test, crop) if crop else test
            )
        emb = embeddings(model, everyone, settings)
        out["agreement"][variant, seed] = xh_agreement(
            emb, positions, data["split"]["test"][0]
        )
        out["models"][variant, seed] = model.cpu()
    return out


def _controls(settings: dict, data: dict, size: tuple[int, ...]) -> dict:
    """The trivial controls of one fold: the constant image's scores and the pooled-pixel and
    brain-mask "encoders" of the agreement."""
    train, test = stack_samples(data["train"]), stack_samples(data["test"])
    everyone = {**data["train"], **data["test"]}
    positions = {n: d.position for n, d in everyone.items()}
    crop = settings["image_size"] if settings["spatial_dims"] == 3 else None
    constant = constant_prediction(train, test)
    out = {
        "constant": {
            "psnr": scores_of(constant, test),
            "ssim": scores_of(constant, test, "ssim", settings["ssim_kernel"]),
        },
        "agreement": {},
    }
    for kind in ("pixels", "mask"):
        people = {
            n: SubjectData(
                n,
                central_patch(d.samples, crop) if crop else d.samples,
                d.position,
                d.clipped,
            )
            for n, d in everyone.items()
        }
        out["agreement"][kind] = xh_agreement(
            control_embeddings(people, kind, size), positions, data["split"]["test"][0]
        )
    return out


def _merge(settings: dict, data: dict, parts: list[dict]) -> dict:
    results = {
        "person": data["split"]["test"][0],
        "n_test": len(stack_samples(data["test"])),
    }
    for key in ("test", "val", "agreement", "models", "history", "dependence"):
        results[key] = {k: v for part in parts for k, v in part[key].items()}
    results["control"] = _controls(settings, data, parts[0]["spatial"])
    return results


def run_fold(
    settings: dict, data: dict, device="cpu", progress=None, score_val: bool = True
) -> dict:
    """One fold: train every variant with every seed on the training people; score the synthesis of
    the test person (and the validation slices if ``score_val``), the X_h agreement, the swap and zero
    tests of X_h (for ``baseline``, ``full`` and ``unet``), and the trivial controls. Returns the
    scores and the trained models (by (variant, seed))."""
    parts = []
    for variant in settings["variants"]:
        parts.append(_run_variant(settings, data, variant, device, score_val))
        if progress:
            progress(variant)
    return _merge(settings, data, parts)


def run_folds(
    settings: dict, folds: list[dict], device="cpu", workers: int = 1
) -> list[dict]:
    """:func:`run_fold` for every fold; validation slices are scored in the fold whose test person is
    the first of ``settings["test_subjects"]`` (the fold the exercises use). With ``workers`` > 1 the
    (fold, variant) jobs run in that many processes (CPU only); every run is seeded on its own, so the
    results are those of one process."""
    chapter = chapter_fold(settings, folds)
    jobs = [(i, v) for i in range(len(folds)) for v in settings["variants"]]
    args = [(settings, folds[i], v, device, i == chapter) for i, v in jobs]
    if workers > 1 and str(device) == "cpu":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            done = list(pool.map(_run_variant, *zip(*args, strict=True)))
    else:
        done = [_run_variant(*a) for a in args]
    return [
        _merge(settings, f, [d for (j, _), d in zip(jobs, done, strict=True) if j == i])
        for i, f in enumerate(folds)
    ]


def chapter_fold(settings: dict, folds: list) -> int:
    """Index of the fold whose test set holds ``settings["test_subjects"][0]`` (else the first)."""
    wanted = list(settings["test_subjects"])[:1]
    for i, f in enumerate(folds):
        split = f["split"] if "split" in f else {"test": [f["person"]]}
        if set(wanted) & set(split["test"]):
            return i
    return 0


def _mean_sd(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def matrix_table(results: dict, metric: str, variants=None) -> pd.DataFrame:
    """The 4 x 4 source -> target table of one fold: mean over the test samples, then mean ± standard
    deviation over the seeds, for each of ``variants`` (default: all)."""
    variants = variants or list(dict.fromkeys(v for v, _ in results["test"]))
    rows = {}
    for v in variants:
        per_seed = np.stack(
            [r[metric].mean(-1) for (vv, _), r in results["test"].items() if vv == v]
        )
        for s, source in enumerate(CONTRASTS):
            rows[(VARIANT_LABELS[v], source)] = {
                t: _mean_sd(per_seed[:, s, j]) for j, t in enumerate(CONTRASTS)
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names, table.columns.name = ["model", "source"], "target"
    return table


def split_table(folds: list[dict]) -> pd.DataFrame:
    """People and samples in each part of each fold."""
    rows = []
    for f in folds:
        for part in ("train", "val", "test"):
            people = f[part]
            rows.append(
                {
                    "test person": ", ".join(f["split"]["test"][:2])
                    + (" ..." if len(f["split"]["test"]) > 2 else ""),
                    "part": part,
                    "people": len(people),
                    "samples": sum(len(d.samples) for d in people.values()),
                    "names": ", ".join(list(people)[:3])
                    + (" ..." if len(people) > 3 else ""),
                }
            )
    return pd.DataFrame(rows).set_index(["test person", "part"])


def split_means(fold: dict, split: str = "val") -> pd.DataFrame:
    """Each variant's cross-contrast PSNR and SSIM on one split of one fold: mean over the samples,
    then mean ± sd over the seeds."""
    variants = list(dict.fromkeys(v for v, _ in fold[split]))
    rows = {}
    for v in variants:
        runs = [r for (vv, _), r in fold[split].items() if vv == v]
        rows[VARIANT_LABELS[v]] = {
            m: _mean_sd([off_diagonal_mean(r[m]).mean() for r in runs])
            for m in ("psnr", "ssim")
        }
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------------------------------- statistics over folds
def item_scores(fold: dict, what: str, metric: str = "psnr") -> np.ndarray:
    """(seeds, test items) cross-contrast scores (mean of the 12 source != target pairs) of one fold.

    ``what``: a variant; ``"constant"``, the trivial control (the same for every seed);
    ``"<variant>:none"``, ``"<variant>:zero"``, ``"<variant>:swap"``: PSNR of the swap and zero
    tests of X_h (``metric`` must then be "psnr")."""
    seeds = sorted({s for _, s in fold["test"]})
    if what == "constant":
        row = off_diagonal_mean(fold["control"]["constant"][metric])
        return np.repeat(row[None], len(seeds), 0)
    if ":" in what:
        variant, replace = what.split(":")
        if metric != "psnr":
            raise ValueError("the swap and zero tests are scored in PSNR")
        return np.stack([fold["dependence"][variant, s][replace] for s in seeds])
    return np.stack([off_diagonal_mean(fold["test"][what, s][metric]) for s in seeds])


def compare(folds: list[dict], a: str, b: str, metric: str = "psnr") -> dict:
    """``a`` minus ``b`` (see :func:`item_scores`) in every fold and pooled over the folds.

    Within a fold the test items are the slices of one person, so the interval is over the seeds
    (:func:`medvae_lib.stats.paired_difference` with one cluster). Pooled, the items of all folds are
    clustered by person: the interval is over seeds crossed with people. ``agree`` says whether
    every fold's interval lies on the same side of zero ("above 0", "below 0"), else "no"."""
    from . import stats

    per_fold, a_all, b_all, people = {}, [], [], []
    for fold in folds:
        fa, fb = item_scores(fold, a, metric), item_scores(fold, b, metric)
        per_fold[fold["person"]] = stats.paired_difference(
            fa, fb, clusters=[fold["person"]] * fa.shape[1]
        )
        (
            a_all.append(fa),
            b_all.append(fb),
            people.extend([fold["person"]] * fa.shape[1]),
        )
    pooled = None
    if len(folds) > 1:
        pooled = stats.paired_difference(
            np.concatenate(a_all, 1), np.concatenate(b_all, 1), clusters=people
        )
    sides = {
        "above 0" if r["low"] > 0 else "below 0" if r["high"] < 0 else "no"
        for r in per_fold.values()
    }
    agree = sides.pop() if len(sides) == 1 else "no"
    return {"folds": per_fold, "pooled": pooled, "agree": agree}


def _interval(r: dict, digits: int = 3, sign: str = "+") -> str:
    """``mean [low, high]``; ``sign="+"`` for differences, ``""`` for levels."""
    return f"{r['mean']:{sign}.{digits}f} [{r['low']:{sign}.{digits}f}, {r['high']:{sign}.{digits}f}]"


def comparison_table(
    folds: list[dict], pairs: dict[str, tuple[str, str]], metric: str = "psnr"
) -> pd.DataFrame:
    """One row per comparison and test person (and "pooled"): the mean difference with its 95%
    interval (over seeds within a fold, over seeds and people pooled) and the per-seed means."""
    rows = []
    for label, (a, b) in pairs.items():
        c = compare(folds, a, b, metric)
        parts = list(c["folds"].items()) + (
            [("pooled", c["pooled"])] if c["pooled"] else []
        )
        for person, r in parts:
            rows.append(
                {
                    "comparison": label,
                    "test person": person,
                    "difference [95% interval]": _interval(r),
                    "per seed": " ".join(f"{x:+.3f}" for x in r["per_seed"]),
                }
            )
    return pd.DataFrame(rows).set_index(["comparison", "test person"])


def verdict_table(
    folds: list[dict],
    pairs: dict[str, tuple[str, str]],
    metric: str = "psnr",
    unit: str = "",
) -> pd.DataFrame:
    """Per comparison: how the book reads the pooled interval (:func:`medvae_lib.stats.verdict`) and
    whether every fold agrees. A conclusion is drawn only where both say the same."""
    from . import stats

    rows = {}
    for label, (a, b) in pairs.items():
        c = compare(folds, a, b, metric)
        rows[label] = {
            "pooled": stats.verdict(c["pooled"], unit) if c["pooled"] else "-",
            "every fold": c["agree"],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def gap_values(folds: list[dict], what: str) -> np.ndarray:
    """(seeds, folds) gap of section 7.8: a variant's X_h, or a control ("pixels", "mask"; the same
    for every seed)."""
    seeds = sorted({s for _, s in folds[0]["test"]})
    if what in ("pixels", "mask"):
        return np.repeat(
            [[f["control"]["agreement"][what]["gap"] for f in folds]], len(seeds), 0
        )
    return np.array([[f["agreement"][what, s]["gap"] for f in folds] for s in seeds])


def gap_table(folds: list[dict], variants, controls=("pixels", "mask")) -> pd.DataFrame:
    """The person gap of every model and trivial encoder: per test person (mean over seeds), pooled with
    a 95% interval over seeds and people, and (for models) the difference to the brain mask alone."""
    from . import stats

    labels = {
        "pixels": "raw pixels, pooled to X_h's size",
        "mask": "brain mask alone, pooled",
    }
    people = [f["person"] for f in folds]
    rows = {}
    for what in list(variants) + list(controls):
        g = gap_values(folds, what)
        row = {p: f"{v:.3f}" for p, v in zip(people, g.mean(0), strict=True)}
        if what in controls:
            row["pooled [95% interval]"] = (
                f"{g.mean():.3f} (no training: one value per person)"
            )
            row["minus mask [95% interval]"] = "-"
        else:
            row["pooled [95% interval]"] = _interval(
                stats.mean_interval(g, clusters=people), sign=""
            )
            d = stats.paired_difference(g, gap_values(folds, "mask"), clusters=people)
            row["minus mask [95% interval]"] = _interval(d)
        rows[labels.get(what, VARIANT_LABELS.get(what, what))] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def fold_summary(folds: list[dict], metric: str = "psnr") -> pd.DataFrame:
    """Cross-contrast score of every variant and the constant control, per test person (mean over
    seeds) and pooled with a 95% interval over seeds and people."""
    from . import stats

    variants = list(dict.fromkeys(v for v, _ in folds[0]["test"])) + ["constant"]
    rows = {}
    for v in variants:
        per = [item_scores(f, v, metric) for f in folds]
        row = {f["person"]: f"{x.mean():.3f}" for f, x in zip(folds, per, strict=True)}
        people = [
            f["person"]
            for f, x in zip(folds, per, strict=True)
            for _ in range(x.shape[1])
        ]
        if len(folds) > 1:
            pooled = stats.mean_interval(np.concatenate(per, 1), clusters=people)
            row["pooled [95% interval]"] = _interval(pooled, sign="")
        rows[VARIANT_LABELS.get(v, "constant image (control)")] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_synthesis(
    model: PUIRNet, sample: torch.Tensor, settings: dict, title: str = ""
):
    """One sample: the four real contrasts, each contrast synthesised from each source, and the error maps."""
    import matplotlib.pyplot as plt

    pred = synthesise(model, sample[None], settings)[:, 0]  # (sources, targets, H, W)
    truth = sample[: len(CONTRASTS)]
    k = len(CONTRASTS)
    fig, axes = plt.subplots(
        k + 1, 2 * k, figsize=(2 * k * 1.1, (k + 1) * 1.15), dpi=70
    )

    def show(ax, image, cmap="gray", vmax=1.0):
        ax.imshow(np.rot90(image.numpy()), cmap=cmap, vmin=0, vmax=vmax)
        ax.set_xticks([]), ax.set_yticks([])

    for t in range(k):
        show(axes[0, t], truth[t])
        axes[0, t].set_title(f"real {CONTRASTS[t]}", fontsize=8)
        axes[0, k + t].axis("off")
        for s in range(k):
            show(axes[s + 1, t], pred[s, t])
            show(
                axes[s + 1, k + t],
                (pred[s, t] - truth[t]).abs(),
                cmap="magma",
                vmax=0.5,
            )
            if s == 0:
                axes[1, k + t].set_title(f"|error| {CONTRASTS[t]}", fontsize=8)
    for s in range(k):
        axes[s + 1, 0].set_ylabel(f"from {CONTRASTS[s]}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_embedding(embs: dict[str, dict[str, np.ndarray]]):
    """PCA of X_h, one row per model: points coloured by person (left) and by source contrast (right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(embs), 2, figsize=(8, 3.3 * len(embs)), dpi=80, squeeze=False
    )
    for row, (label, emb) in enumerate(embs.items()):
        xy, people, contrasts = pca_2d(emb)
        for col, (groups, name) in enumerate(
            ((people, "person"), (contrasts, "source contrast"))
        ):
            ax = axes[row, col]
            for g in dict.fromkeys(groups):
                sel = np.array(groups) == g
                ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.7, label=g)
            ax.set_title(f"{label}: coloured by {name}", fontsize=9)
            ax.set_xlabel("PC 1"), ax.set_ylabel("PC 2")
            ax.legend(fontsize=7, markerscale=1.5)
    fig.tight_layout()
    return fig
