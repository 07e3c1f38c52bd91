"""Chapter 2's figures: the latents' histograms and maps, the architecture's block
diagram, and reconstructions beside their error maps."""

from __future__ import annotations

import torch

from ..models import get_config


def plot_latents(
    images: torch.Tensor, z_mu: torch.Tensor, z_sigma: torch.Tensor, index, titles=None
):
    """Left: histograms of every posterior mean (against the N(0, 1) prior density) and
    of every posterior standard deviation (the prior's is 1). Right: for the images at
    ``index``, the image and each latent channel's mean, the means on one colour scale
    with its colour bar. Sized for the page's column, text at least 9 pt there."""
    import matplotlib.pyplot as plt
    import numpy as np

    index = list(index)
    channels = z_mu.shape[1]
    cell = min(1.2, 3.6 / len(index))  # inches per image
    fig = plt.figure(
        figsize=(6.8, max(3.5, (1 + channels) * (cell + 0.2) + 0.6)),
        dpi=100,
        layout="constrained",
    )
    left, right = fig.subfigures(1, 2, width_ratios=(2.4, 4.4))
    top, bottom = left.subplots(2, 1)
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
    bottom.set_xlabel("value", fontsize=9)
    for ax in (top, bottom):  # the legends above the bars, clear of them
        ax.legend(
            fontsize=9, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False
        )
        ax.tick_params(labelsize=9)
    shown_mu = torch.stack([z_mu[int(i)] for i in index])  # one colour scale
    low, high = float(shown_mu.min()), float(shown_mu.max())
    panels = right.subplots(1 + channels, len(index), squeeze=False)
    for j, i in enumerate(index):
        a = panels[0, j]
        a.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
        a.set_title(titles[j] if titles is not None else f"image {i}", fontsize=9)
        for c in range(channels):
            mu_map = panels[1 + c, j].imshow(
                z_mu[i, c], cmap="viridis", vmin=low, vmax=high
            )
            if j == 0:
                panels[1 + c, j].set_ylabel(f"$\\mu$, channel {c}", fontsize=9)
    for p in panels.flat:
        p.set_xticks([])
        p.set_yticks([])
    bar = right.colorbar(mu_map, ax=panels[1:, :], location="bottom", shrink=0.8)
    bar.set_label("posterior mean $\\mu$", fontsize=9)
    bar.ax.tick_params(labelsize=9)
    return fig


