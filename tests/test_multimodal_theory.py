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


# --- Real data: late fusion on co-registered brain MRI (section 6.10) ---


def _volumes(shape=(32, 32, 6), seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    mask[4:28, 4:28, :] = True
    out = {"mask": mask}
    for c in (*mt.BRAIN_MODALITIES, mt.BRAIN_TARGET):
        out[c] = np.where(mask, rng.normal(size=shape), 0.0).astype(np.float32)
    return out


def test_brain_patches_keep_whole_windows_in_the_brain_and_label_the_top_flair_share():
    v = _volumes()
    x, y = mt.brain_patches(v, slices=(0, 6, 1), patch=4, quantile=0.75)
    # windows on the 4-pixel grid wholly inside rows/cols 4..27: 6 x 6 per slice, 6 slices
    assert y.shape == (216,) and all(x[c].shape == (216, 16) for c in mt.BRAIN_MODALITIES)
    assert abs(y.mean() - 0.25) < 0.01
    np.testing.assert_array_equal(x["t1"][0], v["t1"][4:8, 4:8, 0].ravel())
    flair_means = v["flair"][4:8, 4:8, 0].mean()
    assert y[0] == int(
        flair_means
        > np.quantile(
            [
                v["flair"][i : i + 4, j : j + 4, z].mean()
                for z in range(6)
                for i in range(4, 28, 4)
                for j in range(4, 28, 4)
            ],
            0.75,
        )
    )
    with pytest.raises(ValueError, match="slices"):
        mt.brain_patches(v, slices=(0, 7, 1), patch=4)


def test_late_fusion_zeroes_the_modalities_outside_the_subset():
    import torch

    model = mt.LateFusion(n_inputs=16, hidden=8, rep_dim=2, seed=0)
    x = {c: torch.randn(5, 16) for c in mt.BRAIN_MODALITIES}
    changed = {**x, "t1": torch.randn(5, 16)}
    assert torch.equal(model.encode(x, "t2"), model.encode(changed, "t2")), "t1 must not reach a t2-only model"
    assert not torch.equal(model.encode(x, "t1+t2"), model.encode(changed, "t1+t2"))
    with pytest.raises(ValueError, match="unknown modality 'flair'"):
        model.encode(x, "t1+flair")


def test_late_fusion_learns_from_the_informative_modality_only():
    rng = np.random.default_rng(0)
    people = {}
    for p in ("p1", "p2", "p3"):
        y = rng.integers(0, 2, 600)
        x = {c: rng.normal(size=(600, 16)).astype(np.float32) for c in mt.BRAIN_MODALITIES}
        x["t1"][:, :4] += 2.0 * (2 * y[:, None] - 1)  # only t1 carries the label
        people[p] = (x, y)
    settings = {"test_subjects": ["p3"], "fractions": [1.0], "max_train": None, "seeds": 1}
    settings.update(hidden=8, rep_dim=2, steps=100, lr=0.02)
    results = mt.late_fusion_sweep(people, settings, progress=False).set_index("subset")
    assert results.loc["t1", "accuracy"] > 0.95 and results.loc["t2", "accuracy"] < 0.65
    assert results.loc["t1", "refit error"] < results.loc["t1c+t2", "refit error"]
    diff = mt.late_fusion_differences(results.reset_index(), "t1+t1c+t2", "t2")
    assert diff.loc[1.0, "low"] > 0.2, "all three modalities (with t1) must beat t2 alone, clearly"
    with pytest.raises(ValueError, match="not among the loaded people"):
        mt.late_fusion_sweep(people, {**settings, "test_subjects": ["nobody"]}, progress=False)


def test_a_brain_subject_is_z_scored_on_its_mask_and_unknown_people_are_named():
    pytest.importorskip("nibabel")
    from medvae_lib import data

    manifest = data.load_manifest("brain_mri")
    if not manifest.file("TCGA-FG-6692/t1").local.is_file():
        pytest.skip("../shared/data/brain_mri is not here")
    v = mt.load_brain_subject("TCGA-FG-6692", manifest)
    inside = v["t2"][v["mask"]]
    assert abs(inside.mean()) < 1e-3 and abs(inside.std() - 1) < 1e-3 and v["t2"][~v["mask"]].max() == 0
    with pytest.raises(ValueError, match="people"):
        mt.load_brain_subject("TCGA-XX-0000", manifest)
