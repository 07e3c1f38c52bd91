"""Chapter 6: the multimodal theory of Huang et al. (2021) in a simulation where everything is known.

Huang, Du, Xue, Chen, Zhao and Huang, "What Makes Multi-modal Learning Better than Single (Provably)",
NeurIPS 2021 (arXiv:2106.04538), has no public code; this module is the book's own construction.

A latent ``z`` generates ``K = 4`` modalities, each a noisy view of ``z`` that sees its own block of
``z`` fully and the other blocks with weight ``overlap``. The *true encoder* ``g*`` reads a small
representation out of all modalities (the posterior mean of ``V^T z`` given every modality), and the
task is ``y = h*(g*(x)) + noise`` with a linear ``h*``. So the risk of ``h*∘g*`` is the noise variance
``task_noise**2``, exactly, and every quantity of the paper can be computed (for linear views in closed
form from the population covariances, for the nonlinear views on large fresh samples).

A learner sees only the modalities of a subset ``M`` (the others are zeroed, the paper's ``p_M``) and
trains an encoder ``g`` (``rep_dim`` numbers) and a linear head ``h`` by empirical risk minimisation
(ERM) of the squared error over linear encoders and heads: reduced-rank least squares, solved in
closed form. The *latent representation quality* of the trained encoder is
``eta(g) = inf_h r(h∘g) - r(h*∘g*)``: the best head refitted on the frozen encoder.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

MODALITIES = ("a", "b", "c", "d")

MODES = {
    "ci": {
        "overlap": 0.3,
        "redundant": {"overlap": 1.0, "noise": 0.2},
        "crossover_sizes": [8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024],
        "crossover_seeds": 200,
        "sample_sizes": [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
        "seeds": 10,
        "eval_samples": 20_000,
        "overlaps": [0.0, 0.2, 0.5, 0.8, 1.0],  # the paper's Table 4 grid
        "overlap_m": 256,
        "rademacher_draws": 100,
        "nonlinear_sizes": [8, 32, 128, 512, 2048],
    },
    "full": {
        "overlap": 0.3,
        "redundant": {"overlap": 1.0, "noise": 0.2},
        "crossover_sizes": [
            8,
            12,
            16,
            20,
            24,
            28,
            32,
            40,
            48,
            56,
            64,
            80,
            96,
            128,
            192,
            256,
            512,
            1024,
            2048,
        ],
        "crossover_seeds": 1000,
        "sample_sizes": [
            4,
            6,
            8,
            12,
            16,
            24,
            32,
            48,
            64,
            96,
            128,
            256,
            512,
            1024,
            2048,
            4096,
            8192,
            16384,
        ],
        "seeds": 50,
        "eval_samples": 200_000,
        "overlaps": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
        "overlap_m": 256,
        "rademacher_draws": 200,
        "nonlinear_sizes": [
            8,
            16,
            32,
            64,
            128,
            256,
            512,
            1024,
            2048,
            4096,
            8192,
            16384,
        ],
    },
}


# --- modality subsets ------------------------------------------------------------------------------


def parse_subset(
    subset: str | Iterable[str], modalities: tuple[str, ...] = MODALITIES
) -> tuple[str, ...]:
    """A modality subset, from ``"a+c"`` or ``("a", "c")``, as a sorted tuple of names.

    Raises ``ValueError`` naming the bad entry and the valid modalities."""
    names = subset.split("+") if isinstance(subset, str) else list(subset)
    if not names or names == [""]:
        raise ValueError(
            f"empty modality subset; valid modalities: {', '.join(modalities)}"
        )
    for name in names:
        if name not in modalities:
            raise ValueError(
                f"unknown modality {name!r} in {subset!r}; valid modalities: {', '.join(modalities)}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"modality named twice in {subset!r}")
    return tuple(sorted(names))


def subset_name(subset: str | Iterable[str]) -> str:
    return "+".join(parse_subset(subset))


def all_subsets() -> list[str]:
    """The 15 non-empty subsets of the four modalities, smallest first."""
    return [
        "+".join(c)
        for size in range(1, len(MODALITIES) + 1)
        for c in itertools.combinations(MODALITIES, size)
    ]


def nested_pairs(subsets: Iterable[str]) -> list[tuple[str, str]]:
    """Every pair ``(N, M)`` of the given subsets with ``N`` a strict subset of ``M``."""
    sets = {s: set(parse_subset(s)) for s in subsets}
    return [(n, m) for n in sets for m in sets if sets[n] < sets[m]]


# --- the simulator ---------------------------------------------------------------------------------


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


# --- learning: ERM of encoder and head -------------------------------------------------------------


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


# --- risks and latent representation quality ------------------------------------------------------


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


# --- Rademacher complexity -------------------------------------------------------------------------


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


# --- sweeps ----------------------------------------------------------------------------------------


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
    from . import stats

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


# --- figures ---------------------------------------------------------------------------------------


def plot_by_size(results: pd.DataFrame, values=("excess risk", "eta"), axes=None):
    """Median over seeds (lines) with the seeds' 10-90% band of each value against m, one line per subset
    size (the subsets of one size averaged first)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(values), figsize=(5 * len(values), 3.4))
    axes = np.atleast_1d(axes)
    per_seed = results.groupby(["size", "m", "seed"])[list(values)].mean().reset_index()
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 4))
    for ax, value in zip(axes, values, strict=True):
        for size, group in per_seed.groupby("size"):
            stats = group.groupby("m")[value]
            ax.plot(
                stats.median().index,
                stats.median(),
                "o-",
                ms=3,
                color=colours[size - 1],
                label=f"{size} modalit{'y' if size == 1 else 'ies'}",
            )
            ax.fill_between(
                stats.median().index,
                stats.quantile(0.1),
                stats.quantile(0.9),
                color=colours[size - 1],
                alpha=0.2,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training samples m")
        ax.set_ylabel(value)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    return axes


def plot_theorem1(table: pd.DataFrame, results: pd.DataFrame, axes=None):
    """Left: the risk gap against gamma_S for every nested pair and seed, coloured by m. Right: the
    median |gap - gamma_S| and the empirical Rademacher complexity of each subset size against m."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ms = np.sort(table["m"].unique())
    colours = plt.get_cmap("plasma")(np.linspace(0, 0.9, len(ms)))
    ax = axes[0]
    for colour, m in zip(colours, ms, strict=True):
        part = table[table.m == m]
        ax.scatter(
            part["gamma_S"],
            part["risk gap"],
            s=4,
            color=colour,
            label=f"m={m}",
            alpha=0.6,
        )
    lim = 3.0
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xscale("symlog", linthresh=1e-2)
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_xlabel(r"$\gamma_S(M,N) = \eta(\hat g_M) - \eta(\hat g_N)$")
    ax.set_ylabel(r"risk gap $r(\hat h_M\circ\hat g_M) - r(\hat h_N\circ\hat g_N)$")
    ax.legend(fontsize=6, ncol=2, markerscale=3)
    ax = axes[1]
    diff = (table["risk gap"] - table["gamma_S"]).abs().groupby(table["m"]).median()
    ax.plot(
        diff.index,
        diff,
        "ko-",
        ms=3,
        label=r"median $|$gap $-\ \gamma_S|$ (nested pairs)",
    )
    rad = results.groupby(["size", "m"])["rademacher"].median().unstack(0)
    viridis = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 4))
    for size in rad.columns:
        ax.plot(
            rad.index,
            rad[size],
            "--",
            color=viridis[size - 1],
            label=rf"$\hat{{\mathfrak{{R}}}}$, {size} modalities",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training samples m")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return axes


def plot_overlap(table: pd.DataFrame, ax=None):
    """eta against the overlap w: ERM at one m (solid) and the infinite-data optimum (dashed), by subset size."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    mean = table.groupby(["size", "overlap"])[
        ["eta (ERM, m)", "eta (infinite data)"]
    ].mean()
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 4))
    for size in sorted(table["size"].unique()):
        part = mean.loc[size]
        ax.plot(
            part.index,
            part["eta (ERM, m)"],
            "o-",
            ms=3,
            color=colours[size - 1],
            label=f"{size} modalit{'y' if size == 1 else 'ies'}, ERM",
        )
        ax.plot(part.index, part["eta (infinite data)"], "--", color=colours[size - 1])
    ax.set_xlabel("overlap w")
    ax.set_ylabel(r"$\eta$")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax


