"""The chapter's figures: the simulation's risk and ``eta`` against sample size,
Theorem 1's gaps, ``eta`` against the overlap, and late fusion's accuracy on real
data."""

from __future__ import annotations

import numpy as np
import pandas as pd


def plot_by_size(results: pd.DataFrame, values=("excess risk", "eta"), axes=None):
    """Median over seeds (lines) with the seeds' 10-90% band of each value against m, one line per subset
    size (the subsets of one size averaged first)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(values), figsize=(5 * len(values), 3.4))
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
        ax.set_xlabel("training samples m")
        ax.set_ylabel(value)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    return axes


def plot_theorem1(table: pd.DataFrame, results: pd.DataFrame, axes=None):
    """Left: the risk gap against gamma_S for every nested pair and seed, coloured by m. Right: the
    median |gap - gamma_S| and the empirical Rademacher complexity of each subset size against m."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.8))
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
    ax.set_xlabel(r"$\gamma_S(M,N) = \eta(\hat g_M) - \eta(\hat g_N)$")
    ax.set_ylabel(r"risk gap $r(\hat h_M\circ\hat g_M) - r(\hat h_N\circ\hat g_N)$")
    ax.legend(fontsize=6, ncol=2, markerscale=3)
    ax = axes[1]
    diff = (table["risk gap"] - table["gamma_S"]).abs().groupby(table["m"]).median()
    ax.plot(
        diff.index,
        diff,
        "ko-",
        ms=3,
        label=r"median $|$gap $-\ \gamma_S|$ (nested pairs)",
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
    ax.set_xlabel("training samples m")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return axes


def plot_overlap(table: pd.DataFrame, ax=None):
    """eta against the overlap w: ERM at one m (solid) and the infinite-data optimum (dashed), by subset size."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
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
    ax.set_xlabel("overlap w")
    ax.set_ylabel(r"$\eta$")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def plot_late_fusion(results: pd.DataFrame, axes=None):
    """Test accuracy against the number of training patches, one panel per held-out person, one line
    per subset (mean over seeds; thicker lines: more modalities), seeds as dots."""
    import matplotlib.pyplot as plt

    folds = sorted(results["test person"].unique())
    if axes is None:
        _, axes = plt.subplots(
            1, len(folds), figsize=(4.2 * len(folds), 3.6), sharey=True, squeeze=False
        )
        axes = axes[0]
    colours = dict(
        zip(
            sorted(results["subset"].unique()),
            plt.get_cmap("tab10").colors,
            strict=False,
        )
    )
    for ax, person in zip(axes, folds, strict=True):
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
        ax.set(xscale="log", xlabel="training patches m", title=f"held out: {person}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=7, ncol=2)
    return axes
