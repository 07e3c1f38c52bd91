"""Statistics over the folds: per-item scores, paired comparisons with 95% intervals
(:mod:`medvae_lib.stats`), and the comparison, verdict, person-gap and summary tables
built from them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .settings import VARIANT_LABELS
from .synthesis import off_diagonal_mean


def item_scores(fold: dict, what: str, metric: str = "psnr") -> np.ndarray:
    """(seeds, test items) cross-contrast scores (mean of the 12 source != target pairs) of one fold.

    ``what``: a variant; ``"constant"``, the trivial control (the same for every seed);
    ``"<variant>:none"``, ``"<variant>:zero"``, ``"<variant>:swap"``: PSNR of the swap and zero
    tests of X_h (``metric`` must then be "psnr")."""
    seeds = sorted({s for _, s in fold["test"]})
    if what == "constant":
        row = off_diagonal_mean(fold["control"]["constant"][metric])
        return np.repeat(row[None], len(seeds), 0)
    if ":" in what:
        variant, replace = what.split(":")
        if metric != "psnr":
            raise ValueError("the swap and zero tests are scored in PSNR")
        return np.stack([fold["dependence"][variant, s][replace] for s in seeds])
    return np.stack([off_diagonal_mean(fold["test"][what, s][metric]) for s in seeds])


def _fold_people(fold: dict) -> list[str]:
    """A fold's test people (a fold without the list: its one ``person``)."""
    return fold.get("people", [fold["person"]])


def test_people(folds: list[dict]) -> list[str]:
    """Every fold's test people, in order: one per fold in CI mode's leave-one-out folds,
    all the held-out people of full mode's one split."""
    return [p for f in folds for p in _fold_people(f)]


def test_patients(folds: list[dict]) -> list[str]:
    """The patient of each of :func:`test_people` (BraTS names a patient's repeat scans
    ``-000``, ``-001``): the clusters of intervals over people."""
    from .splits import patient_of

    return [patient_of(p) for p in test_people(folds)]


def _item_people(fold: dict, n: int) -> list[str]:
    """The person of each of a fold's ``n`` test items (clusters for the intervals)."""
    people = fold.get("item_people")
    if people is None:
        return [fold["person"]] * n
    if len(people) != n:
        raise ValueError(f"{len(people)} item people for {n} test items")
    return list(people)


def compare(folds: list[dict], a: str, b: str, metric: str = "psnr") -> dict:
    """``a`` minus ``b`` (see :func:`item_scores`) in every fold and pooled over the folds.

    The test items are clustered by person (:func:`medvae_lib.stats.paired_difference`):
    within a leave-one-out fold they are the slices of one person, so the interval is over
    the seeds; full mode's one split holds many people, so its interval is over seeds
    crossed with people, as the pooled one is. ``pooled`` is None with one person only.
    ``agree`` says whether every fold's interval lies on the same side of zero ("above 0",
    "below 0"), else "no"."""
    from .. import stats

    per_fold, a_all, b_all, people = {}, [], [], []
    for fold in folds:
        fa, fb = item_scores(fold, a, metric), item_scores(fold, b, metric)
        who = _item_people(fold, fa.shape[1])
        per_fold[fold["person"]] = stats.paired_difference(fa, fb, clusters=who)
        a_all.append(fa), b_all.append(fb), people.extend(who)
    pooled = None
    if len(set(people)) > 1:
        pooled = stats.paired_difference(
            np.concatenate(a_all, 1), np.concatenate(b_all, 1), clusters=people
        )
    sides = {
        "above 0" if r["low"] > 0 else "below 0" if r["high"] < 0 else "no"
        for r in per_fold.values()
    }
    agree = sides.pop() if len(sides) == 1 else "no"
    return {"folds": per_fold, "pooled": pooled, "agree": agree}


def _interval(r: dict, digits: int = 3, sign: str = "+") -> str:
    """``mean [low, high]``; ``sign="+"`` for differences, ``""`` for levels."""
    return f"{r['mean']:{sign}.{digits}f} [{r['low']:{sign}.{digits}f}, {r['high']:{sign}.{digits}f}]"


