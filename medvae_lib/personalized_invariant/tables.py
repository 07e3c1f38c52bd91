"""Tables of one fold: the 4 x 4 source -> target matrix, the people and samples of
each split, and each variant's mean scores on a split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .settings import CONTRASTS, VARIANT_LABELS
from .synthesis import off_diagonal_mean


def _mean_sd(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def matrix_table(results: dict, metric: str, variants=None) -> pd.DataFrame:
    """The 4 x 4 source -> target table of one fold: mean over the test samples, then mean ± standard
    deviation over the seeds, for each of ``variants`` (default: all)."""
    variants = variants or list(dict.fromkeys(v for v, _ in results["test"]))
    rows = {}
    for v in variants:
        per_seed = np.stack(
            [r[metric].mean(-1) for (vv, _), r in results["test"].items() if vv == v]
        )
        for s, source in enumerate(CONTRASTS):
            rows[(VARIANT_LABELS[v], source)] = {
                t: _mean_sd(per_seed[:, s, j]) for j, t in enumerate(CONTRASTS)
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names, table.columns.name = ["model", "source"], "target"
    return table


def split_table(folds: list[dict]) -> pd.DataFrame:
    """People and samples in each part of each fold."""
    rows = []
    for f in folds:
        for part in ("train", "val", "test"):
            people = f[part]
            rows.append(
                {
                    "test person": ", ".join(f["split"]["test"][:2])
                    + (" ..." if len(f["split"]["test"]) > 2 else ""),
                    "part": part,
                    "people": len(people),
                    "samples": sum(len(d.samples) for d in people.values()),
                    "names": ", ".join(list(people)[:3])
                    + (" ..." if len(people) > 3 else ""),
                }
            )
    return pd.DataFrame(rows).set_index(["test person", "part"])


def split_means(fold: dict, split: str = "val") -> pd.DataFrame:
    """Each variant's cross-contrast PSNR and SSIM on one split of one fold: mean over the samples,
    then mean ± sd over the seeds."""
    variants = list(dict.fromkeys(v for v, _ in fold[split]))
    rows = {}
    for v in variants:
        runs = [r for (vv, _), r in fold[split].items() if vv == v]
        rows[VARIANT_LABELS[v]] = {
            m: _mean_sd([off_diagonal_mean(r[m]).mean() for r in runs])
            for m in ("psnr", "ssim")
        }
    return pd.DataFrame.from_dict(rows, orient="index")
