"""Tables and statistics of the simulation sweeps: Theorems 1 and 2, the crossover of
fewer against more modalities (with Wilson and paired intervals), and the overlap chain
of the paper's Table 4."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .settings import MODALITIES, nested_pairs, parse_subset, subset_name


def summarise(results: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``value``, one row per subset and m."""
    out = (
        results.groupby(["subset", "size", "m"])[value]
        .agg(["mean", "std"])
        .reset_index()
    )
    return out.sort_values(["size", "subset", "m"]).reset_index(drop=True)


def theorem1_table(results: pd.DataFrame) -> pd.DataFrame:
    """For every nested pair N ⊂ M, every m and every training sample S (seed): the
    observed risk gap r(M) - r(N), gamma_S(M, N) = eta(g_M) - eta(g_N) on the same S,
    and whether their signs agree."""
    wide = results.set_index(["seed", "m", "subset"])[["excess risk", "eta"]]
    rows = []
    for n, m_ in nested_pairs(results["subset"].unique()):
        big = wide.xs(m_, level="subset")
        small = wide.xs(n, level="subset")
        gap = big["excess risk"] - small["excess risk"]
        gamma = big["eta"] - small["eta"]
        rows.append(
            pd.DataFrame(
                {
                    "N": n,
                    "M": m_,
                    "risk gap": gap,
                    "gamma_S": gamma,
                    "same sign": np.sign(gap) == np.sign(gamma),
                }
            )
        )
    return pd.concat(rows).reset_index()


def theorem1_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per m, over all nested pairs and seeds: how often M has the lower risk, the better latent
    (gamma_S < 0), and how often the two signs agree; and the median of |gap - gamma_S|."""
    g = table.groupby("m")
    return pd.DataFrame(
        {
            "cases": g.size(),
            "M lower risk": g["risk gap"].apply(lambda s: float((s < 0).mean())),
            "gamma_S < 0": g["gamma_S"].apply(lambda s: float((s < 0).mean())),
            "signs agree": g["same sign"].mean(),
            "median |gap - gamma_S|": (table["risk gap"] - table["gamma_S"])
            .abs()
            .groupby(table["m"])
            .median(),
        }
    )


def theorem2_table(
    results: pd.DataFrame, sizes=None, radius: float | None = None
) -> pd.DataFrame:
    """The pieces of Theorem 2 per subset size and m (medians over seeds and the subsets
    of a size): eta(g_M), the empirical risk difference L_S(h_M∘g_M) - L_S(h*∘g*) on the
    training sample, what eta exceeds it by, and 4 (R_M + R_all) with the Lipschitz
    constant L set to 1.

    ``results["rademacher"]`` is the complexity of the ball of radius ``radius``. If
    ``radius`` is given, the complexity is rescaled (it is linear in the radius) to the
    smallest ball that holds every trained map at that m, ``max(radius, largest
    ||h∘g||_F over subsets and seeds)``, so that the class contains the models ERM
    returned; that ball is chosen after seeing them, which the theorem does not
    allow."""
    df = results.copy()
    df["empirical gap"] = df["train risk"] - df["train risk of h*∘g*"]
    df["eta - empirical gap"] = df["eta"] - df["empirical gap"]
    if radius is not None:
        ball = df.groupby("m")["norm"].transform("max").clip(lower=radius)
        df["rademacher"] = df["rademacher"] * ball / radius
    everything = df[df["size"] == len(MODALITIES)].set_index(["seed", "m"])[
        "rademacher"
    ]
    df["4 (R_M + R_all)"] = 4 * (
        df["rademacher"]
        + everything.loc[list(zip(df.seed, df.m, strict=True))].to_numpy()
    )
    if sizes is not None:
        df = df[df["m"].isin(sizes)]
    cols = ["eta", "empirical gap", "eta - empirical gap", "4 (R_M + R_all)"]
    return df.groupby(["size", "m"])[cols].median()


def crossover(results: pd.DataFrame, small: str, large: str) -> pd.DataFrame:
    """Median (over seeds) excess risk of two subsets per m, and which is lower."""
    med = (
        results.groupby(["m", "subset"])["excess risk"]
        .median()
        .unstack()[[small, large]]
    )
    med["fewer modalities win"] = med[small] < med[large]
    return med


def wilson_interval(
    successes: int, n: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson's score interval for a proportion (``medvae_lib.stats`` has none for counts)."""
    from scipy import stats as st

    if n < 1:
        raise ValueError("a proportion needs at least one trial")
    z = float(st.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return float(centre - half), float(centre + half)


def crossover_intervals(results: pd.DataFrame, small: str, large: str) -> pd.DataFrame:
    """Per m, the two subsets trained on the same samples (seeds), compared over the seeds.

    Each seed is an independent training sample, so the seeds are the units: ``share`` is the share of
    seeds on which ``small`` has the lower excess risk, with Wilson's interval; ``log ratio`` is the
    paired mean of log(excess risk of small / of large) with the *t* interval of
    ``stats.paired_difference`` (on the log scale, so that the interpolation spikes, where single
    risks run into the hundreds, do not decide the mean). ``verdict`` says "fewer modalities win"
    only when both intervals say so, "more modalities win" when both say the opposite, and otherwise
    "not detectable at this size". The columns ``mean <subset>`` show the spikes the medians hide."""
    from .. import stats

    rows = []
    for m, part in results.groupby("m"):
        wide = part.pivot(index="seed", columns="subset", values="excess risk")
        a, b = wide[small].to_numpy(), wide[large].to_numpy()
        wins = int((a < b).sum())
        low, high = wilson_interval(wins, len(a))
        d = stats.paired_difference(
            np.log(np.maximum(a, 1e-12)), np.log(np.maximum(b, 1e-12))
        )
        fewer = d["high"] < 0 and low > 0.5
        more = d["low"] > 0 and high < 0.5
        rows.append(
            {
                "m": m,
                f"median {small}": float(np.median(a)),
                f"median {large}": float(np.median(b)),
                f"mean {large}": float(np.mean(b)),
                "share": wins / len(a),
                "share low": low,
                "share high": high,
                "log ratio": d["mean"],
                "low": d["low"],
                "high": d["high"],
                "verdict": "fewer modalities win"
                if fewer
                else "more modalities win"
                if more
                else "not detectable",
            }
        )
    return pd.DataFrame(rows).set_index("m")


def chain_table(overlap_table: pd.DataFrame, chain) -> pd.DataFrame:
    """The design of the paper's Table 4: eta of a chain of nested subsets (rows: number of modalities)
    against the overlap (columns, from 1 down to 0), for ERM at the sweep's m and at infinite data."""
    names = [subset_name(c) for c in chain]
    part = overlap_table[overlap_table["subset"].isin(names)]
    blocks = {}
    for column in ("eta (ERM, m)", "eta (infinite data)"):
        wide = part.pivot(index="subset", columns="overlap", values=column).loc[names]
        wide.index = pd.Index([len(parse_subset(n)) for n in names], name="modalities")
        blocks[column] = wide[sorted(wide.columns, reverse=True)]
    return pd.concat(blocks, names=["", "modalities"])