def comparison_table(
    folds: list[dict], pairs: dict[str, tuple[str, str]], metric: str = "psnr"
) -> pd.DataFrame:
    """One row per comparison and test person (and "pooled"): the mean difference with its 95%
    interval (over seeds within a fold, over seeds and people pooled) and the per-seed means."""
    rows = []
    for label, (a, b) in pairs.items():
        c = compare(folds, a, b, metric)
        parts = list(c["folds"].items()) + (
            [("pooled", c["pooled"])] if c["pooled"] else []
        )
        for person, r in parts:
            rows.append(
                {
                    "comparison": label,
                    "test person": person,
                    "difference [95% interval]": _interval(r),
                    "per seed": " ".join(f"{x:+.3f}" for x in r["per_seed"]),
                }
            )
    return pd.DataFrame(rows).set_index(["comparison", "test person"])


def verdict_table(
    folds: list[dict],
    pairs: dict[str, tuple[str, str]],
    metric: str = "psnr",
    unit: str = "",
) -> pd.DataFrame:
    """Per comparison: how the book reads the pooled interval (:func:`medvae_lib.stats.verdict`) and
    whether every fold agrees. A conclusion is drawn only where both say the same."""
    from .. import stats

    rows = {}
    for label, (a, b) in pairs.items():
        c = compare(folds, a, b, metric)
        rows[label] = {
            "pooled": stats.verdict(c["pooled"], unit) if c["pooled"] else "-",
            "every fold": c["agree"],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def gap_values(folds: list[dict], what: str) -> np.ndarray:
    """(seeds, test people) gap of section 7.8 (people as :func:`test_people` lists them):
    a variant's X_h, or a control ("pixels", "mask"; the same for every seed)."""
    seeds = sorted({s for _, s in folds[0]["test"]})
    tested = [(f, p) for f in folds for p in _fold_people(f)]
    if what in ("pixels", "mask"):
        row = [f["control"]["agreement"][what][p]["gap"] for f, p in tested]
        return np.repeat([row], len(seeds), 0)
    return np.array(
        [[f["agreement"][what, s][p]["gap"] for f, p in tested] for s in seeds]
    )


def gap_table(folds: list[dict], variants, controls=("pixels", "mask")) -> pd.DataFrame:
    """The person gap of every model and trivial encoder: per test person (mean over seeds), pooled with
    a 95% interval over seeds and people, and (for models) the difference to the brain mask alone."""
    from .. import stats

    labels = {
        "pixels": "raw pixels, pooled to X_h's size",
        "mask": "brain mask alone, pooled",
    }
    people, patients = test_people(folds), test_patients(folds)
    rows = {}
    for what in list(variants) + list(controls):
        g = gap_values(folds, what)
        row = {p: f"{v:.3f}" for p, v in zip(people, g.mean(0), strict=True)}
        if what in controls:
            row["pooled [95% interval]"] = (
                f"{g.mean():.3f} (no training: one value per person)"
            )
            row["minus mask [95% interval]"] = "-"
        else:
            row["pooled [95% interval]"] = _interval(
                stats.mean_interval(g, clusters=patients), sign=""
            )
            mask = gap_values(folds, "mask")
            d = stats.paired_difference(g, mask, clusters=patients)
            row["minus mask [95% interval]"] = _interval(d)
        rows[labels.get(what, VARIANT_LABELS.get(what, what))] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def fold_summary(folds: list[dict], metric: str = "psnr") -> pd.DataFrame:
    """Cross-contrast score of every variant and the constant control, per test person (mean over
    seeds) and pooled with a 95% interval over seeds and people."""
    from .. import stats

    variants = list(dict.fromkeys(v for v, _ in folds[0]["test"])) + ["constant"]
    rows = {}
    for v in variants:
        per = [item_scores(f, v, metric) for f in folds]
        row = {f["person"]: f"{x.mean():.3f}" for f, x in zip(folds, per, strict=True)}
        people = [
            p
            for f, x in zip(folds, per, strict=True)
            for p in _item_people(f, x.shape[1])
        ]
        if len(set(people)) > 1:
            pooled = stats.mean_interval(np.concatenate(per, 1), clusters=people)
            row["pooled [95% interval]"] = _interval(pooled, sign="")
        rows[VARIANT_LABELS.get(v, "constant image (control)")] = row
    return pd.DataFrame.from_dict(rows, orient="index")
