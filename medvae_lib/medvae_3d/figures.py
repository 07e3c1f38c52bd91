"""Chapter 5's figures: a volume's three middle planes beside its reconstructions and
their errors, and the validation curves of every fold."""

from __future__ import annotations

import torch


def plot_planes(
    reference: torch.Tensor,
    reconstructions: dict[str, torch.Tensor],
    error_max: float = 0.3,
):
    """The middle slice of a (1, X, Y, Z) volume in its three planes (axial, coronal, sagittal): the original
    on the first row, then each reconstruction and its absolute error map."""
    import matplotlib.pyplot as plt

    def planes(v):
        v = v[0]
        x, y, z = (s // 2 for s in v.shape)
        return {
            "axial": v[:, :, z].T,
            "coronal": v[:, y, :].T,
            "sagittal": v[x, :, :].T,
        }

    rows = [("original", planes(reference), "gray", 1.0)]
    for name, rec in reconstructions.items():
        p = planes(rec)
        rows.append((name, p, "gray", 1.0))
        rows.append(
            (
                "|error|",
                {k: (p[k] - v).abs() for k, v in planes(reference).items()},
                "magma",
                error_max,
            )
        )
    fig, axes = plt.subplots(
        len(rows), 3, figsize=(4.8, 1.5 * len(rows)), squeeze=False, dpi=60
    )
    for r, (label, p, cmap, vmax) in enumerate(rows):
        for c, (plane, img) in enumerate(p.items()):
            axes[r, c].imshow(
                img,
                cmap=cmap,
                vmin=0,
                vmax=vmax,
                origin="lower",
                interpolation="nearest",
            )
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(plane, fontsize=9)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


def plot_fold_curves(curves):
    """Validation PSNR by step, one panel per fold (its test person in the title), one line per run
    and seed (inflated solid, scratch dashed): the numbers the settings and the step count are read
    from, none of them from a test person."""
    import matplotlib.pyplot as plt

    folds = list(dict.fromkeys(curves["fold"]))
    fig, axes = plt.subplots(
        1, len(folds), figsize=(3.2 * len(folds), 2.8), sharey=True, squeeze=False
    )
    for ax, fold in zip(axes[0], folds, strict=True):
        for (run, seed), part in curves[curves["fold"] == fold].groupby(
            ["run", "seed"]
        ):
            style = "-" if run == "inflated" else "--"
            ax.plot(
                part["step"],
                part["PSNR (dB)"],
                style,
                marker="o",
                ms=3,
                label=f"{run}, seed {seed}",
            )
        ax.set_title(f"{fold} held out", fontsize=9)
        ax.set_xlabel("step")
    axes[0, 0].set_ylabel("validation PSNR (dB)")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig
