"""Chapter 2's figures: the latents' histograms and maps, the architecture's block
diagram, and reconstructions beside their error maps."""

from __future__ import annotations

import torch

from ..models import get_config


def plot_latents(
    images: torch.Tensor, z_mu: torch.Tensor, z_sigma: torch.Tensor, index, titles=None
):
    """Left: histograms of every posterior mean (against the N(0, 1) prior density) and of every
    posterior standard deviation (the prior's is 1). Right: for the images at ``index``, the image and
    each latent channel's mean."""
    import matplotlib.pyplot as plt
    import numpy as np

    index = list(index)
    channels = z_mu.shape[1]
    rows = max(2, 1 + channels)
    fig = plt.figure(figsize=(3.6 + 1.5 * len(index), 1.7 * rows + 0.3))
    grid = fig.add_gridspec(rows, 1 + len(index), width_ratios=[2.4] + [1] * len(index))
    top, bottom = (
        fig.add_subplot(grid[: rows // 2, 0]),
        fig.add_subplot(grid[rows // 2 :, 0]),
    )
    values = z_mu.flatten().numpy()
    top.hist(values, bins=60, density=True, alpha=0.7, label="posterior means $\\mu$")
    grid_x = np.linspace(min(values.min(), -4), max(values.max(), 4), 200)
    top.plot(
        grid_x,
        np.exp(-(grid_x**2) / 2) / np.sqrt(2 * np.pi),
        "k--",
        lw=1,
        label="prior N(0, 1)",
    )
    top.legend(fontsize=7)
    bottom.hist(
        z_sigma.flatten().numpy(),
        bins=60,
        density=True,
        alpha=0.7,
        color="C1",
        label="posterior std $\\sigma$",
    )
    bottom.axvline(1.0, color="k", ls="--", lw=1, label="prior std 1")
    bottom.set_xlim(0, max(1.1, float(z_sigma.max()) * 1.05))
    bottom.legend(fontsize=7)
    bottom.set_xlabel("value")
    for j, i in enumerate(index):
        a = fig.add_subplot(grid[0, 1 + j])
        a.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
        a.set_title(titles[j] if titles is not None else f"image {i}", fontsize=8)
        panels = [a]
        for c in range(channels):
            b = fig.add_subplot(grid[1 + c, 1 + j])
            b.imshow(z_mu[i, c], cmap="viridis")
            if j == 0:
                b.set_ylabel(f"$\\mu$, channel {c}", fontsize=8)
            panels.append(b)
        for p in panels:
            p.set_xticks([])
            p.set_yticks([])
    fig.tight_layout()
    return fig


def plot_architecture(model_name: str, image_size: int, width: int | str):
    """A block diagram of stage 1: encoder, posterior, sampling, decoder, and the losses' inputs."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    cfg = get_config(model_name)
    latent = "x".join(map(str, cfg.latent_shape((image_size,) * cfg.spatial_dims)))
    image = "x".join([str(image_size)] * cfg.spatial_dims)
    boxes = {
        "x": (0.2, 2.0, f"image x\n1x{image}\nin [-1, 1]", "#dfe9f5"),
        "enc": (
            1.9,
            2.0,
            f"encoder\n{cfg.levels - 1} halvings\n-> {2 * cfg.latent_channels} maps",
            "#f5e6cc",
        ),
        "post": (3.6, 2.0, "1x1 conv\nmean $\\mu$,\nlog-variance", "#f5e6cc"),
        "z": (5.3, 2.0, f"z = $\\mu$ + $\\sigma\\epsilon$\n{latent}", "#e3f1df"),
        "dec": (7.0, 2.0, "decoder\n(mirror of\nthe encoder)", "#f5e6cc"),
        "xh": (8.7, 2.0, f"reconstruction\n$\\hat x$, 1x{image}", "#dfe9f5"),
        "kl": (3.6, 0.3, "KL($q(z|x)$ || N(0, I))", "#f7d9d9"),
        "rec": (8.7, 3.7, "L1 + perceptual\n(x vs $\\hat x$)", "#f7d9d9"),
        "disc": (8.7, 0.3, "PatchGAN D\nreal x vs $\\hat x$\n(hinge)", "#f7d9d9"),
    }
    fig, ax = plt.subplots(figsize=(10.5, 3.6))
    for x0, y0, text, color in boxes.values():
        ax.add_patch(
            FancyBboxPatch(
                (x0, y0), 1.45, 1.0, boxstyle="round,pad=0.05", fc=color, ec="0.3"
            )
        )
        ax.text(x0 + 0.72, y0 + 0.5, text, ha="center", va="center", fontsize=8)

    def arrow(a, b, dy_a=0.5, dy_b=0.5, dx_a=1.45, dx_b=0.0):
        (xa, ya, *_), (xb, yb, *_) = boxes[a], boxes[b]
        ax.add_patch(
            FancyArrowPatch(
                (xa + dx_a, ya + dy_a),
                (xb + dx_b, yb + dy_b),
                arrowstyle="-|>",
                mutation_scale=12,
                color="0.3",
            )
        )

    for a, b in (
        ("x", "enc"),
        ("enc", "post"),
        ("post", "z"),
        ("z", "dec"),
        ("dec", "xh"),
    ):
        arrow(a, b)
    arrow("post", "kl", dy_a=0.0, dy_b=1.0, dx_a=0.72, dx_b=0.72)
    arrow("xh", "rec", dy_a=1.0, dy_b=0.0, dx_a=0.72, dx_b=0.72)
    arrow("xh", "disc", dy_a=0.0, dy_b=1.0, dx_a=0.72, dx_b=0.72)
    ax.set_xlim(0, 10.4)
    ax.set_ylim(0.1, 4.9)
    ax.axis("off")
    ax.set_title(f"{model_name} (width {width}): stage 1", fontsize=10)
    fig.tight_layout()
    return fig


def plot_reconstructions(
    reference: torch.Tensor,
    reconstructions: dict[str, torch.Tensor],
    index,
    titles=None,
):
    """A grid for the images at ``index``: originals on the first row, then one row per method, each
    followed by its absolute error map."""
    import matplotlib.pyplot as plt

    index = torch.as_tensor(index)
    reference = reference[index]
    reconstructions = {method: rec[index] for method, rec in reconstructions.items()}
    n = len(index)
    rows = ["original"] + [m for m in reconstructions for _ in (0, 1)]
    fig, axes = plt.subplots(
        len(rows), n, figsize=(1.6 * n, 1.6 * len(rows)), squeeze=False
    )
    for j in range(n):
        axes[0, j].imshow(reference[j, 0], cmap="gray", vmin=0, vmax=1)
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=8)
        for r, rec in enumerate(reconstructions.values()):
            axes[1 + 2 * r, j].imshow(rec[j, 0], cmap="gray", vmin=0, vmax=1)
            axes[2 + 2 * r, j].imshow(
                (rec[j, 0] - reference[j, 0]).abs(), cmap="magma", vmin=0, vmax=0.3
            )
    for i, label in enumerate(rows):
        axes[i, 0].set_ylabel(label if i == 0 or i % 2 == 1 else "|error|", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