def plot_architecture(model_name: str, image_size: int, width: int | str):
    """A block diagram of stage 1: encoder, posterior, sampling, decoder, and the
    losses' inputs. Drawn top to bottom for the page's column, text at least 9 pt
    there."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    cfg = get_config(model_name)
    latent = "x".join(map(str, cfg.latent_shape((image_size,) * cfg.spatial_dims)))
    image = "x".join([str(image_size)] * cfg.spatial_dims)
    # the figure's axes are measured in inches: centre x, centre y, width, text, colour
    left, middle, right = 1.05, 3.4, 5.75
    rows = [3.9 - 0.72 * k for k in range(6)]  # the pipeline, top to bottom
    boxes = {
        "x": (middle, rows[0], 2.2, f"image x, 1x{image}\nin [-1, 1]", "#dfe9f5"),
        "enc": (
            middle,
            rows[1],
            2.2,
            f"encoder: {cfg.levels - 1} halvings\n-> {2 * cfg.latent_channels} maps",
            "#f5e6cc",
        ),
        "post": (
            middle,
            rows[2],
            2.2,
            "1x1 conv: mean $\\mu$,\nlog-variance",
            "#f5e6cc",
        ),
        "z": (
            middle,
            rows[3],
            2.2,
            f"z = $\\mu$ + $\\sigma\\epsilon$\n{latent}",
            "#e3f1df",
        ),
        "dec": (middle, rows[4], 2.2, "decoder\n(mirror of the encoder)", "#f5e6cc"),
        "xh": (
            middle,
            rows[5],
            2.2,
            f"reconstruction $\\hat x$\n1x{image}",
            "#dfe9f5",
        ),
        "kl": (right, rows[2], 1.9, "KL($q(z|x)$ || N(0, I))", "#f7d9d9"),
        "rec": (right, rows[5], 1.9, "L1 + perceptual\n(x vs $\\hat x$)", "#f7d9d9"),
        "disc": (
            left,
            rows[5],
            1.9,
            "PatchGAN D, real x\nvs $\\hat x$ (hinge)",
            "#f7d9d9",
        ),
    }
    height = 0.5  # of a box
    fig = plt.figure(figsize=(6.8, 4.45), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    for cx, cy, w, text, color in boxes.values():
        ax.add_patch(
            FancyBboxPatch(
                (cx - w / 2, cy - height / 2),
                w,
                height,
                boxstyle="round,pad=0.04",
                fc=color,
                ec="0.3",
            )
        )
        ax.text(cx, cy, text, ha="center", va="center", fontsize=9)

    def edge(name, side):
        cx, cy, w, *_ = boxes[name]
        offsets = {
            "top": (0, height / 2 + 0.04),
            "bottom": (0, -height / 2 - 0.04),
            "left": (-w / 2 - 0.04, 0),
            "right": (w / 2 + 0.04, 0),
        }
        dx, dy = offsets[side]
        return cx + dx, cy + dy

    def arrow(a, b, side_a="bottom", side_b="top"):
        ax.add_patch(
            FancyArrowPatch(
                edge(a, side_a),
                edge(b, side_b),
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
    arrow("post", "kl", "right", "left")
    arrow("xh", "rec", "right", "left")
    arrow("xh", "disc", "left", "right")
    ax.set_xlim(0, 6.8)
    ax.set_ylim(0, 4.45)
    ax.axis("off")
    ax.text(
        middle,
        4.3,
        f"{model_name} (width {width}): stage 1",
        ha="center",
        va="center",
        fontsize=10,
    )
    return fig


def plot_reconstructions(
    reference: torch.Tensor,
    reconstructions: dict[str, torch.Tensor],
    index,
    titles=None,
    error_max: float = 0.3,
):
    """A grid for the images at ``index``: originals on the first row, then one row per
    method, each followed by its absolute error map; the error maps share one colour bar
    (0 to ``error_max``, intensities in [0, 1]). Sized for the page's column, text at
    least 9 pt there."""
    import textwrap

    import matplotlib.pyplot as plt

    index = torch.as_tensor(index)
    reference = reference[index]
    reconstructions = {method: rec[index] for method, rec in reconstructions.items()}
    n = len(index)
    rows = ["original"] + [m for m in reconstructions for _ in (0, 1)]
    cell = min(1.3, 5.6 / n)  # inches per image
    fig, axes = plt.subplots(
        len(rows),
        n,
        figsize=(6.8, cell * len(rows) + 0.3),
        dpi=100,
        squeeze=False,
        layout="constrained",
    )
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    for j in range(n):
        # nearest: the pixels as they are (and a PNG small enough for the page)
        show = {"vmin": 0, "interpolation": "nearest"}
        axes[0, j].imshow(reference[j, 0], cmap="gray", vmax=1, **show)
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=9)
        for r, rec in enumerate(reconstructions.values()):
            axes[1 + 2 * r, j].imshow(rec[j, 0], cmap="gray", vmax=1, **show)
            error = axes[2 + 2 * r, j].imshow(
                (rec[j, 0] - reference[j, 0]).abs(),
                cmap="magma",
                vmax=error_max,
                **show,
            )
    for i, label in enumerate(rows):
        label = label if i == 0 or i % 2 == 1 else "|error|"
        axes[i, 0].set_ylabel(textwrap.fill(label, 14), fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if len(rows) > 1:
        bar = fig.colorbar(error, ax=axes[2::2, :], shrink=0.9, extend="max")
        bar.set_label("|error| (intensity in [0, 1])", fontsize=9)
        bar.ax.tick_params(labelsize=9)
    return fig
