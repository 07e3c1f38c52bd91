"""Scores of reconstructions: PSNR and MS-SSIM per test tile and PSNR and 3D SSIM per
volume, and the paired fold-by-fold comparison of methods with the chapter's reading
of it."""

from __future__ import annotations

import numpy as np
import torch

from ..metrics import ms_ssim, psnr
from .volumes import tiles


def tile_scores(
    reference: dict,
    reconstructions: dict,
    boxes: dict,
    kernel_size: int = 7,
    scales=None,
):
    """PSNR and MS-SSIM per test tile (``boxes[volume]`` from :func:`tile_boxes`) for each method's whole-volume
    reconstructions: one row per method and tile, in the layout of :func:`~medvae_lib.medvae_stage1.fidelity`
    (``image`` numbers the tiles), so :func:`fold_table` compares methods."""
    import pandas as pd

    rows = []
    for method, recs in reconstructions.items():
        ref = torch.cat([tiles(reference[name], boxes[name]) for name in reference])
        rec = torch.cat(
            [
                tiles(
                    recs[name][0] if recs[name].ndim == 5 else recs[name], boxes[name]
                )
                for name in reference
            ]
        )
        p, m = psnr(rec, ref), ms_ssim(rec, ref, kernel_size=kernel_size, scales=scales)
        rows += [
            {"method": method, "image": i, "PSNR (dB)": float(a), "MS-SSIM": float(b)}
            for i, (a, b) in enumerate(zip(p, m, strict=True))
        ]
    return pd.DataFrame(rows)


def volume_fidelity(
    reference: dict[str, torch.Tensor],
    reconstructions: dict[str, dict[str, torch.Tensor]],
):
    """PSNR and 3D SSIM (MONAI ``SSIMMetric``, 7-voxel window) of whole volumes: one row per method and volume."""
    import pandas as pd
    from monai.metrics import SSIMMetric

    ssim = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=7, reduction="none")
    rows = []
    for method, recs in reconstructions.items():
        for name, ref in reference.items():
            rec, ref5 = (
                recs[name][None] if recs[name].ndim == 4 else recs[name],
                ref[None],
            )
            rows.append(
                {
                    "method": method,
                    "volume": name,
                    "PSNR (dB)": float(psnr(rec, ref5)[0]),
                    "SSIM (3D)": float(ssim(rec, ref5).reshape(-1)[0]),
                }
            )
    return pd.DataFrame(rows)


def _paired_arrays(tiles, a: str, b: str, metric: str):
    """Scores of methods ``a`` and ``b`` as (seeds, items) arrays over the tiles of ``tiles`` (one or more
    folds), with each item's person (its fold) as its cluster label."""
    wide = tiles.pivot_table(
        index=["fold", "image"], columns=["method", "seed"], values=metric, sort=True
    )
    seeds = sorted(tiles["seed"].unique())
    arr_a = np.stack([wide[(a, s)].to_numpy() for s in seeds])
    arr_b = np.stack([wide[(b, s)].to_numpy() for s in seeds])
    return arr_a, arr_b, wide.index.get_level_values("fold").to_numpy()


def fold_table(tiles, pairs, metrics=("PSNR (dB)", "MS-SSIM")):
    """Paired differences ``a - b`` per fold (an interval over seeds: one person per
    fold) and pooled over the folds (over seeds crossed with people), from
    :func:`medvae_lib.stats.paired_difference` with each tile's person as its cluster:
    the tiles of one person are correlated regions of one brain, not independent
    units. One row per comparison, metric and fold (``"pooled"`` last): the mean
    difference, its interval and degrees of freedom, each seed's mean difference and
    the book's reading (:func:`medvae_lib.stats.verdict`)."""
    import pandas as pd

    from .. import stats

    rows = []
    folds = list(dict.fromkeys(tiles["fold"]))
    for a, b in pairs:
        for metric in metrics:
            for fold in [*folds, "pooled"]:
                part = tiles if fold == "pooled" else tiles[tiles["fold"] == fold]
                arr_a, arr_b, people = _paired_arrays(part, a, b, metric)
                r = stats.paired_difference(arr_a, arr_b, clusters=people)
                rows.append(
                    {
                        "comparison": f"{a} - {b}",
                        "metric": metric,
                        "fold": fold,
                        "mean difference": r["mean"],
                        "95% CI low": r["low"],
                        "95% CI high": r["high"],
                        "df": r["df"],
                        "per seed": ", ".join(f"{x:+.2f}" for x in r["per_seed"]),
                        "reading": stats.verdict(r).split(":")[0],
                    }
                )
    return pd.DataFrame(rows).set_index(["comparison", "metric", "fold"])


def fold_verdict(table, comparison: str, metric: str) -> str:
    """What the folds allow the chapter to say about ``comparison`` on ``metric`` (rows
    of :func:`fold_table`): a direction only where every fold's mean and every seed of
    every fold point the same way *and* the pooled interval excludes zero; "depends on
    the person" where the folds' means differ in sign; otherwise "not detectable at
    this size"; each with the pooled difference and interval."""
    part = table.xs((comparison, metric), level=("comparison", "metric"))
    pooled = part.loc["pooled"]
    folds = part.drop(index="pooled")
    per_seed = [float(x) for cell in folds["per seed"] for x in cell.split(", ")]
    low, high = pooled["95% CI low"], pooled["95% CI high"]
    numbers = f"{pooled['mean difference']:+.3g} [{low:+.3g}, {high:+.3g}]"
    if len(set(np.sign(folds["mean difference"]))) > 1:
        return f"depends on the person: fold means of both signs; pooled {numbers}"
    if low > 0 and all(x > 0 for x in per_seed):
        return f"ahead in every fold and seed: pooled {numbers}"
    if high < 0 and all(x < 0 for x in per_seed):
        return f"behind in every fold and seed: pooled {numbers}"
    return f"not detectable at this size: pooled {numbers}"
