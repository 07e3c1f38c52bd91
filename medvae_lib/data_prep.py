"""Chapter ``01_data_prep``: from a manifest to normalised, resized tensors, with the figures and tables
the chapter shows. Chapter 2 onwards call :func:`prepare_splits` to get the same tensors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .data import (
    Manifest,
    Split,
    apply_transform,
    image_transform,
    load_dataset,
    load_manifest,
)

# Settings for the two ways a notebook runs; a notebook's `overrides` parameter changes single entries.
MODES = {
    "ci": {"data_key": "ci", "image_size": 32, "n_train": None, "n_test": None},
    "full": {"data_key": "128", "image_size": 128, "n_train": None, "n_test": None},
}


def subsample(split: Split, n: int | None, seed: int) -> Split:
    """A class-stratified random subset of ``n`` images (all of them when ``n`` is None)."""
    if n is None or n >= len(split.labels):
        return split
    if n < 1:
        raise ValueError(f"cannot take {n} images")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(split.labels, return_counts=True)
    take = np.floor(counts / counts.sum() * n).astype(int)
    take[: n - take.sum()] += 1  # hand out the rounding remainder
    idx = np.concatenate(
        [
            rng.choice(np.flatnonzero(split.labels == c), k, replace=False)
            for c, k in zip(classes, take, strict=True)
        ]
    )
    idx.sort()
    return Split(images=split.images[idx], labels=split.labels[idx])


def prepare_splits(
    manifest: Manifest | str,
    data_key: str,
    image_size: int,
    normalisation: str = "minmax",
    n: dict[str, int | None] | None = None,
    seed: int = 0,
    cache_dir=None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Verified file -> ``{split: (images (N, 1, S, S) float32, labels (N,) int64)}``."""
    manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    splits = load_dataset(manifest, data_key, cache_dir=cache_dir)
    transform = image_transform(image_size, manifest.spatial_dims, normalisation)
    out = {}
    for name, split in splits.items():
        split = subsample(split, (n or {}).get(name), seed)
        out[name] = (
            apply_transform(split.images, transform),
            torch.as_tensor(split.labels),
        )
    return out


def data_identity(manifest: str, data_key: str, image_size: int) -> dict:
    """What identifies the images a model was trained on, as trainers store it in checkpoints and
    exports: the manifest, the file key, its verified checksum and the image size."""
    datafile = load_manifest(manifest).file(data_key)
    return {
        "manifest": manifest,
        "key": data_key,
        "checksum": ":".join(datafile.checksum),
        "image_size": image_size,
    }


def split_table(splits: dict[str, Split], labels: dict[int, str]) -> pd.DataFrame:
    """Images per split and class, with each class's share of the split."""
    rows = []
    for name, split in splits.items():
        counts = np.bincount(split.labels, minlength=len(labels))
        for c, k in enumerate(counts):
            rows.append(
                {
                    "split": name,
                    "class": labels.get(c, str(c)),
                    "images": int(k),
                    "share": k / counts.sum(),
                }
            )
    return pd.DataFrame(rows)


def intensity_table(images: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Per-method summary of intensities: mean, spread and range over all pixels."""
    rows = []
    for method, x in images.items():
        x = x.float()
        rows.append(
            {
                "normalisation": method,
                "min": x.min().item(),
                "mean": x.mean().item(),
                "std": x.std().item(),
                "max": x.max().item(),
            }
        )
    return pd.DataFrame(rows).set_index("normalisation")


def plot_examples(
    split: Split, labels: dict[int, str], per_class: int = 6, seed: int = 0
):
    """A grid of random images, one row per class. Sized for the page's column, text at
    least 9 pt there."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    classes = sorted(labels)
    side = 6.8 / (per_class + 1)  # inches per image; the rest holds the class names
    fig, axes = plt.subplots(
        len(classes),
        per_class,
        figsize=(6.8, side * len(classes) + 0.1),
        dpi=100,
        squeeze=False,
        layout="constrained",
    )
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.0, hspace=0.0)
    for r, c in enumerate(classes):
        idx = rng.choice(np.flatnonzero(split.labels == c), per_class, replace=False)
        for ax, i in zip(axes[r], idx, strict=True):
            ax.imshow(split.images[i], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(labels[c], fontsize=10)
    return fig


def plot_intensity_histograms(split: Split, labels: dict[int, str]):
    """Distribution of each image's mean raw pixel value (0-255), one histogram per
    class (seaborn). Sized for the page's column, text at least 9 pt there."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = pd.DataFrame(
        {
            "pixel value": split.images.reshape(len(split.images), -1).mean(1),
            "class": [labels[int(c)] for c in split.labels],
        }
    )
    fig, ax = plt.subplots(figsize=(6.8, 3), dpi=100)
    order = [labels[c] for c in sorted(labels)]
    sns.histplot(
        frame,
        x="pixel value",
        hue="class",
        hue_order=order,
        stat="density",
        common_norm=False,
        bins=40,
        ax=ax,
    )
    ax.set_xlabel("mean pixel value of an image (0-255)", fontsize=10)
    ax.set_ylabel("density", fontsize=10)
    ax.tick_params(labelsize=9)
    legend = ax.get_legend()
    plt.setp(legend.get_texts(), fontsize=9)
    legend.set_title("class", prop={"size": 9})
    fig.tight_layout()
    return fig


def plot_resizing(image: np.ndarray, sizes: list[int]):
    """One image shrunk to several sides with and without anti-aliasing (MONAI
    ``Resize``), and the absolute difference between the two. Only shrinking is shown:
    anti-aliasing smooths before sampling *fewer* pixels, so when enlarging there is
    nothing for it to do."""
    import matplotlib.pyplot as plt
    from monai.transforms import Resize

    side = min(image.shape)
    if not sizes or any(s >= side for s in sizes):
        raise ValueError(
            f"give sides smaller than the image's {side} px: anti-aliasing only acts when shrinking; got {sizes}"
        )
    x = torch.as_tensor(image[None].astype(np.float32) / 255.0)
    rows = ("no anti-aliasing", "anti-aliased", "|difference|")
    n = len(sizes) + 1
    fig, axes = plt.subplots(
        len(rows),
        n,
        figsize=(6.8, 6.8 / n * len(rows) + 0.5),
        dpi=100,
        squeeze=False,
        layout="constrained",
    )
    axes[0, 0].imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes[0, 0].set_title(f"original\n{side}x{side}", fontsize=9)
    for r in (1, 2):
        axes[r, 0].axis("off")
    for j, s in enumerate(sizes, start=1):
        plain, smooth = (
            np.asarray(Resize((s, s), mode="bilinear", anti_aliasing=aa)(x)[0])
            for aa in (False, True)
        )
        axes[0, j].imshow(plain, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1, j].imshow(smooth, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        difference = axes[2, j].imshow(
            np.abs(plain - smooth),
            cmap="magma",
            vmin=0,
            vmax=0.2,
            interpolation="nearest",
        )
        axes[0, j].set_title(f"{s}x{s}\n({side / s:.1f}x smaller)", fontsize=9)
    for i, label in enumerate(rows):
        axes[i, 1].set_ylabel(label, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    # the difference's colour bar sits in the empty cell left of its row (an inset of
    # that cell, so the figure's last axes stays the last difference panel)
    cax = axes[2, 0].inset_axes([0.05, 0.5, 0.8, 0.08])
    bar = fig.colorbar(difference, cax=cax, orientation="horizontal", extend="max")
    bar.set_label("|difference|\n(intensity in [0, 1])", fontsize=9)
    bar.ax.xaxis.set_label_position("top")
    bar.ax.tick_params(labelsize=9)
    return fig
