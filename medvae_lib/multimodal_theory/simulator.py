"""The simulated data-generating process: ``Problem`` (latent, modalities, true encoder
``g*`` and task map ``h*``), sampling from it, and masking the modalities outside a
subset."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .settings import MODALITIES, parse_subset


@dataclass(frozen=True)
class Problem:
    """The data-generating process: latent, modalities, true encoder ``g*`` and task map ``h*``."""

    overlap: float = 0.3  # how strongly a modality sees the other modalities' blocks of z (0: not, 1: fully)
    latent_dim: int = 8  # z ~ N(0, I); four blocks of two
    modality_dim: int = 8  # numbers per modality
    rep_dim: int = 2  # size of the representation g(x)
    task_dim: int = 4  # outputs of the task
    noise: float = 0.5  # noise of each modality
    task_noise: float = 0.5  # noise of the task: r(h*∘g*) = task_noise**2
    nonlinear: bool = False  # x = tanh(view) instead of the view itself
    problem_seed: int = 0  # draws the views' rotations and the task
    arrays: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError(f"overlap must lie in [0, 1], got {self.overlap}")
        k, d, p = len(MODALITIES), self.latent_dim, self.modality_dim
        if d % k:
            raise ValueError(f"latent_dim must be a multiple of {k}")
        rng = np.random.default_rng(self.problem_seed)
        block = d // k
        views = []
        for i in range(k):
            weights = np.full(d, self.overlap)
            weights[i * block : (i + 1) * block] = 1.0
            q, _ = np.linalg.qr(
                rng.standard_normal((p, d))
            )  # p x d with orthonormal columns (p >= d)
            views.append(q * weights)  # Q_k D_k
        w = np.vstack(views)  # (K p) x d
        # g*: the posterior mean of V^T z given all modalities (before the
        # nonlinearity); h*: a random U.
        v, _ = np.linalg.qr(rng.standard_normal((d, self.rep_dim)))
        u = rng.standard_normal((self.task_dim, self.rep_dim))
        cov_s = w @ w.T + self.noise**2 * np.eye(len(w))
        k_post = np.linalg.solve(cov_s, w).T  # d x (K p): E[z | s] = k_post s
        g_star = v.T @ k_post  # rep_dim x (K p)
        object.__setattr__(
            self, "arrays", {"W": w, "cov_s": cov_s, "g_star": g_star, "h_star": u}
        )

    @property
    def n_inputs(self) -> int:
        return len(MODALITIES) * self.modality_dim

    def columns(self, subset) -> np.ndarray:
        """The input columns that belong to the modalities of ``subset``."""
        p = self.modality_dim
        return np.concatenate(
            [
                np.arange(MODALITIES.index(n) * p, (MODALITIES.index(n) + 1) * p)
                for n in parse_subset(subset)
            ]
        )

    def bayes_risk(self) -> float:
        """r(h*∘g*): the mean squared error per output of the true predictor, the task noise's variance."""
        return self.task_noise**2


def true_encoder(problem: Problem, x: np.ndarray) -> np.ndarray:
    """g*(x): the posterior mean of V^T z given every modality (through the inverse of tanh if nonlinear)."""
    s = np.arctanh(x) if problem.nonlinear else x
    return s @ problem.arrays["g_star"].T


def sample(
    problem: Problem, m: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """m draws of (x, y): z ~ N(0, I), x^(k) = Q_k D_k z + noise (tanh of it if nonlinear), y = h*(g*(x)) + noise."""
    a = problem.arrays
    z = rng.standard_normal((m, problem.latent_dim))
    s = z @ a["W"].T + problem.noise * rng.standard_normal((m, problem.n_inputs))
    x = np.tanh(s) if problem.nonlinear else s
    y = true_encoder(problem, x) @ a[
        "h_star"
    ].T + problem.task_noise * rng.standard_normal((m, problem.task_dim))
    return x, y


def mask(problem: Problem, x: np.ndarray, subset) -> np.ndarray:
    """p_M(x): the input with every modality outside ``subset`` set to zero."""
    out = np.zeros_like(x)
    cols = problem.columns(subset)
    out[:, cols] = x[:, cols]
    return out
