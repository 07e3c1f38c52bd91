"""Sweeps over the simulation: train by ERM for every subset, sample size and seed and
measure risk and ``eta``; and the same against the modalities' overlap."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from .learning import fit_erm, fit_ridge_erm
from .quality import (
    eta_exact,
    eta_population,
    eta_sampled,
    linear_map,
    rademacher_linear,
    risk_exact,
    risk_sampled,
)
from .settings import parse_subset, subset_name
from .simulator import Problem, sample, true_encoder


def sweep(
    problem: Problem,
    subsets,
    sizes,
    seeds: int,
    seed: int = 0,
    eval_samples: int = 20_000,
    rademacher_draws: int = 0,
    estimator: str = "min-norm",
) -> pd.DataFrame:
    """Train h∘g by ERM for every subset, sample size and seed; measure test risk and eta.

    ``estimator`` is ``"min-norm"`` (:func:`fit_erm`) or ``"ridge"`` (:func:`fit_ridge_erm`). Linear
    views use the closed forms; nonlinear views estimate both on two fresh samples of
    ``eval_samples`` draws (the same for every subset and m of a seed, so differences are paired).
    ``norm`` is the Frobenius norm of the trained map h∘g."""
    fits = {"min-norm": fit_erm, "ridge": fit_ridge_erm}
    if estimator not in fits:
        raise ValueError(
            f"unknown estimator {estimator!r}; choose one of {sorted(fits)}"
        )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(
        1
    ):  # small matrices: one BLAS thread is faster than several competing
        return _sweep(
            problem,
            subsets,
            sizes,
            seeds,
            seed,
            eval_samples,
            rademacher_draws,
            fits[estimator],
        )


def _sweep(
    problem, subsets, sizes, seeds, seed, eval_samples, rademacher_draws, fit
) -> pd.DataFrame:
    exact = not problem.nonlinear
    radius = float(np.linalg.norm(problem.arrays["h_star"] @ problem.arrays["g_star"]))
    rows = []
    for s in range(seeds):
        run_seed = seed * 1000 + s
        if not exact:
            rng_eval = np.random.default_rng([run_seed, 1])
            fit_set, test_set = (
                sample(problem, eval_samples, rng_eval),
                sample(problem, eval_samples, rng_eval),
            )
        for m in sizes:
            x, y = sample(problem, m, np.random.default_rng([run_seed, 0, m]))
            for subset in subsets:
                learned = fit(problem, x, y, subset)
                if exact:
                    risk, eta = (
                        risk_exact(problem, linear_map(learned)),
                        eta_exact(problem, learned.encoder),
                    )
                else:
                    risk, eta = (
                        risk_sampled(learned, *test_set),
                        eta_sampled(learned, fit_set, test_set),
                    )
                row = {
                    "subset": learned.subset,
                    "size": len(parse_subset(subset)),
                    "m": m,
                    "seed": s,
                    "excess risk": risk - problem.bayes_risk(),
                    "eta": eta,
                    "train risk": risk_sampled(learned, x, y),
                    "train risk of h*∘g*": float(
                        np.mean(
                            (y - true_encoder(problem, x) @ problem.arrays["h_star"].T)
                            ** 2
                        )
                    ),
                    "norm": float(np.linalg.norm(linear_map(learned))),
                }
                if learned.penalty is not None:
                    row["penalty"] = learned.penalty
                if rademacher_draws:
                    row["rademacher"] = rademacher_linear(
                        problem, x, subset, radius, rademacher_draws, run_seed
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def overlap_sweep(
    base: Problem, overlaps, subsets, m: int, seeds: int, seed: int = 0
) -> pd.DataFrame:
    """eta of the ERM encoder at sample size m and the best eta at infinite data, for every overlap w."""
    rows = []
    for w in overlaps:
        problem = replace(base, overlap=w)
        res = sweep(problem, subsets, [m], seeds, seed=seed)
        for subset in subsets:
            rows.append(
                {
                    "overlap": w,
                    "subset": subset_name(subset),
                    "size": len(parse_subset(subset)),
                    "eta (ERM, m)": res.loc[
                        res.subset == subset_name(subset), "eta"
                    ].mean(),
                    "eta (infinite data)": eta_population(problem, subset),
                }
            )
    return pd.DataFrame(rows)