# ---------------------------------------------------------------------------------------------------------
# Real data (section 6.10): late fusion on co-registered brain MRI, the paper's IEMOCAP experiment in small.
#
# Modalities are three MRI contrasts of the same tissue (T1, T1 with contrast, T2); the task is a property
# of a fourth contrast the model never sees: is an 8x8 patch brighter in FLAIR than the person's median patch?
# (A balanced task, so accuracy means what it says; with the top 10% as the class, as for "hyperintense",
# every model was within a point of always answering "no".) Every person in ../shared/data/brain_mri has all
# four contrasts. Training and test patches
# come from different people: generalisation to a new person is what is measured.

BRAIN_MODALITIES = ("t1", "t1c", "t2")
BRAIN_TARGET = "flair"

REAL_MODES = {
    "ci": {
        "test_subjects": [
            "BraTS-GLI-00001-000",
            "TCGA-DU-7294",
            "TCGA-FG-6692",
        ],  # leave one person out
        "slices": [50, 110, 3],  # axial slices lo, hi, step
        "patch": 8,
        "quantile": 0.5,
        "fractions": [0.01, 0.1, 1.0],  # of the training patches
        "max_train": 2000,  # the training patches are subsampled to this many (CI time, three folds)
        "seeds": 3,
        "hidden": 16,
        "rep_dim": 4,
        "steps": 150,
        "lr": 0.01,
    },
    "full": {
        "test_subjects": [
            "TCGA-DU-7294",
            "TCGA-FG-6692",
            "BraTS-GLI-00001-000",
        ],  # leave one person out
        "slices": [30, 130, 1],
        "patch": 8,
        "quantile": 0.5,
        "fractions": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        "max_train": None,
        "seeds": 5,
        "hidden": 32,
        "rep_dim": 8,
        "steps": 400,
        "lr": 0.01,
    },
}


