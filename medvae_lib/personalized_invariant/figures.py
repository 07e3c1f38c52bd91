"""Figures: one sample synthesised from every source with its error maps, and the PCA
of X_h coloured by person and by source contrast."""

from __future__ import annotations

import numpy as np
import torch

from .model import PUIRNet
from .representation import pca_2d
from .settings import CONTRASTS
from .synthesis import synthesise


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
