"""The simulation of chapter 6: known Bayes risk, exact and sampled eta agree, subsets mask what they say."""

import numpy as np
import pytest

from medvae_lib import multimodal_theory as mt


@pytest.fixture(scope="module")
def problem():
    return mt.Problem(overlap=0.3)


def test_bayes_risk_matches_monte_carlo(problem):
    rng = np.random.default_rng(0)
    x, y = mt.sample(problem, 100_000, rng)
    best = mt.true_encoder(problem, x) @ problem.arrays["h_star"].T
    mc = np.mean((y - best) ** 2)
    assert abs(mc - problem.bayes_risk()) < 0.01 * problem.bayes_risk() + 3e-3
    # The closed-form risk of a linear predictor agrees with its Monte Carlo risk.
    a = 0.5 * problem.arrays["h_star"] @ problem.arrays["g_star"]
    assert mt.risk_exact(problem, a) == pytest.approx(np.mean((y - x @ a.T) ** 2), rel=0.02)


def test_nothing_beats_the_bayes_risk(problem):
    x, y = mt.sample(problem, 20_000, np.random.default_rng(1))
    ols = np.linalg.lstsq(x, y, rcond=None)[0].T
    assert mt.risk_exact(problem, ols) >= problem.bayes_risk()
    assert mt.risk_exact(problem, ols) - problem.bayes_risk() < 0.01  # and a large sample nearly reaches it


def test_eta_of_the_true_encoder_is_zero(problem):
    assert abs(mt.eta_exact(problem, problem.arrays["g_star"])) < 1e-9
    assert abs(mt.eta_population(problem, "a+b+c+d")) < 1e-9
    # A single modality misses part of g*: its best encoder is strictly worse.
    assert mt.eta_population(problem, "a") > 0.1


@pytest.mark.parametrize("nonlinear", [False, True])
def test_eta_is_never_below_zero(nonlinear):
    problem = mt.Problem(overlap=0.5, nonlinear=nonlinear)
    res = mt.sweep(problem, ["a", "a+c", "a+b+c+d"], [6, 40, 400], seeds=2, eval_samples=20_000)
    assert (res["eta"] > -0.01).all()
    assert (res["excess risk"] > -0.01).all()
    # The refitted head is at least as good as the trained one: eta <= excess risk (up to sampling noise).
    assert (res["eta"] <= res["excess risk"] + 0.01).all()


def test_sampled_eta_agrees_with_the_closed_form(problem):
    x, y = mt.sample(problem, 300, np.random.default_rng(2))
    learned = mt.fit_erm(problem, x, y, "a+b")
    rng = np.random.default_rng(3)
    fit, test = mt.sample(problem, 50_000, rng), mt.sample(problem, 50_000, rng)
    assert mt.eta_sampled(learned, fit, test) == pytest.approx(mt.eta_exact(problem, learned.encoder), abs=0.02)
    assert mt.risk_sampled(learned, *test) == pytest.approx(mt.risk_exact(problem, mt.linear_map(learned)), rel=0.03)


def test_subsets_zero_exactly_the_other_modalities(problem):
    x, _ = mt.sample(problem, 10, np.random.default_rng(4))
    masked = mt.mask(problem, x, "b+d")
    p = problem.modality_dim
    for i, name in enumerate(mt.MODALITIES):
        block = masked[:, i * p : (i + 1) * p]
        if name in ("b", "d"):
            np.testing.assert_array_equal(block, x[:, i * p : (i + 1) * p])
        else:
            assert not block.any()
    # The trained encoder reads nothing from the masked modalities.
    x, y = mt.sample(problem, 50, np.random.default_rng(5))
    enc = mt.fit_erm(problem, x, y, "c").encoder
    c = mt.MODALITIES.index("c")
    assert np.abs(np.delete(enc, np.s_[c * p : (c + 1) * p], axis=1)).max() < 1e-12
    assert np.abs(enc).max() > 0


def test_subset_names_are_checked():
    assert mt.parse_subset("c+a") == ("a", "c")
    assert mt.parse_subset(["d"]) == ("d",)
    with pytest.raises(ValueError, match=r"'e'.*valid modalities: a, b, c, d"):
        mt.parse_subset("a+e")
    with pytest.raises(ValueError, match="valid modalities"):
        mt.parse_subset("")
    with pytest.raises(ValueError, match="twice"):
        mt.parse_subset("a+a")
    assert len(mt.all_subsets()) == 15
    assert len(mt.nested_pairs(mt.all_subsets())) == 50
    with pytest.raises(ValueError, match="overlap"):
        mt.Problem(overlap=1.5)


def test_more_modalities_win_with_enough_data(problem):
    res = mt.sweep(problem, ["a", "a+b", "a+b+c+d"], [2000], seeds=2)
    risk = res.groupby("subset")["excess risk"].mean()
    assert risk["a+b+c+d"] < risk["a+b"] < risk["a"]
    table = mt.theorem1_table(res)
    assert table["same sign"].all()


def test_rademacher_shrinks_like_one_over_root_m(problem):
    rng = np.random.default_rng(6)
    small = mt.rademacher_linear(problem, mt.sample(problem, 100, rng)[0], "a", 1.0, 200, 0)
    large = mt.rademacher_linear(problem, mt.sample(problem, 1600, rng)[0], "a", 1.0, 200, 0)
    assert small / large == pytest.approx(4.0, rel=0.15)
    more = mt.rademacher_linear(problem, mt.sample(problem, 1600, rng)[0], "a+b+c+d", 1.0, 200, 0)
    assert more > large
