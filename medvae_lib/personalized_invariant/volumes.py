"""Reading the brain MRI: subjects of a manifest or a BraTS folder, the BraTS download,
one person's four co-registered contrasts as a checked volume, their normalisation on
the brain, and the 2D axial slices of CI mode."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai import transforms as mt

from ..data import Manifest, fetch, load_manifest
from .settings import BRATS_SUFFIXES, CONTRASTS


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
