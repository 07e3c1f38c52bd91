"""The chapter's figures: the simulation's risk and ``eta`` against sample size,
Theorem 1's gaps, ``eta`` against the overlap, and late fusion's accuracy on real
data."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Text sizes for the page's column (figures at most 6.8 in wide at 100 dpi): at
# least 9 pt.
LABEL_PT = 10
TICK_PT = 9


def _column_figure(ncols: int, width: float, height: float, **kw):
    """A row of ``ncols`` axes drawn at 100 dpi, ``width`` inches wide at most 6.8."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, ncols, figsize=(min(width, 6.8), height), dpi=100, squeeze=False, **kw
    )
    return fig, axes[0]


def _label(ax, xlabel=None, ylabel=None):
    if xlabel is not None:
        ax.set_xlabel(xlabel, fontsize=LABEL_PT)
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=LABEL_PT)
    ax.tick_params(which="both", labelsize=TICK_PT)


def plot_by_size(results: pd.DataFrame, values=("excess risk", "eta"), axes=None):
    """Median over seeds (lines) with the seeds' 10-90% band of each value against m,
    one line per subset size (the subsets of one size averaged first). Sized for the
    page's column, text at least 9 pt there."""
    import matplotlib.pyplot as plt

    fig = None
    if axes is None:
        fig, axes = _column_figure(len(values), 3.4 * len(values) + 1.0, 3.0)
    axes = np.atleast_1d(axes)
    per_seed = results.groupby(["size", "m", "seed"])[list(values)].mean().reset_index()
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 4))
    for ax, value in zip(axes, values, strict=True):
        for size, group in per_seed.groupby("size"):
            stats = group.groupby("m")[value]
            ax.plot(
                stats.median().index,
                stats.median(),
                "o-",
                ms=3,
                color=colours[size - 1],
                label=f"{size} modalit{'y' if size == 1 else 'ies'}",
            )
            ax.fill_between(
                stats.median().index,
                stats.quantile(0.1),
                stats.quantile(0.9),
                color=colours[size - 1],
                alpha=0.2,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        _label(ax, "training samples m", value)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=TICK_PT)
    if fig is not None:
        fig.tight_layout()
    return axes


def _symlog_ticks(values, linthresh: float = 1e-2) -> list[float]:
    """0 and every other decade from ``linthresh`` up, both signs, for a symlog axis
    drawn narrow enough that a label at every decade would overlap."""
    top = max(float(np.nanmax(np.abs(values))), linthresh)
    first = int(np.floor(np.log10(linthresh)))
    decades = [10.0**k for k in range(first, int(np.ceil(np.log10(top))) + 1, 2)]
    return sorted([-d for d in decades] + [0.0] + decades)


