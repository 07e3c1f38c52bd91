"""Real data (section 6.10): one person's co-registered brain MRI contrasts, loaded and
z-scored, cut into patches with the FLAIR label, for the late-fusion experiment (the
paper's IEMOCAP experiment in small)."""

from __future__ import annotations

import numpy as np

from .settings import BRAIN_MODALITIES, BRAIN_TARGET

# Modalities are three MRI contrasts of the same tissue (T1, T1 with contrast, T2); the
# task is a property of a fourth contrast the model never sees: is an 8x8 patch brighter
# in FLAIR than the person's median patch? (A balanced task, so accuracy means what it
# says; with the top 10% as the class, as for "hyperintense", every model was within a
# point of always answering "no".) Every person in ../shared/data/brain_mri has all four
# contrasts. Training and test patches come from different people: generalisation to a
# new person is what is measured.


def load_brain_subject(subject: str, manifest="brain_mri") -> dict[str, np.ndarray]:
    """One person's four contrasts (verified against the manifest, read with MONAI), each z-scored on the
    brain mask (voxels where every contrast is non-zero: the volumes are skull-stripped), plus the mask."""
    from monai.transforms import LoadImage

    from .. import data

    manifest = data.load_manifest(manifest) if isinstance(manifest, str) else manifest
    wanted = (*BRAIN_MODALITIES, BRAIN_TARGET)
    missing = [c for c in wanted if f"{subject}/{c}" not in manifest.files]
    if missing:
        people = sorted({k.split("/")[0] for k in manifest.files})
        raise ValueError(
            f"subject {subject!r} has no {missing} in manifest {manifest.name!r}; people: {people}"
        )
    loader = LoadImage(image_only=True)
    volumes = {
        c: np.asarray(
            loader(str(data.fetch(manifest, f"{subject}/{c}"))), dtype=np.float32
        )
        for c in wanted
    }
    shapes = {c: v.shape for c, v in volumes.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"subject {subject!r}: the contrasts are not on one grid: {shapes}"
        )
    brain = np.all([v != 0 for v in volumes.values()], axis=0)
    if brain.sum() < 1000:
        raise ValueError(
            f"subject {subject!r}: only {brain.sum()} voxels are non-zero in every contrast"
        )
    out = {"mask": brain}
    for c, v in volumes.items():
        inside = v[brain]
        out[c] = np.where(
            brain, (v - inside.mean()) / (inside.std() + 1e-8), 0.0
        ).astype(np.float32)
    return out


def brain_patches(
    volumes: dict[str, np.ndarray],
    slices=(50, 110, 3),
    patch: int = 8,
    quantile: float = 0.9,
    with_slices=False,
):
    """Non-overlapping ``patch x patch`` windows of axial slices ``range(*slices)`` that lie wholly in the
    brain: per modality the window's values (``patch**2`` numbers), and the label 1 when the window's mean
    FLAIR is above the person's ``quantile`` of window means (hyperintense), else 0. With
    ``with_slices`` a third array gives each window's axial slice: windows of one slice are correlated,
    so intervals resample slices, not windows."""
    mask = volumes["mask"]
    lo, hi, step = slices
    if not 0 <= lo < hi <= mask.shape[2]:
        raise ValueError(
            f"slices {slices} outside the volume's {mask.shape[2]} axial slices"
        )
    zs = np.arange(lo, hi, step)
    rows, cols = (mask.shape[0] // patch) * patch, (mask.shape[1] // patch) * patch

    def windows(
        volume,
    ):  # (rows, cols, slices) -> (n_windows, patch * patch), row-major within a window
        v = volume[:rows, :cols, zs].reshape(
            rows // patch, patch, cols // patch, patch, len(zs)
        )
        return v.transpose(4, 0, 2, 1, 3).reshape(-1, patch * patch)

    inside = windows(mask).all(axis=1)
    feats = {c: windows(volumes[c])[inside] for c in BRAIN_MODALITIES}
    target = windows(volumes[BRAIN_TARGET])[inside].mean(axis=1)
    if len(target) < 10:
        raise ValueError(
            f"only {len(target)} patches of {patch}x{patch} lie wholly in the brain in slices {slices}"
        )
    y = (target > np.quantile(target, quantile)).astype(np.int64)
    if with_slices:
        z = np.broadcast_to(
            zs[:, None, None], (len(zs), rows // patch, cols // patch)
        ).reshape(-1)
        return feats, y, z[inside]
    return feats, y
