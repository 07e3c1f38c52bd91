"""One home for the book's statistics: intervals whose variance comes from the units that are independent.

A result measured on many *items* (test images, patches, slices, voxels) is not measured on many
independent observations when the items come in groups: the patches of one person share that
person's anatomy, the slices of one volume share its scanner, and every test image is scored by
the *same* trained network, which another training seed would have made differently. An interval
that treats the items as independent is then too narrow: it describes the items of this one run,
not the result a reader would get with another seed or another person.

The units that are independent here are

* **seeds**: training runs, each with its own initialisation and batch order;
* **clusters**: people, cases or volumes; items of one cluster are correlated.

Every interval in this module is computed from those units. For a score ``d[s, i]`` (seed ``s``,
item ``i`` in cluster ``c(i)``) the estimate is the mean over seeds and items, and its variance
follows the two-way random-effects model ``d = mu + a_s + b_c + e_sc`` (seeds crossed with
clusters): ``Var(mean) = var_a / S + var_b / C + var_e / (S C)``, estimated without bias from the
mean squares of the seed-by-cluster table, ``(MS_seed + MS_cluster - MS_resid) / (S C)``, with
Satterthwaite's degrees of freedom for a *t* interval. With one seed it is the familiar
cluster-level *t* interval (``df = C - 1``); with one cluster, the *t* interval over seeds. With
few units the *t* quantile is large, and that is the honest answer: three seeds cannot pin a mean
down. :func:`statistic_difference` does the same for statistics that are not means of items
(AUROC), with a bootstrap over clusters for the test-set part.

``tests/test_stats.py`` checks coverage on simulations with a known answer (nominal 95 % gives
93-97 %) and shows that an item-level bootstrap on clustered data covers far less often.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _st


class StatsError(ValueError):
    """Scores that cannot give an interval; the message says what is wrong with them."""


def _as_2d(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise StatsError(
            f"{name}: expected scores of shape (seeds, items) or (items,), got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise StatsError(
            f"{name}: contains NaN or infinite scores (e.g. PSNR of a perfect reconstruction)"
        )
    return arr


def _cluster_codes(clusters, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    if clusters is None:
        return np.arange(n_items), np.arange(n_items)
    labels = np.asarray(clusters)
    if labels.shape != (n_items,):
        raise StatsError(
            f"clusters: expected one label per item ({n_items}), got shape {labels.shape}"
        )
    names, codes = np.unique(labels, return_inverse=True)
    return names, codes


def t_interval(values, confidence: float = 0.95) -> dict:
    """Mean of independent unit values (one per seed, fold or person) with a *t* interval.

    Use it when each unit gives one number (a per-seed difference, a per-fold accuracy)."""
    v = np.asarray(values, dtype=float).ravel()
    if v.size < 2:
        raise StatsError(
            f"an interval needs at least two independent units, got {v.size}"
        )
    if not np.isfinite(v).all():
        raise StatsError("unit values contain NaN or infinite numbers")
    se = float(v.std(ddof=1) / np.sqrt(v.size))
    return _finish(
        float(v.mean()),
        se,
        v.size - 1.0,
        confidence,
        n_seeds=v.size,
        n_clusters=1,
        n_items=v.size,
    )


def _finish(mean: float, se: float, df: float, confidence: float, **counts) -> dict:
    q = float(_st.t.ppf(0.5 + confidence / 2, df)) if se > 0 else 0.0
    return {
        "mean": mean,
        "low": mean - q * se,
        "high": mean + q * se,
        "se": se,
        "df": float(df),
        **counts,
    }


def mean_interval(values, clusters=None, confidence: float = 0.95) -> dict:
    """Mean of ``values`` (``(seeds, items)`` or ``(items,)``) with an interval over
    seeds and clusters.

    ``clusters`` labels each item's independent unit (person, case, volume); ``None``
    means every item is its own unit (independent test images). Returns ``mean``,
    ``low``, ``high``, ``se``, ``df`` and the counts ``n_seeds``, ``n_clusters``,
    ``n_items``. The mean weights every item equally; the variance is that of the
    seeds-by-clusters table of item totals (a ratio estimator, so clusters of different
    sizes are handled), see the module docstring."""
    d = _as_2d(values, "values")
    n_seeds, n_items = d.shape
    names, codes = _cluster_codes(clusters, n_items)
    n_clusters = len(names)
    if n_seeds < 2 and n_clusters < 2:
        raise StatsError(
            "an interval needs at least two seeds or two clusters (people, cases, images)"
        )
    mean = float(d.mean())
    sizes = np.bincount(codes, minlength=n_clusters).astype(float)
    totals = np.stack(
        [np.bincount(codes, weights=row, minlength=n_clusters) for row in d]
    )
    # linearised cluster values: r[s, c] has mean `mean` and carries each cluster's
    # weight
    r = mean + (totals - mean * sizes) / sizes.mean()
    counts = {"n_seeds": n_seeds, "n_clusters": n_clusters, "n_items": n_items}
    if n_seeds == 1:
        se = float(r[0].std(ddof=1) / np.sqrt(n_clusters))
        return _finish(mean, se, n_clusters - 1.0, confidence, **counts)
    if n_clusters == 1:
        se = float(r[:, 0].std(ddof=1) / np.sqrt(n_seeds))
        return _finish(mean, se, n_seeds - 1.0, confidence, **counts)
    seed_means, cluster_means = r.mean(1), r.mean(0)
    ms_seed = n_clusters * seed_means.var(ddof=1)
    ms_cluster = n_seeds * cluster_means.var(ddof=1)
    resid = r - seed_means[:, None] - cluster_means[None, :] + r.mean()
    df_resid = (n_seeds - 1) * (n_clusters - 1)
    ms_resid = float((resid**2).sum() / df_resid)
    # unbiased estimate of Var(mean); never below what either factor alone shows
    combo = ms_seed + ms_cluster - ms_resid
    floor = max(ms_seed, ms_cluster)
    var_num = max(combo, floor)
    se = float(np.sqrt(var_num / (n_seeds * n_clusters)))
    if combo >= floor:
        denom = (
            ms_seed**2 / (n_seeds - 1)
            + ms_cluster**2 / (n_clusters - 1)
            + ms_resid**2 / df_resid
        )
        df = combo**2 / denom if denom > 0 else float(n_seeds * n_clusters - 1)
    else:
        df = float(n_seeds - 1 if ms_seed >= ms_cluster else n_clusters - 1)
    return _finish(mean, se, max(df, 1.0), confidence, **counts)


def paired_difference(a, b, clusters=None, confidence: float = 0.95) -> dict:
    """Mean of ``a - b`` for two methods scored on the same items with the same seeds, with the
    interval of :func:`mean_interval` (a random-effects interval over seeds and clusters, never over
    items alone).

    ``a`` and ``b`` are ``(seeds, items)`` or ``(items,)``; seed ``s`` of ``a`` is paired with seed ``s``
    of ``b`` (trained with the same seed) and item ``i`` with item ``i``. Besides the interval the
    result has ``per_seed`` (the mean difference of each seed) and ``a_better``: the share of units
    (seeds, if there are several, else clusters) on which ``a`` is ahead."""
    a2, b2 = _as_2d(a, "a"), _as_2d(b, "b")
    if a2.shape != b2.shape:
        raise StatsError(
            f"paired scores must have the same shape, got {a2.shape} and {b2.shape}"
        )
    diff = a2 - b2
    out = mean_interval(diff, clusters, confidence)
    per_seed = diff.mean(1)
    if len(per_seed) > 1:
        better = float((per_seed > 0).mean())
    else:
        _, codes = _cluster_codes(clusters, diff.shape[1])
        per_cluster = np.bincount(codes, weights=diff[0]) / np.bincount(codes)
        better = float((per_cluster > 0).mean())
    return {**out, "per_seed": [float(x) for x in per_seed], "a_better": better}


def statistic_difference(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    labels,
    a,
    b,
    clusters=None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """``statistic(labels, scores)`` of ``a`` minus that of ``b``, averaged over seeds, for statistics
    that are not a mean of items (AUROC).

    ``a`` and ``b`` are ``(seeds, items)`` scores on the same test items. The variance has two parts,
    added: the test-set part, a bootstrap over clusters (items, if ``clusters`` is None) of the
    seed-averaged difference, the same draw for ``a`` and ``b``; and the training part, the variance
    of the per-seed differences divided by the number of seeds. The interval is a *t* interval with
    Satterthwaite's degrees of freedom. Resamples in which ``statistic`` is undefined (one class only)
    are skipped for both methods alike."""
    labels = np.asarray(labels).ravel()
    a2, b2 = _as_2d(a, "a"), _as_2d(b, "b")
    if a2.shape != b2.shape or a2.shape[1] != labels.size:
        raise StatsError(
            f"scores {a2.shape} and {b2.shape} do not match {labels.size} labels"
        )
    names, codes = _cluster_codes(clusters, labels.size)
    members = [np.flatnonzero(codes == k) for k in range(len(names))]

    def diff_at(idx):
        return [
            statistic(labels[idx], ra[idx]) - statistic(labels[idx], rb[idx])
            for ra, rb in zip(a2, b2, strict=True)
        ]

    per_seed = np.asarray(diff_at(np.arange(labels.size)), dtype=float)
    rng = np.random.default_rng(seed)
    boot = []
    for draw in rng.integers(0, len(members), size=(n_resamples, len(members))):
        idx = np.concatenate([members[k] for k in draw])
        values = diff_at(idx)
        if np.isfinite(values).all():
            boot.append(float(np.mean(values)))
    if len(boot) < n_resamples // 2:
        raise StatsError(
            "the statistic is undefined on most resamples (too few items of one class)"
        )
    var_test = float(np.var(boot, ddof=1))
    n_seeds = len(per_seed)
    var_seed = float(per_seed.var(ddof=1) / n_seeds) if n_seeds > 1 else 0.0
    var = var_test + var_seed
    parts = [(var_test, len(members) - 1.0)] + (
        [(var_seed, n_seeds - 1.0)] if n_seeds > 1 else []
    )
    denom = sum(v**2 / df for v, df in parts if v > 0)
    df = var**2 / denom if denom > 0 else float(len(members) - 1)
    counts = {"n_seeds": n_seeds, "n_clusters": len(members), "n_items": labels.size}
    out = _finish(
        float(per_seed.mean()), float(np.sqrt(var)), max(df, 1.0), confidence, **counts
    )
    return {
        **out,
        "per_seed": [float(x) for x in per_seed],
        "a_better": float((per_seed > 0).mean()),
    }


def item_bootstrap(
    values,
    clusters=None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """The interval this module replaces, kept to show what goes wrong: a percentile bootstrap of the
    mean that resamples *items* as if they were independent (seed-averaged first). On clustered data
    or with training noise it is too narrow; ``tests/test_stats.py`` measures how often it misses.
    ``clusters`` is accepted and ignored, which is exactly the mistake."""
    d = _as_2d(values, "values").mean(0)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_resamples, d.size))].mean(1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {"mean": float(d.mean()), "low": float(low), "high": float(high)}


def simulate_crossed(
    rng: np.random.Generator,
    n_seeds: int,
    n_clusters: int,
    per_cluster: int,
    sd_seed: float,
    sd_cluster: float,
    sd_inter: float = 0.0,
    sd_item: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(seeds, items)`` drawn from the two-way model with true mean 0, and each item's
    cluster label: a seed effect shared by all items of a run, a cluster effect shared by the items
    of a person, their interaction and item noise. Used to measure coverage (:func:`coverage`)."""
    seed = rng.normal(0, sd_seed, (n_seeds, 1, 1))
    cluster = rng.normal(0, sd_cluster, (1, n_clusters, 1))
    inter = rng.normal(0, sd_inter, (n_seeds, n_clusters, 1))
    item = rng.normal(0, sd_item, (n_seeds, n_clusters, per_cluster))
    values = (seed + cluster + inter + item).reshape(n_seeds, -1)
    return values, np.repeat(np.arange(n_clusters), per_cluster)


