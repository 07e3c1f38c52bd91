"""Brain MRI volumes as the 3D models take them: verified NIfTI files read in RAS
orientation, MedVAE's intensity handling, the checks that refuse a bad volume, and
the random patches and test tiles cut from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import fetch, load_manifest

BRAIN_MANIFEST = "brain_mri"
CONTRASTS = ("t1", "t1c", "t2", "flair")
CT_WINDOW = (
    -1000.0,
    1000.0,
)  # MedVAE's load_ct_3d: ScaleIntensityRange(a_min=-1000, a_max=1000, clip=True)


def ct_to_unit(hu: torch.Tensor) -> torch.Tensor:
    """CT in Hounsfield units to [0, 1] as MedVAE does: clip to [-1000, 1000] HU, then scale linearly."""
    lo, hi = CT_WINDOW
    return (
        (torch.as_tensor(hu, dtype=torch.float32).clamp(lo, hi) - lo) / (hi - lo)
    ).float()


def read_nifti(path: str | Path):
    """One 3D NIfTI volume as a MONAI ``MetaTensor`` (1, X, Y, Z) reoriented to RAS, with clear errors for
    a file that cannot be read (corrupt, truncated, not NIfTI) or that does not hold one 3D volume."""
    from monai.transforms import EnsureChannelFirst, LoadImage, Orientation

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no volume at {path}")
    try:
        image = LoadImage(image_only=True, reader="NibabelReader")(str(path))
    except Exception as err:  # nibabel and gzip raise many kinds; the cause is kept
        raise ValueError(
            f"{path.name} is not a readable NIfTI volume (corrupt, truncated or another format): {err}"
        ) from err
    if image.ndim != 3:
        raise ValueError(
            f"{path.name} holds an array of shape {tuple(image.shape)}; one 3D volume per file is expected "
            "(a 4D file stacks contrasts or time points: split it into one file per volume)"
        )
    image = EnsureChannelFirst(channel_dim="no_channel")(image)
    return Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(
        image
    )


def orientation(volume) -> str:
    """The axis codes (e.g. ``"RAS"``) of a MONAI ``MetaTensor``'s affine."""
    import nibabel as nib

    affine = getattr(volume, "affine", None)
    if affine is None:
        raise ValueError(
            "the volume carries no affine (a plain tensor); load it with read_nifti / monai.LoadImage"
        )
    return "".join(nib.aff2axcodes(np.asarray(affine)))


def check_volume(
    volume: torch.Tensor, factor: int | None = None, expected_orientation: str = "RAS"
) -> None:
    """Refuse a volume the 3D models cannot take, naming the problem: not (N, 1, X, Y, Z) (a missing channel
    axis, channels last, several channels), sides that ``factor`` does not divide, NaN or infinite voxels, or
    (for a ``MetaTensor``) another orientation than the one the inflated kernels assume."""
    shape = tuple(volume.shape)
    if volume.ndim == 3:
        raise ValueError(
            f"volume of shape {shape} has no batch and channel axes; pass volume[None, None]"
        )
    if volume.ndim == 4:
        raise ValueError(
            f"volume of shape {shape}: the 3D models take (N, 1, X, Y, Z); add the batch axis"
        )
    if volume.ndim != 5:
        raise ValueError(f"expected a (N, 1, X, Y, Z) volume, got shape {shape}")
    if shape[1] != 1:
        hint = (
            " (channels last? move them first: x.permute(0, 4, 1, 2, 3))"
            if shape[-1] == 1
            else ""
        )
        raise ValueError(
            f"the 3D models take one channel, (N, 1, X, Y, Z); got shape {shape}{hint}"
        )
    if factor is not None:
        bad = [s for s in shape[2:] if s % factor]
        if bad:
            raise ValueError(
                f"every side must be divisible by the factor {factor}; got {shape[2:]} "
                f"(pad with pad_to_multiple(volume, {factor}) or crop)"
            )
    bad = int((~torch.isfinite(torch.as_tensor(volume))).sum())
    if bad:
        raise ValueError(
            f"the volume of shape {shape} has {bad} NaN or infinite voxel(s); the models would turn them into "
            "NaN everywhere (check the file it was read from)"
        )
    if getattr(volume, "affine", None) is not None:
        found = orientation(volume)
        if found != expected_orientation:
            raise ValueError(
                f"the volume is in {found} orientation; the model expects {expected_orientation} "
                f"(monai.transforms.Orientation(axcodes='{expected_orientation}'))"
            )


def pad_to_multiple(
    volume: torch.Tensor, factor: int, value: float = 0.0
) -> torch.Tensor:
    """Pad the last three sides of ``volume`` at their ends up to multiples of ``factor`` (MONAI's
    ``DivisiblePad`` pads symmetrically; here the end, so voxel indices stay where they were)."""
    pads = []
    for s in reversed(volume.shape[-3:]):
        pads += [0, (-s) % factor]
    return F.pad(volume, pads, value=value)


def background_value(volume: torch.Tensor) -> float:
    """The most frequent value of a volume: the constant background of a skull-stripped scan (0 in the BraTS
    file; a constant offset in the TCGA files, whose brains hold values below their background)."""
    return float(torch.as_tensor(volume).flatten().mode().values)


def foreground(
    volume: torch.Tensor, background: float | None = None, tol: float = 0.01
) -> torch.Tensor:
    """Voxels that differ from the background (:func:`background_value`) by more than ``tol``: the brain."""
    bg = background_value(volume) if background is None else background
    return (torch.as_tensor(volume) - bg).abs() > tol