def plot_theorem1(table: pd.DataFrame, results: pd.DataFrame, axes=None):
    """Top: the risk gap against gamma_S for every nested pair and seed, coloured by m
    (a colour bar). Bottom: the median |gap - gamma_S| and the empirical Rademacher
    complexity of each subset size against m, the legend beside them. Sized for the
    page's column, text at least 9 pt there."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap

    fig = legend_ax = None
    if axes is None:  # the scatter across the top, the curves and their legend below
        fig = plt.figure(figsize=(6.8, 5.8), dpi=100)
        grid = fig.add_gridspec(2, 2, width_ratios=(2.4, 1), height_ratios=(1.2, 1))
        axes = [fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 0])]
        legend_ax = fig.add_subplot(grid[1, 1])
        legend_ax.axis("off")
    ms = np.sort(table["m"].unique())
    colours = plt.get_cmap("plasma")(np.linspace(0, 0.9, len(ms)))
    ax = axes[0]
    for colour, m in zip(colours, ms, strict=True):
        part = table[table.m == m]
        ax.scatter(
            part["gamma_S"],
            part["risk gap"],
            s=4,
            color=colour,
            label=f"m={m}",
            alpha=0.6,
        )
    lim = 3.0
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xscale("symlog", linthresh=1e-2)
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_yticks(_symlog_ticks(table["risk gap"]))
    _label(
        ax,
        r"$\gamma_S(M,N) = \eta(\hat g_M) - \eta(\hat g_N)$",
        r"risk gap $r(\hat h_M\circ\hat g_M) - r(\hat h_N\circ\hat g_N)$",
    )
    # one colour per m: a stepped colour bar names them (a legend of every m at a
    # readable size would cover the points)
    scale = plt.cm.ScalarMappable(
        norm=BoundaryNorm(np.arange(len(ms) + 1) - 0.5, len(ms)),
        cmap=ListedColormap(colours),
    )
    bar = ax.figure.colorbar(scale, ax=ax, pad=0.02, fraction=0.05, aspect=25)
    bar.set_ticks(np.arange(len(ms)), labels=[str(m) for m in ms])
    bar.set_label("training samples m", fontsize=TICK_PT)
    bar.ax.tick_params(labelsize=TICK_PT)
    ax = axes[1]
    diff = (table["risk gap"] - table["gamma_S"]).abs().groupby(table["m"]).median()
    ax.plot(
        diff.index,
        diff,
        "ko-",
        ms=3,
        label="median $|$gap $-\\ \\gamma_S|$\n(nested pairs)",
    )
    rad = results.groupby(["size", "m"])["rademacher"].median().unstack(0)
    viridis = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 4))
    for size in rad.columns:
        ax.plot(
            rad.index,
            rad[size],
            "--",
            color=viridis[size - 1],
            label=rf"$\hat{{\mathfrak{{R}}}}$, {size} modalities",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _label(ax, "training samples m")
    ax.grid(alpha=0.3, which="both")
    if legend_ax is None:
        ax.legend(fontsize=TICK_PT)
    else:
        legend_ax.legend(
            *ax.get_legend_handles_labels(),
            fontsize=TICK_PT,
            loc="center",
            frameon=False,
        )
        fig.tight_layout()
    return axes


def plot_overlap(table: pd.DataFrame, ax=None):
    """eta against the overlap w: ERM at one m (solid) and the infinite-data optimum
    (dashed), by subset size. Sized for the page's column, text at least 9 pt there."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, (ax,) = _column_figure(1, 6.0, 3.4)
    mean = table.groupby(["size", "overlap"])[
        ["eta (ERM, m)", "eta (infinite data)"]
    ].mean()
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 4))
    for size in sorted(table["size"].unique()):
        part = mean.loc[size]
        ax.plot(
            part.index,
            part["eta (ERM, m)"],
            "o-",
            ms=3,
            color=colours[size - 1],
            label=f"{size} modalit{'y' if size == 1 else 'ies'}, ERM",
        )
        ax.plot(part.index, part["eta (infinite data)"], "--", color=colours[size - 1])
    _label(ax, "overlap w", r"$\eta$")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=TICK_PT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if fig is not None:
        fig.tight_layout()
    return ax


def plot_late_fusion(results: pd.DataFrame, axes=None):
    """Test accuracy against the number of training patches, one panel per held-out
    person, one line per subset (mean over seeds; thicker lines: more modalities), seeds
    as dots. Drawn for the page's column (text at least 9 pt there): panels two to a
    row, the subsets' legend in the cell after the last panel."""
    import matplotlib.pyplot as plt

    folds = sorted(results["test person"].unique())
    legend_ax = None
    if axes is None:
        rows = len(folds) // 2 + 1  # room for the legend after the last panel
        fig, grid = plt.subplots(
            rows,
            2,
            figsize=(6.8, 2.6 * rows + 0.2),
            dpi=100,
            sharey=True,
            squeeze=False,
        )
        axes, legend_ax = grid.flat[: len(folds)], grid.flat[len(folds)]
        for spare in grid.flat[len(folds) :]:
            spare.axis("off")
    colours = dict(
        zip(
            sorted(results["subset"].unique()),
            plt.get_cmap("tab10").colors,
            strict=False,
        )
    )
    for k, (ax, person) in enumerate(zip(axes, folds, strict=True)):
        part = results[results["test person"] == person]
        for subset, g in part.groupby("subset"):
            size = len(subset.split("+"))
            mean = g.groupby("m")["accuracy"].mean()
            ax.plot(
                mean.index,
                mean,
                "-",
                lw=0.8 + 0.8 * size,
                color=colours[subset],
                label=subset,
            )
            ax.scatter(g["m"], g["accuracy"], s=6, color=colours[subset], alpha=0.5)
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_title(f"held out: {person}", fontsize=LABEL_PT)
        _label(ax, "training patches m", "test accuracy" if k % 2 == 0 else None)
        ax.grid(alpha=0.3)
    handles = axes[0].get_legend_handles_labels()
    if legend_ax is None:
        axes[-1].legend(*handles, fontsize=TICK_PT, ncol=2)
    else:
        legend_ax.legend(
            *handles,
            title="subset",
            title_fontsize=TICK_PT,
            fontsize=TICK_PT,
            ncol=2,
            loc="center",
            frameon=False,
        )
        legend_ax.figure.tight_layout()
    return axes
