"""Chapter 3's figure: latents rendered as the teacher sees them, beside the image
(:func:`plot_rendered_latents`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..teachers import FrozenTeacher
from .objective import LATENT_SCALE, render_latent


def plot_rendered_latents(
    images,
    teacher: FrozenTeacher,
    latents: dict,
    index,
    titles=None,
    scale=LATENT_SCALE,
):
    """For the images at ``index``: the image as the teacher sees it (after its resize),
    then each latent of ``latents`` (``{name: (N, C, h, w)}``) rendered as the teacher
    sees it. Every panel shows the teacher's input before normalisation, each on its own
    grey scale. Sized for the page's column, text at least 9 pt there."""
    import matplotlib.pyplot as plt

    index = torch.as_tensor(index)
    rows = {"image": images[index]} | {
        name: render_latent(z[index], scale) for name, z in latents.items()
    }
    cell = min(1.5, 6.2 / len(index))  # inches per image
    fig, axes = plt.subplots(
        len(rows),
        len(index),
        figsize=(cell * len(index) + 0.5, cell * len(rows) + 0.3),
        dpi=100,
        squeeze=False,
        layout="constrained",
    )
    size = teacher.image_size
    for r, (name, x) in enumerate(rows.items()):
        shown = F.interpolate(
            x.float(), size=(size, size), mode="bicubic", align_corners=False
        )
        for j in range(len(index)):
            axes[r, j].imshow(shown[j, 0], cmap="gray")
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
            if r == 0 and titles is not None:
                axes[r, j].set_title(titles[j], fontsize=9)
        axes[r, 0].set_ylabel(name, fontsize=9)
    return fig