def load_brain_subject(subject: str, manifest="brain_mri") -> dict[str, np.ndarray]:
    """One person's four contrasts (verified against the manifest, read with MONAI), each z-scored on the
    brain mask (voxels where every contrast is non-zero: the volumes are skull-stripped), plus the mask."""
    from monai.transforms import LoadImage

    from . import data

    manifest = data.load_manifest(manifest) if isinstance(manifest, str) else manifest
    wanted = (*BRAIN_MODALITIES, BRAIN_TARGET)
    missing = [c for c in wanted if f"{subject}/{c}" not in manifest.files]
    if missing:
        people = sorted({k.split("/")[0] for k in manifest.files})
        raise ValueError(
            f"subject {subject!r} has no {missing} in manifest {manifest.name!r}; people: {people}"
        )
    loader = LoadImage(image_only=True)
    volumes = {
        c: np.asarray(
            loader(str(data.fetch(manifest, f"{subject}/{c}"))), dtype=np.float32
        )
        for c in wanted
    }
    shapes = {c: v.shape for c, v in volumes.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"subject {subject!r}: the contrasts are not on one grid: {shapes}"
        )
    brain = np.all([v != 0 for v in volumes.values()], axis=0)
    if brain.sum() < 1000:
        raise ValueError(
            f"subject {subject!r}: only {brain.sum()} voxels are non-zero in every contrast"
        )
    out = {"mask": brain}
    for c, v in volumes.items():
        inside = v[brain]
        out[c] = np.where(
            brain, (v - inside.mean()) / (inside.std() + 1e-8), 0.0
        ).astype(np.float32)
    return out