def load_brain_volume(
    subject: str,
    contrast: str,
    spacing: int = 1,
    factor: int = 4,
    manifest=BRAIN_MANIFEST,
):
    """A verified brain MRI volume (manifest key ``"<subject>/<contrast>"``) prepared as MedVAE's ``load_mri_3d``
    prepares MRI: RAS orientation, min-max scaled to [0, 1] (the trainer maps [0, 1] to MedVAE's [-1, 1]),
    cropped to the foreground with sides divisible by ``factor`` (MedVAE: 16). ``spacing`` > 1 first averages
    ``spacing``^3 voxels into one (CI mode; MedVAE keeps the acquired 1 mm). The foreground is what differs
    from the background value (:func:`foreground`), as the TCGA files' background is not 0. A volume with
    NaN or infinite voxels is refused, naming the file. Returns a (1, X, Y, Z) float tensor."""
    from monai.transforms import CropForeground, ScaleIntensity

    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose one of {CONTRASTS}")
    if isinstance(spacing, bool) or not isinstance(spacing, int) or spacing < 1:
        raise ValueError(
            f"spacing must be a whole number of millimetres >= 1 (the files have 1 mm voxels), got {spacing!r}"
        )
    path = fetch(
        load_manifest(manifest) if isinstance(manifest, str) else manifest,
        f"{subject}/{contrast}",
    )
    image = read_nifti(path).float()
    bad = int((~torch.isfinite(image.as_tensor())).sum())
    if bad:  # min-max scaling would make every voxel NaN, and the foreground crop empty
        raise ValueError(
            f"{path} ({subject}/{contrast}) has {bad} NaN or infinite voxel(s) although its checksum matches; "
            "the file itself holds them: repair it or choose another subject"
        )
    if spacing > 1:  # spacing^3 voxel averages
        image.set_array(F.avg_pool3d(image.as_tensor()[None], spacing)[0])
        image.affine[:3, :3] *= spacing
    image = ScaleIntensity(minv=0.0, maxv=1.0)(image)
    bg = background_value(image.as_tensor())
    crop = CropForeground(
        select_fn=lambda x: (x - bg).abs() > 0.01,
        k_divisible=factor,
        allow_smaller=False,
    )
    return crop(image).as_tensor().float().clamp(0, 1)


def load_brain_set(
    subjects, contrasts=CONTRASTS, spacing: int = 1, factor: int = 4
) -> dict[str, torch.Tensor]:
    """``{"<subject>/<contrast>": (1, X, Y, Z) volume}`` for every pair."""
    return {
        f"{s}/{c}": load_brain_volume(s, c, spacing, factor)
        for s in subjects
        for c in contrasts
    }


def random_patches(
    volumes: dict[str, torch.Tensor],
    n: int,
    size: int,
    seed: int = 0,
    min_foreground: float = 0.3,
) -> torch.Tensor:
    """``n`` random ``size``^3 patches (N, 1, s, s, s) from ``volumes``, each volume equally often, each patch
    with at least ``min_foreground`` of its voxels inside the brain (:func:`foreground`); MedVAE draws one
    random 64^3 crop per volume per step (``RandSpatialCrop``), here a fixed pool is drawn once."""
    rng = np.random.default_rng(seed)
    names = sorted(volumes)
    for name in names:
        if min(volumes[name].shape[1:]) < size:
            raise ValueError(
                f"{name} has shape {tuple(volumes[name].shape[1:])}, smaller than a {size}^3 patch"
            )
    masks = {name: foreground(volumes[name][0]) for name in names}
    out = []
    for i in range(n):
        name = names[i % len(names)]
        v, mask = volumes[name][0], masks[name]
        for _ in range(1000):
            corner = [int(rng.integers(0, s - size + 1)) for s in v.shape]
            box = tuple(slice(c, c + size) for c in corner)
            patch = v[box]
            if float(mask[box].float().mean()) >= min_foreground:
                break
        out.append(patch)
    return torch.stack(out)[:, None].contiguous()


def tile_boxes(
    volume: torch.Tensor, size: int, min_foreground: float = 0.5
) -> list[tuple[slice, ...]]:
    """The non-overlapping ``size``^3 tiles of a (1, X, Y, Z) volume that are at least ``min_foreground`` brain,
    as index boxes: the units of the test comparison (regions of one brain, not independent people)."""
    v = volume[0]
    mask = foreground(v)
    boxes = []
    for x in range(0, v.shape[0] - size + 1, size):
        for y in range(0, v.shape[1] - size + 1, size):
            for z in range(0, v.shape[2] - size + 1, size):
                box = (slice(x, x + size), slice(y, y + size), slice(z, z + size))
                if float(mask[box].float().mean()) >= min_foreground:
                    boxes.append(box)
    if not boxes:
        raise ValueError(
            f"no {size}^3 tile of a volume of shape {tuple(v.shape)} is {min_foreground:.0%} brain"
        )
    return boxes


def tiles(volume: torch.Tensor, boxes) -> torch.Tensor:
    """The tiles ``boxes`` (from :func:`tile_boxes`) of a (1, X, Y, Z) volume as a (T, 1, s, s, s) batch."""
    return torch.stack([volume[0][box] for box in boxes])[:, None].contiguous()