def coverage(interval: Callable, n_rep: int = 1000, seed: int = 0, **design) -> float:
    """How often ``interval(values, clusters)`` contains the true mean 0 over ``n_rep`` data sets drawn
    by :func:`simulate_crossed` with ``design``: 0.95 for an honest 95 % interval."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_rep):
        values, clusters = simulate_crossed(rng, **design)
        r = interval(values, clusters)
        hits += r["low"] <= 0 <= r["high"]
    return hits / n_rep


def per_unit_table(values: dict, units: Sequence[str], unit_name: str = "fold"):
    """A DataFrame with one row per unit (fold, person, seed) and one column per method, for showing the
    numbers an interval summarises; ``values`` maps method -> one number per unit."""
    import pandas as pd

    for method, v in values.items():
        if len(v) != len(units):
            raise StatsError(f"{method}: {len(v)} values for {len(units)} {unit_name}s")
    return pd.DataFrame(
        {m: list(map(float, v)) for m, v in values.items()},
        index=pd.Index(units, name=unit_name),
    )


def verdict(result: dict, unit: str = "", zero: float = 0.0) -> str:
    """How the book reads an interval, in one phrase: "above zero", "below zero" or "not detectable at
    this size", with the interval. ``unit`` is appended to the numbers (e.g. " dB")."""
    mean, low, high = result["mean"], result["low"], result["high"]
    numbers = f"{mean:+.3g}{unit} [{low:+.3g}, {high:+.3g}]"
    if low > zero:
        return f"above {zero:g}: {numbers}"
    if high < zero:
        return f"below {zero:g}: {numbers}"
    return f"not detectable at this size: {numbers}"
