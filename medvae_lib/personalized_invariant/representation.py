"""Probes of X_h: synthesis with X_h zeroed or swapped (does the decoder use it?), the
X_h of every sample, their agreement within and between people, their PCA, and the
trivial pooled-pixel and brain-mask "encoders" they are compared with."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model import PUIRNet
from .settings import CONTRASTS
from .splits import SubjectData
from .synthesis import off_diagonal_mean, scores_of


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


@torch.no_grad()
def x_h_dependence(
    model: PUIRNet,
    samples: torch.Tensor,
    shift: int | None = None,
    chunk: int | None = None,
) -> dict:
    """Per sample, the cross-contrast PSNR (mean of the 12 pairs) of the model as it is
    (``"none"``) and with X_h replaced, the skips kept: by zeros (``"zero"``), and by
    the X_h of the sample ``shift`` places away in the same person, same source contrast
    (``"swap"``; default half the samples, so far in height; in full mode, where each
    test person is one sample, another person's). A decoder that uses X_h loses dB under
    both; one that synthesises through its skip connections does not. ``chunk``: samples
    through the network at a time (default all; full mode's 3D patches go a few at a
    time: the same numbers in less memory)."""
    n, k = len(samples), len(CONTRASTS)
    if n < 2:
        raise ValueError("the swap needs at least two samples")
    shift = n // 2 if shift is None else shift
    model.eval()
    device = next(model.parameters()).device
    mask = samples[:, k:].float()
    chunk = n if chunk is None else chunk
    preds = {"none": [], "zero": [], "swap": []}
    for j in range(k):

        def source(lo, j=j):  # one source contrast as the four input channels
            x = samples[lo : lo + chunk, j : j + 1].float()
            return x.repeat_interleave(k, 1).to(device)

        x_h = torch.cat([model.x_h(source(lo)) for lo in range(0, n, chunk)])
        other = x_h.roll(shift, 0)  # X_h of the sample `shift` places away
        out = {"none": [], "zero": [], "swap": []}
        for lo in range(0, n, chunk):
            skips, _ = model.encode(source(lo))
            part = slice(lo, lo + chunk)
            for name, z in (
                ("none", x_h[part]),
                ("zero", torch.zeros_like(x_h[part])),
                ("swap", other[part]),
            ):
                y = model.decode(skips, z).cpu().clamp(0, 1)
                out[name].append(y * mask[part])
        for name in preds:
            preds[name].append(torch.cat(out[name]))
    return {
        r: off_diagonal_mean(scores_of(torch.stack(p), samples))
        for r, p in preds.items()
    }


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
    emb: dict[str, np.ndarray],
    positions: dict[str, np.ndarray],
    person: str,
    exclude=(),
) -> dict[str, float]:
    """How much the X_h that different contrasts give agree, for one person against the
    others.

    The X_h are centred (the mean over every subject, contrast and sample is removed)
    and compared by cosine similarity. ``same_person``: between two different contrasts
    of the same slice of ``person``. ``different_people``: between a contrast of a slice
    of ``person`` and a *different* contrast of the slice of another person at the
    nearest relative position (the volumes share an atlas-like grid). ``gap`` =
    same_person - different_people: above 0 when X_h carries who the person is, whatever
    the contrast. ``exclude``: other folders of the same patient (BraTS's repeat scans),
    which are not "different people"."""
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
        if other == person or other in exclude:
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
