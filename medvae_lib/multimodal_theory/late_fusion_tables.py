"""Statistics and tables of the late-fusion sweep: accuracy per subset and fraction,
intervals and paired comparisons per held-out person and pooled, and what the folds
allow the chapter to conclude."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .settings import BRAIN_MODALITIES, parse_subset


def late_fusion_table(results: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """Mean (and standard deviation over seeds and held-out people) of ``value``: subsets x fractions."""
    g = results.groupby(["subset", "fraction"])[value]
    table = g.mean().unstack("fraction")
    order = sorted(
        table.index, key=lambda s: (len(parse_subset(s, BRAIN_MODALITIES)), s)
    )
    return table.loc[order]


def _stacked(part: pd.DataFrame, subset: str, column: str) -> np.ndarray:
    """(seeds, items) array of a per-patch column for one subset, seeds in order."""
    rows = part[
        part["subset"] == "+".join(parse_subset(subset, BRAIN_MODALITIES))
    ].sort_values("seed")
    if rows.empty:
        raise ValueError(f"subset {subset!r} is not in the results")
    return np.stack(list(rows[column])).astype(float)


def late_fusion_intervals(
    results: pd.DataFrame, column: str = "correct"
) -> pd.DataFrame:
    """Mean of a per-patch column (``correct``: test accuracy; ``refit correct``) per subset, fraction
    and held-out person, with the interval of ``stats.mean_interval`` over seeds crossed with slices
    (the patches of a slice are correlated); and ``pooled`` over the people: seeds crossed with
    people, each person a cluster. Long form: one row per subset, fraction and fold."""
    from .. import stats

    rows = []
    for (subset, fraction), part in results.groupby(["subset", "fraction"]):
        folds = {p: g for p, g in part.groupby("test person", sort=True)}
        for person, g in folds.items():
            r = stats.mean_interval(_stacked(g, subset, column), g["groups"].iloc[0])
            rows.append(
                {"subset": subset, "fraction": fraction, "fold": person, **_numbers(r)}
            )
        if len(folds) > 1:
            values = np.concatenate(
                [_stacked(g, subset, column) for g in folds.values()], axis=1
            )
            people = np.concatenate(
                [[p] * len(g["correct"].iloc[0]) for p, g in folds.items()]
            )
            r = stats.mean_interval(values, people)
            rows.append(
                {
                    "subset": subset,
                    "fraction": fraction,
                    "fold": "pooled",
                    **_numbers(r),
                }
            )
    return pd.DataFrame(rows)


def _numbers(r: dict) -> dict:
    return {k: r[k] for k in ("mean", "low", "high", "df")}


def late_fusion_comparisons(
    results: pd.DataFrame, pairs, column: str = "correct"
) -> pd.DataFrame:
    """Paired differences of a per-patch column, subset ``a`` minus subset ``b`` for each ``(a, b)`` in
    ``pairs``, per fraction and held-out person (``stats.paired_difference``, seeds crossed with slices)
    and pooled over the people (seeds crossed with people). Long form with ``verdict``
    (``stats.verdict``) and the per-seed differences."""
    from .. import stats

    rows = []
    for a, b in pairs:
        name = f"{a} minus {b}"
        for fraction, part in results.groupby("fraction"):
            folds = {p: g for p, g in part.groupby("test person", sort=True)}
            cells = []
            for person, g in folds.items():
                d = stats.paired_difference(
                    _stacked(g, a, column), _stacked(g, b, column), g["groups"].iloc[0]
                )
                cells.append((person, d))
            if len(folds) > 1:
                xa = np.concatenate(
                    [_stacked(g, a, column) for g in folds.values()], axis=1
                )
                xb = np.concatenate(
                    [_stacked(g, b, column) for g in folds.values()], axis=1
                )
                people = np.concatenate(
                    [[p] * len(g["correct"].iloc[0]) for p, g in folds.items()]
                )
                cells.append(("pooled", stats.paired_difference(xa, xb, people)))
            for fold, d in cells:
                rows.append(
                    {
                        "comparison": name,
                        "fraction": fraction,
                        "fold": fold,
                        **_numbers(d),
                        "verdict": stats.verdict(d),
                        "per seed": [round(x, 4) for x in d["per_seed"]],
                    }
                )
    return pd.DataFrame(rows)


def fold_conclusion(lows, highs) -> str:
    """What the folds (one interval each) allow the chapter to say: a direction only where every fold's
    interval excludes 0 on the same side; "not detectable in any fold" where none does; otherwise
    "depends on the person"."""
    lows, highs = np.asarray(lows, float), np.asarray(highs, float)
    if (lows > 0).all():
        return "ahead in every fold"
    if (highs < 0).all():
        return "behind in every fold"
    if ((lows <= 0) & (highs >= 0)).all():
        return "not detectable in any fold"
    return "depends on the person"


def comparison_table(long: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The comparisons of :func:`late_fusion_comparisons` as one row per comparison and fraction:
    ``mean [low, high]`` per fold and pooled, and the :func:`fold_conclusion` of the folds."""
    rows = {}
    for (name, fraction), part in long.groupby(["comparison", "fraction"], sort=False):
        folds = part[part["fold"] != "pooled"]
        row = {
            r.fold: f"{r.mean:+.{digits}f} [{r.low:+.{digits}f}, {r.high:+.{digits}f}]"
            for r in part.itertuples()
        }
        row["conclusion"] = fold_conclusion(folds["low"], folds["high"])
        rows[(name, fraction)] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["comparison", "fraction"]
    return table


def interval_table(long: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`late_fusion_intervals` as ``mean [low, high]`` strings: (fold, subset) x fraction."""
    text = long.assign(
        cell=[
            f"{r.mean:.{digits}f} [{r.low:.{digits}f}, {r.high:.{digits}f}]"
            for r in long.itertuples()
        ]
    )
    table = text.pivot(index=["fold", "subset"], columns="fraction", values="cell")
    order = sorted(
        table.index, key=lambda k: (k[0] == "pooled", k[0], len(k[1].split("+")), k[1])
    )
    return table.loc[order]
