"""Learning on the simulation: ERM of encoder and head over linear maps, as minimum-norm
or ridge reduced-rank least squares, and the trained ``Learned`` predictor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .settings import subset_name
from .simulator import Problem, mask


@dataclass
class Learned:
    """A trained h∘g: ``g(x) = p_M(x) @ encoder.T``, ``h(u) = u @ head.T``."""

    problem: Problem
    subset: str
    encoder: np.ndarray  # rep_dim x inputs (zero outside the subset's columns)
    head: np.ndarray  # task_dim x rep_dim
    penalty: float | None = None  # the ridge penalty, if the map was fitted with one

    def encode(self, x: np.ndarray) -> np.ndarray:
        return mask(self.problem, x, self.subset) @ self.encoder.T

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.encode(x) @ self.head.T


def fit_erm(problem: Problem, x: np.ndarray, y: np.ndarray, subset) -> Learned:
    """ERM of h∘g over linear heads and rank-``rep_dim`` linear encoders of p_M(x):
    reduced-rank least squares.

    The minimum-norm least-squares map B (what gradient descent from zero reaches, also
    when m is smaller than the number of inputs) is projected on the top ``rep_dim``
    right singular vectors of its fitted values; that projection is the ERM over the
    composition (Reinsel & Velu, 1998)."""
    xm = mask(problem, x, subset)
    b = np.linalg.pinv(xm, rcond=1e-10) @ y  # inputs x task_dim
    _, _, vt = np.linalg.svd(xm @ b, full_matrices=False)
    v = vt[: problem.rep_dim].T  # task_dim x rep_dim
    return Learned(problem, subset_name(subset), encoder=(b @ v).T, head=v)


PENALTIES = tuple(float(x) for x in np.logspace(-3, 4, 15))


def fit_ridge_erm(
    problem: Problem, x: np.ndarray, y: np.ndarray, subset, penalties=PENALTIES
) -> Learned:
    """Reduced-rank *ridge* regression: ERM of h∘g with a penalty on the size of the
    map.

    The ridge map ``B = (X'X + lam I)^-1 X'y`` on the subset's columns, with ``lam``
    chosen by leave-one-out error on the training sample itself (closed form through the
    hat matrix, so no extra data), then projected on the top ``rep_dim`` directions of
    its fitted values, as in :func:`fit_erm`. The penalty keeps the map bounded where
    the minimum-norm solution interpolates. The chosen ``lam`` is stored as
    ``learned.penalty``."""
    cols = problem.columns(subset)
    xs = x[:, cols]
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ y
    best = (np.inf, None)
    for lam in penalties:
        shrink = s**2 / (s**2 + lam)
        fitted = u @ (shrink[:, None] * uty)
        leverage = (u**2) @ shrink
        loo = np.mean(((y - fitted) / (1.0 - leverage)[:, None]) ** 2)
        if loo < best[0]:
            best = (loo, lam)
    lam = best[1]
    b_sub = vt.T @ ((s / (s**2 + lam))[:, None] * uty)  # subset columns x task_dim
    b = np.zeros((problem.n_inputs, y.shape[1]))
    b[cols] = b_sub
    _, _, wt = np.linalg.svd(xs @ b_sub, full_matrices=False)
    v = wt[: problem.rep_dim].T
    return Learned(
        problem, subset_name(subset), encoder=(b @ v).T, head=v, penalty=float(lam)
    )
