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
    """One sample: the four real contrasts (top row), each contrast synthesised from each
    source (rows) on the same intensity scale, and the absolute error maps (right), with a
    colour bar for each half. Sized for the page's column, text at least 9 pt there."""
    import matplotlib.pyplot as plt

    pred = synthesise(model, sample[None], settings)[:, 0]  # (sources, targets, H, W)
    truth = sample[: len(CONTRASTS)]
    k = len(CONTRASTS)
    fig, axes = plt.subplots(
        k + 1, 2 * k, figsize=(6.8, 4.9), dpi=100, layout="constrained"
    )

    def show(ax, image, cmap="gray", vmax=1.0):
        shown = ax.imshow(np.rot90(image.numpy()), cmap=cmap, vmin=0, vmax=vmax)
        ax.set_xticks([]), ax.set_yticks([])
        return shown

    for t in range(k):
        grey = show(axes[0, t], truth[t])
        axes[0, t].set_title(CONTRASTS[t], fontsize=9)
        axes[0, k + t].axis("off")
        for s in range(k):
            show(axes[s + 1, t], pred[s, t])
            error = show(
                axes[s + 1, k + t],
                (pred[s, t] - truth[t]).abs(),
                cmap="magma",
                vmax=0.5,
            )
            if s == 0:
                axes[1, k + t].set_title(CONTRASTS[t], fontsize=9)
    axes[0, 0].set_ylabel("real", fontsize=9)
    for s in range(k):
        axes[s + 1, 0].set_ylabel(f"from {CONTRASTS[s]}", fontsize=9)
    for ax_group, shown, label in (
        (axes[:, :k], grey, "intensity (real and synthesised)"),
        (axes[:, k:], error, "|synthesised - real|"),
    ):
        bar = fig.colorbar(shown, ax=ax_group, location="bottom", shrink=0.8)
        bar.set_label(label, fontsize=9)
        bar.ax.tick_params(labelsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_embedding(embs: dict[str, dict[str, np.ndarray]]):
    """PCA of X_h, one row per model: points coloured by person (left) and by source contrast (right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(embs), 2, figsize=(6.8, 3.0 * len(embs)), dpi=100, squeeze=False
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
            ax.set_title(f"{label}:\nby {name}", fontsize=9)
            ax.set_xlabel("PC 1", fontsize=9), ax.set_ylabel("PC 2", fontsize=9)
            ax.tick_params(labelsize=9)
            ax.legend(fontsize=9, markerscale=1.5)
    fig.tight_layout()
    return fig
