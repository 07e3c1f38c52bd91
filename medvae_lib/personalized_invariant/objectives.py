"""The training losses of the released code: reconstruction of all contrasts, the
individual-level consistency of X_h, and the rotation / patch-drop / contrastive
self-supervision."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