def brain_patches(
    volumes: dict[str, np.ndarray],
    slices=(50, 110, 3),
    patch: int = 8,
    quantile: float = 0.9,
    with_slices=False,
):
    """Non-overlapping ``patch x patch`` windows of axial slices ``range(*slices)`` that lie wholly in the
    brain: per modality the window's values (``patch**2`` numbers), and the label 1 when the window's mean
    FLAIR is above the person's ``quantile`` of window means (hyperintense), else 0. With
    ``with_slices`` a third array gives each window's axial slice: windows of one slice are correlated,
    so intervals resample slices, not windows."""
    mask = volumes["mask"]
    lo, hi, step = slices
    if not 0 <= lo < hi <= mask.shape[2]:
        raise ValueError(
            f"slices {slices} outside the volume's {mask.shape[2]} axial slices"
        )
    zs = np.arange(lo, hi, step)
    rows, cols = (mask.shape[0] // patch) * patch, (mask.shape[1] // patch) * patch

    def windows(
        volume,
    ):  # (rows, cols, slices) -> (n_windows, patch * patch), row-major within a window
        v = volume[:rows, :cols, zs].reshape(
            rows // patch, patch, cols // patch, patch, len(zs)
        )
        return v.transpose(4, 0, 2, 1, 3).reshape(-1, patch * patch)

    inside = windows(mask).all(axis=1)
    feats = {c: windows(volumes[c])[inside] for c in BRAIN_MODALITIES}
    target = windows(volumes[BRAIN_TARGET])[inside].mean(axis=1)
    if len(target) < 10:
        raise ValueError(
            f"only {len(target)} patches of {patch}x{patch} lie wholly in the brain in slices {slices}"
        )
    y = (target > np.quantile(target, quantile)).astype(np.int64)
    if with_slices:
        z = np.broadcast_to(
            zs[:, None, None], (len(zs), rows // patch, cols // patch)
        ).reshape(-1)
        return feats, y, z[inside]
    return feats, y


class LateFusion:
    """One small MLP encoder per modality (``patch**2 -> hidden -> rep_dim``), their
    outputs concatenated, and a linear logistic head: the paper's late fusion.
    Modalities outside the subset are zeroed at the input (the paper's ``p_M``), so
    every subset has the same architecture."""

    def __init__(self, n_inputs: int, hidden: int, rep_dim: int, seed: int):
        import torch

        torch.manual_seed(seed)
        self.encoders = torch.nn.ModuleDict(
            {
                c: torch.nn.Sequential(
                    torch.nn.Linear(n_inputs, hidden),
                    torch.nn.ReLU(),
                    torch.nn.Linear(hidden, rep_dim),
                )
                for c in BRAIN_MODALITIES
            }
        )
        self.head = torch.nn.Linear(rep_dim * len(BRAIN_MODALITIES), 1)

    def encode(self, x: dict, subset):
        import torch

        keep = set(parse_subset(subset, BRAIN_MODALITIES))
        parts = [
            self.encoders[c](x[c] if c in keep else torch.zeros_like(x[c]))
            for c in BRAIN_MODALITIES
        ]
        return torch.cat(parts, dim=1)


def _tensors(x: dict, rows=None):
    import torch

    return {c: torch.as_tensor(v if rows is None else v[rows]) for c, v in x.items()}


def train_late_fusion(
    x: dict,
    y: np.ndarray,
    subset,
    hidden: int,
    rep_dim: int,
    steps: int,
    lr: float,
    seed: int,
):
    """ERM of head∘encoders on one training sample (full-batch Adam on the logistic loss)."""
    import torch

    model = LateFusion(next(iter(x.values())).shape[1], hidden, rep_dim, seed)
    params = [*model.encoders.parameters(), *model.head.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    xt, yt = _tensors(x), torch.as_tensor(y, dtype=torch.float32)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model.head(model.encode(xt, subset))[:, 0], yt
        )
        loss.backward()
        opt.step()
    return model


def train_late_fusion_subsets(
    x: dict,
    y: np.ndarray,
    subsets,
    hidden: int,
    rep_dim: int,
    steps: int,
    lr: float,
    seed: int,
) -> dict:
    """:func:`train_late_fusion` for several subsets at once: the same initial weights (``seed``) and
    data, one independent model per subset, stacked into batched matrix products so that small
    samples do not pay the per-step overhead once per subset. Adam acts on each number separately and
    the loss is a sum of the models' losses, so each model follows its own training run (up to float
    rounding). Returns ``{subset: LateFusion}``."""
    import torch

    names = ["+".join(parse_subset(s, BRAIN_MODALITIES)) for s in subsets]
    template = LateFusion(next(iter(x.values())).shape[1], hidden, rep_dim, seed)
    n = len(names)

    def stack(
        t,
    ):  # (out, in) weight or (out,) bias -> (n, in, out) or (n, 1, out), trainable
        t = t.detach()
        t = t.T if t.ndim == 2 else t[None, :]
        return torch.nn.Parameter(t.unsqueeze(0).repeat(n, 1, 1).contiguous())

    enc = {
        c: [stack(layer.weight) for layer in (e[0], e[2])]
        + [stack(e[0].bias), stack(e[2].bias)]
        for c, e in template.encoders.items()
    }
    head_w, head_b = stack(template.head.weight), stack(template.head.bias)
    params = [p for c in BRAIN_MODALITIES for p in enc[c]] + [head_w, head_b]
    keep = torch.tensor(
        [
            [float(c in parse_subset(s, BRAIN_MODALITIES)) for c in BRAIN_MODALITIES]
            for s in names
        ]
    )
    xt, yt = _tensors(x), torch.as_tensor(y, dtype=torch.float32).expand(n, -1)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        parts = []
        for j, c in enumerate(BRAIN_MODALITIES):
            w1, w2, b1, b2 = enc[c]
            h = torch.relu(
                torch.baddbmm(b1, xt[c].unsqueeze(0) * keep[:, j, None, None], w1)
            )
            parts.append(torch.baddbmm(b2, h, w2))
        logits = torch.baddbmm(head_b, torch.cat(parts, dim=2), head_w)[..., 0]
        losses = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, yt, reduction="none"
        ).mean(1)
        losses.sum().backward()
        opt.step()
    models = {}
    with torch.no_grad():
        for k, name in enumerate(names):
            model = LateFusion(next(iter(x.values())).shape[1], hidden, rep_dim, seed)
            for c, e in model.encoders.items():
                w1, w2, b1, b2 = enc[c]
                e[0].weight.copy_(w1[k].T), e[2].weight.copy_(w2[k].T)
                e[0].bias.copy_(b1[k, 0]), e[2].bias.copy_(b2[k, 0])
            model.head.weight.copy_(head_w[k].T), model.head.bias.copy_(head_b[k, 0])
            models[name] = model
    return models


def late_fusion_scores(model: LateFusion, x: dict, subset) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.head(model.encode(_tensors(x), subset))[:, 0].numpy()


def refit_risk(model: LateFusion, subset, fit: tuple, test: tuple) -> float:
    """The eta estimate of the paper on real data: the encoders frozen, the best logistic head refitted on a
    large sample ``fit`` (all training patches), its test error (1 - accuracy) on ``test``. eta itself needs
    r(h*∘g*), unknown on real data, so only differences between subsets (gamma_S) are meaningful."""
    import torch
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        u_fit = model.encode(_tensors(fit[0]), subset).numpy()
        u_test = model.encode(_tensors(test[0]), subset).numpy()
    head = LogisticRegression(C=10.0, max_iter=2000).fit(u_fit, fit[1])
    return float(1.0 - head.score(u_test, test[1]))


def refit_correct(model: LateFusion, subset, fit: tuple, tests: list) -> list:
    """:func:`refit_risk` with one refitted head scored on several test samples: for each, which
    patches the head gets right (1 - mean is the refit error)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        head = LogisticRegression(C=10.0, max_iter=2000).fit(
            model.encode(_tensors(fit[0]), subset).numpy(), fit[1]
        )
        return [
            head.predict(model.encode(_tensors(x), subset).numpy()) == y
            for x, y in tests
        ]


def late_fusion_sweep(
    people: dict, settings: dict, seed: int = 0, progress: bool = True
) -> pd.DataFrame:
    """For every held-out person, fraction of the training patches, seed and modality subset: train late
    fusion on that many patches of the other people, and record the test accuracy on the held-out person
    with the per-patch correctness (``correct``, for paired comparisons) and each patch's cluster
    (``groups``: its slice), and the refitted-head error (the eta estimate) on the held-out person and,
    as a control, on patches of the *training* people that no model trained on (``refit error, same
    people``). ``people`` maps a person to ``brain_patches`` output, ``(x, y)`` or ``(x, y, slices)``."""
    from tqdm import (
        tqdm,
    )  # plain tqdm honours TQDM_DISABLE in notebooks (tqdm.auto printed a bar)

    subsets = [
        "+".join(s)
        for r in (1, 2, 3)
        for s in itertools.combinations(BRAIN_MODALITIES, r)
    ]
    unknown = [p for p in settings["test_subjects"] if p not in people]
    if unknown:
        raise ValueError(
            f"held-out people {unknown} are not among the loaded people {sorted(people)}"
        )
    rows = []
    jobs = [
        (t, f, s)
        for t in settings["test_subjects"]
        for f in settings["fractions"]
        for s in range(settings["seeds"])
    ]
    quiet = (
        {} if progress else {"disable": True}
    )  # an explicit disable=False would override TQDM_DISABLE
    for test_person, fraction, s in tqdm(jobs, desc="late fusion", **quiet):
        train_people = [p for p in people if p != test_person]
        x_all = {
            c: np.concatenate([people[p][0][c] for p in train_people])
            for c in BRAIN_MODALITIES
        }
        y_all = np.concatenate([people[p][1] for p in train_people])
        rng = np.random.default_rng([seed, s])
        order = rng.permutation(len(y_all))
        n_same = min(
            1000, len(order) // 5
        )  # unseen patches of the training people (the control)
        same, pool = order[:n_same], order[n_same:]
        if settings.get("max_train"):
            pool = pool[: settings["max_train"]]
        m = max(8, int(round(fraction * len(pool))))
        rows_m = pool[:m]
        x_m, y_m = {c: v[rows_m] for c, v in x_all.items()}, y_all[rows_m]
        x_test, y_test = people[test_person][0], people[test_person][1]
        groups = (
            people[test_person][2]
            if len(people[test_person]) > 2
            else np.arange(len(y_test))
        )
        fit = ({c: v[pool] for c, v in x_all.items()}, y_all[pool])
        same_set = ({c: v[same] for c, v in x_all.items()}, y_all[same])
        models = train_late_fusion_subsets(
            x_m,
            y_m,
            subsets,
            settings["hidden"],
            settings["rep_dim"],
            settings["steps"],
            settings["lr"],
            seed + s,
        )
        for subset, model in models.items():
            correct = (late_fusion_scores(model, x_test, subset) > 0).astype(
                int
            ) == y_test
            refit_test, refit_same = refit_correct(
                model, subset, fit, [(x_test, y_test), same_set]
            )
            rows.append(
                {
                    "test person": test_person,
                    "fraction": fraction,
                    "m": m,
                    "seed": s,
                    "subset": subset,
                    "size": len(parse_subset(subset, BRAIN_MODALITIES)),
                    "accuracy": float(correct.mean()),
                    "refit error": float(1.0 - refit_test.mean()),
                    "refit error, same people": float(1.0 - refit_same.mean()),
                    "correct": correct,
                    "refit correct": refit_test,
                    "groups": np.asarray(groups),
                }
            )
    return pd.DataFrame(rows)


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
    from . import stats

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
    from . import stats

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


def plot_late_fusion(results: pd.DataFrame, axes=None):
    """Test accuracy against the number of training patches, one panel per held-out person, one line
    per subset (mean over seeds; thicker lines: more modalities), seeds as dots."""
    import matplotlib.pyplot as plt

    folds = sorted(results["test person"].unique())
    if axes is None:
        _, axes = plt.subplots(
            1, len(folds), figsize=(4.2 * len(folds), 3.6), sharey=True, squeeze=False
        )
        axes = axes[0]
    colours = dict(
        zip(
            sorted(results["subset"].unique()),
            plt.get_cmap("tab10").colors,
            strict=False,
        )
    )
    for ax, person in zip(axes, folds, strict=True):
        part = results[results["test person"] == person]
        for subset, g in part.groupby("subset"):
            size = len(subset.split("+"))
            mean = g.groupby("m")["accuracy"].mean()
            ax.plot(
                mean.index,
                mean,
                "-",
                lw=0.8 + 0.8 * size,
                color=colours[subset],
                label=subset,
            )
            ax.scatter(g["m"], g["accuracy"], s=6, color=colours[subset], alpha=0.5)
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.set(xscale="log", xlabel="training patches m", title=f"held out: {person}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=7, ncol=2)
    return axes


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
