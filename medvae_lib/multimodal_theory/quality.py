"""Risks and latent representation quality ``eta`` of trained encoders on the
simulation (closed form for linear views, sampled for nonlinear ones), and the empirical
Rademacher complexity of the linear class."""

from __future__ import annotations

import numpy as np

from .learning import Learned
from .simulator import Problem, mask


def _population_cov(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """Cov(x) and the linear map A* = h* g* of the linear problem (y = A* x + noise)."""
    if problem.nonlinear:
        raise ValueError(
            "closed-form risks exist for the linear views only; use the sampled estimates"
        )
    return problem.arrays["cov_s"], problem.arrays["h_star"] @ problem.arrays["g_star"]


def linear_map(learned: Learned) -> np.ndarray:
    """The learned predictor h∘g as one matrix on the full input (zero columns outside the subset)."""
    return learned.head @ learned.encoder


def risk_exact(problem: Problem, a: np.ndarray) -> float:
    """r(f) for the linear predictor f(x) = A x: tr((A - A*) Cov(x) (A - A*)^T) / T + task_noise**2."""
    cov, a_star = _population_cov(problem)
    d = a - a_star
    return float(np.trace(d @ cov @ d.T) / problem.task_dim + problem.bayes_risk())


def eta_exact(problem: Problem, encoder: np.ndarray) -> float:
    """eta(g) for the linear encoder g(x) = G x (G: rep x inputs): the best head h = A* C G^T (G C G^T)^+."""
    cov, a_star = _population_cov(problem)
    gc = encoder @ cov
    best = a_star @ gc.T @ np.linalg.pinv(gc @ encoder.T, rcond=1e-12) @ gc @ a_star.T
    return float(
        (np.trace(a_star @ cov @ a_star.T) - np.trace(best)) / problem.task_dim
    )


def eta_population(problem: Problem, subset) -> float:
    """The best eta any rank-``rep_dim`` linear encoder of p_M(x) reaches (infinite
    data): the part of A* x that the top ``rep_dim`` directions of E[A* x | x_M] leave
    unexplained."""
    cov, a_star = _population_cov(problem)
    cols = problem.columns(subset)
    c = a_star @ cov[:, cols]
    explained = np.linalg.eigvalsh(c @ np.linalg.solve(cov[np.ix_(cols, cols)], c.T))[
        ::-1
    ][: problem.rep_dim]
    return float(
        (np.trace(a_star @ cov @ a_star.T) - explained.sum()) / problem.task_dim
    )


def risk_sampled(learned: Learned, x: np.ndarray, y: np.ndarray) -> float:
    """The mean squared error per output of h∘g on a (large, fresh) sample."""
    return float(np.mean((y - learned.predict(x)) ** 2))


def eta_sampled(learned: Learned, fit: tuple, test: tuple) -> float:
    """eta(g) estimated: g frozen, the best linear head (with intercept) fitted by least
    squares on the fresh sample ``fit`` and scored on the fresh sample ``test``, minus
    r(h*∘g*)."""
    u_fit = np.c_[learned.encode(fit[0]), np.ones(len(fit[0]))]
    head = np.linalg.lstsq(u_fit, fit[1], rcond=None)[0]
    u_test = np.c_[learned.encode(test[0]), np.ones(len(test[0]))]
    return float(np.mean((test[1] - u_test @ head) ** 2) - learned.problem.bayes_risk())


def rademacher_linear(
    problem: Problem, x: np.ndarray, subset, radius: float, draws: int, seed: int
) -> float:
    """Empirical Rademacher complexity of {x -> A p_M(x): ||A||_F <= radius}
    (vector-valued, T outputs): E_sigma sup_A (1/m) sum_i <sigma_i, A x_i> = (radius /
    m) E_sigma ||sum_i sigma_i x_i^T||_F."""
    rng = np.random.default_rng(seed)
    xm = mask(problem, x, subset)
    m = len(xm)
    sigma = rng.choice([-1.0, 1.0], size=(draws, m, problem.task_dim))
    norms = np.linalg.norm(
        np.einsum("dmt,mi->dti", sigma, xm).reshape(draws, -1), axis=1
    )
    return float(radius * norms.mean() / m)
