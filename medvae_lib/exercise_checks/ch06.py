"""Checks for the exercises of chapter 6 (multimodal theory). The simulated world is known exactly, so each
check recomputes the answer in closed form."""

from __future__ import annotations

import itertools

import numpy as np

from .. import multimodal_theory as mt
from ..exercises import answer_check, choice, close, number, report


def eta_of_rank(problem: mt.Problem, subset, rank: int) -> float:
    """The best eta of a rank-``rank`` linear encoder of p_M(x) at infinite data, in the world ``problem``
    (whose g* keeps ``problem.rep_dim`` numbers): ``mt.eta_population`` with another encoder size."""
    cov, a_star = (
        problem.arrays["cov_s"],
        problem.arrays["h_star"] @ problem.arrays["g_star"],
    )
    cols = problem.columns(subset)
    c = a_star @ cov[:, cols]
    explained = np.linalg.eigvalsh(c @ np.linalg.solve(cov[np.ix_(cols, cols)], c.T))[
        ::-1
    ][:rank]
    return float(
        (np.trace(a_star @ cov @ a_star.T) - explained.sum()) / problem.task_dim
    )


@answer_check(number("eta"))
def check_06_1(value: float, problem: mt.Problem) -> bool:
    """``answer``: eta at infinite data of the best encoder of all four modalities that keeps one number,
    in the chapter's world (whose g* keeps two)."""
    expected = eta_of_rank(problem, "a+b+c+d", 1)
    if close(value, expected, rtol=1e-6, atol=1e-9):
        return report(
            True,
            "g* keeps two numbers and one number keeps only the task's largest direction: eta stays above 0 "
            "however many modalities the encoder sees.",
            "",
        )
    if close(value, 0.0, atol=1e-6):
        return report(
            False,
            "",
            "0 is the eta of an encoder that keeps two numbers (or of a world built with mt.Problem(rep_dim=1), "
            "whose g* itself keeps one); keep the chapter's problem and the top 1 eigenvalue",
        )
    if close(value, eta_of_rank(problem, "a", 1), rtol=1e-6):
        return report(
            False,
            "",
            "that is modality a alone; the question is about all four, 'a+b+c+d'",
        )
    return report(
        False,
        "",
        "copy the lines of mt.eta_population and keep the top 1 eigenvalue instead of the top rep_dim",
    )


def pair_gains(problem: mt.Problem) -> dict[str, float]:
    """For each pair of modalities X+Y: min(eta_X, eta_Y) - eta_{X+Y} at infinite data."""
    eta = {s: mt.eta_population(problem, s) for s in mt.MODALITIES}
    return {
        f"{x}+{y}": min(eta[x], eta[y]) - mt.eta_population(problem, f"{x}+{y}")
        for x, y in itertools.combinations(mt.MODALITIES, 2)
    }


def _subset_name(text: str) -> str:
    try:
        return mt.subset_name(text)
    except ValueError:
        raise ValueError(
            f"{text[:40]!r} is not a subset of the modalities {mt.MODALITIES}"
        ) from None


@answer_check(
    choice(None, "give the pair as a string such as 'a+b'", normalise=_subset_name)
)
def check_06_2(name: str, problem: mt.Problem) -> bool:
    """``answer``: the pair of modalities ('x+y') whose union improves most on the better of its two members."""
    gains = pair_gains(problem)
    best = max(gains, key=gains.get)
    if name == best:
        return report(
            True,
            "the two modalities that complement each other most: each sees what the other misses.",
            "",
        )
    if name not in gains:
        return report(
            False, "", "give a pair of two different single modalities, such as 'a+b'"
        )
    return report(
        False,
        "",
        f"{name} gains {gains[name]:.3f} over its better member; for each pair compute "
        "min(eta_x, eta_y) - eta_(x+y) with mt.eta_population and take the largest",
    )
