"""Chapter 5's figures: a volume's three middle planes beside its reconstructions and
their errors, and the validation curves of every fold."""

from __future__ import annotations

import torch


def plot_planes(
    reference: torch.Tensor,
    reconstructions: dict[str, torch.Tensor],
    error_max: float = 0.3,
):
    """The middle slice of a (1, X, Y, Z) volume in its three planes (rows: axial, coronal,
    sagittal): the original, then each reconstruction beside its absolute error map, which
    share one colour bar (0 to ``error_max``, intensities in [0, 1]). Sized for the page's
    column, text at least 9 pt there."""
    import matplotlib.pyplot as plt

    def planes(v):
        v = v[0]
        x, y, z = (s // 2 for s in v.shape)
        return {
            "axial": v[:, :, z].T,
            "coronal": v[:, y, :].T,
            "sagittal": v[x, :, :].T,
        }

    original = planes(reference)
    columns = [("original", original, "gray", 1.0)]
    for name, rec in reconstructions.items():
        p = planes(rec)
        columns.append((name, p, "gray", 1.0))
        error = {k: (p[k] - v).abs() for k, v in original.items()}
        columns.append(("|error|", error, "magma", error_max))
    fig, axes = plt.subplots(
        3,
        len(columns),
        figsize=(6.8, 3.4),
        squeeze=False,
        dpi=100,
        gridspec_kw={"wspace": 0.05, "hspace": 0.05},
    )
    shown = None
    for c, (label, p, cmap, vmax) in enumerate(columns):
        for r, (plane, img) in enumerate(p.items()):
            ax = axes[r, c]
            image = ax.imshow(
                img,
                cmap=cmap,
                vmin=0,
                vmax=vmax,
                origin="lower",
                interpolation="nearest",
            )
            if cmap == "magma":
                shown = image
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(plane, fontsize=9)
        axes[0, c].set_title(label, fontsize=9)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes, fraction=0.025, pad=0.02)
        bar.set_label("|error| (intensity in [0, 1])", fontsize=9)
        bar.ax.tick_params(labelsize=9)
    return fig


def plot_fold_curves(curves):
    """Validation PSNR by step, one panel per fold (its test person in the title), one
    line per run and seed (inflated solid, scratch dashed): the numbers the settings and
    the step count are read from, none of them from a test person. Sized for the page's
    column, text at least 9 pt there."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    folds = list(dict.fromkeys(curves["fold"]))
    fig, axes = plt.subplots(
        1,
        len(folds),
        figsize=(6.8, 3.0),
        dpi=100,
        sharey=True,
        squeeze=False,
        layout="constrained",
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
        ax.set_title(f"held out:\n{fold}", fontsize=9)
        ax.set_xlabel("step", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.tick_params(labelsize=9)
    axes[0, 0].set_ylabel("validation PSNR (dB)", fontsize=9)
    fig.legend(
        *axes[0, -1].get_legend_handles_labels(),
        loc="outside lower center",
        ncol=4,
        fontsize=9,
        frameon=False,
    )
    return fig
