"""The simulation of chapter 6: known Bayes risk, exact and sampled eta agree, subsets mask what they say."""

import numpy as np
import pandas as pd
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
    assert mt.risk_exact(problem, a) == pytest.approx(
        np.mean((y - x @ a.T) ** 2), rel=0.02
    )


def test_nothing_beats_the_bayes_risk(problem):
    x, y = mt.sample(problem, 20_000, np.random.default_rng(1))
    ols = np.linalg.lstsq(x, y, rcond=None)[0].T
    assert mt.risk_exact(problem, ols) >= problem.bayes_risk()
    assert (
        mt.risk_exact(problem, ols) - problem.bayes_risk() < 0.01
    )  # and a large sample nearly reaches it


def test_eta_of_the_true_encoder_is_zero(problem):
    assert abs(mt.eta_exact(problem, problem.arrays["g_star"])) < 1e-9
    assert abs(mt.eta_population(problem, "a+b+c+d")) < 1e-9
    # A single modality misses part of g*: its best encoder is strictly worse.
    assert mt.eta_population(problem, "a") > 0.1


@pytest.mark.parametrize("nonlinear", [False, True])
def test_eta_is_never_below_zero(nonlinear):
    problem = mt.Problem(overlap=0.5, nonlinear=nonlinear)
    res = mt.sweep(
        problem, ["a", "a+c", "a+b+c+d"], [6, 40, 400], seeds=2, eval_samples=20_000
    )
    assert (res["eta"] > -0.01).all()
    assert (res["excess risk"] > -0.01).all()
    # The refitted head is at least as good as the trained one: eta <= excess risk (up to sampling noise).
    assert (res["eta"] <= res["excess risk"] + 0.01).all()


def test_sampled_eta_agrees_with_the_closed_form(problem):
    x, y = mt.sample(problem, 300, np.random.default_rng(2))
    learned = mt.fit_erm(problem, x, y, "a+b")
    rng = np.random.default_rng(3)
    fit, test = mt.sample(problem, 50_000, rng), mt.sample(problem, 50_000, rng)
    assert mt.eta_sampled(learned, fit, test) == pytest.approx(
        mt.eta_exact(problem, learned.encoder), abs=0.02
    )
    assert mt.risk_sampled(learned, *test) == pytest.approx(
        mt.risk_exact(problem, mt.linear_map(learned)), rel=0.03
    )


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
    small = mt.rademacher_linear(
        problem, mt.sample(problem, 100, rng)[0], "a", 1.0, 200, 0
    )
    large = mt.rademacher_linear(
        problem, mt.sample(problem, 1600, rng)[0], "a", 1.0, 200, 0
    )
    assert small / large == pytest.approx(4.0, rel=0.15)
    more = mt.rademacher_linear(
        problem, mt.sample(problem, 1600, rng)[0], "a+b+c+d", 1.0, 200, 0
    )
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
    assert y.shape == (216,) and all(
        x[c].shape == (216, 16) for c in mt.BRAIN_MODALITIES
    )
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
    assert torch.equal(model.encode(x, "t2"), model.encode(changed, "t2")), (
        "t1 must not reach a t2-only model"
    )
    assert not torch.equal(model.encode(x, "t1+t2"), model.encode(changed, "t1+t2"))
    with pytest.raises(ValueError, match="unknown modality 'flair'"):
        model.encode(x, "t1+flair")


def test_late_fusion_learns_from_the_informative_modality_only():
    rng = np.random.default_rng(0)
    people = {}
    for p in ("p1", "p2", "p3"):
        y = rng.integers(0, 2, 600)
        x = {
            c: rng.normal(size=(600, 16)).astype(np.float32)
            for c in mt.BRAIN_MODALITIES
        }
        x["t1"][:, :4] += 2.0 * (2 * y[:, None] - 1)  # only t1 carries the label
        people[p] = (x, y)
    settings = {
        "test_subjects": ["p3"],
        "fractions": [1.0],
        "max_train": None,
        "seeds": 1,
    }
    settings.update(hidden=8, rep_dim=2, steps=100, lr=0.02)
    results = mt.late_fusion_sweep(people, settings, progress=False).set_index("subset")
    assert results.loc["t1", "accuracy"] > 0.95 and results.loc["t2", "accuracy"] < 0.65
    assert results.loc["t1", "refit error"] < results.loc["t1c+t2", "refit error"]
    diff = mt.late_fusion_comparisons(
        results.reset_index(), [("t1+t1c+t2", "t2")]
    ).set_index("fold")
    assert diff.loc["p3", "low"] > 0.2, (
        "all three modalities (with t1) must beat t2 alone, clearly"
    )
    with pytest.raises(ValueError, match="not among the loaded people"):
        mt.late_fusion_sweep(
            people, {**settings, "test_subjects": ["nobody"]}, progress=False
        )


def test_a_brain_subject_is_z_scored_on_its_mask_and_unknown_people_are_named():
    pytest.importorskip("nibabel")
    from medvae_lib import data

    manifest = data.load_manifest("brain_mri")
    if not manifest.file("TCGA-FG-6692/t1").local.is_file():
        pytest.skip("../shared/data/brain_mri is not here")
    v = mt.load_brain_subject("TCGA-FG-6692", manifest)
    inside = v["t2"][v["mask"]]
    assert (
        abs(inside.mean()) < 1e-3
        and abs(inside.std() - 1) < 1e-3
        and v["t2"][~v["mask"]].max() == 0
    )
    with pytest.raises(ValueError, match="people"):
        mt.load_brain_subject("TCGA-XX-0000", manifest)


# --- the crossover with intervals, ridge, and the leave-one-person-out analysis ---


def test_ridge_removes_the_interpolation_spike_and_approaches_least_squares_with_much_data():
    problem = mt.Problem(overlap=1.0, noise=0.2)
    spike = {"min-norm": [], "ridge": []}
    for s in range(20):
        x, y = mt.sample(
            problem, 32, np.random.default_rng([s, 0])
        )  # m = 32 inputs: the spike
        spike["min-norm"].append(
            mt.risk_exact(problem, mt.linear_map(mt.fit_erm(problem, x, y, "a+b+c+d")))
        )
        learned = mt.fit_ridge_erm(problem, x, y, "a+b+c+d")
        spike["ridge"].append(mt.risk_exact(problem, mt.linear_map(learned)))
        assert learned.penalty in mt.PENALTIES
    assert np.median(spike["ridge"]) < 0.2 * np.median(spike["min-norm"])
    # With much data the penalty hardly matters: ridge and min-norm ERM give nearly the same map.
    x, y = mt.sample(problem, 5000, np.random.default_rng(1))
    a_ridge = mt.linear_map(mt.fit_ridge_erm(problem, x, y, "a+c"))
    a_ls = mt.linear_map(mt.fit_erm(problem, x, y, "a+c"))
    assert np.linalg.norm(a_ridge - a_ls) < 0.05 * np.linalg.norm(a_ls)
    # ... and ridge reads nothing outside the subset.
    assert np.abs(np.delete(a_ridge, problem.columns("a+c"), axis=1)).max() == 0
    with pytest.raises(ValueError, match="unknown estimator"):
        mt.sweep(problem, ["a"], [8], 1, estimator="lasso")


def test_wilson_interval_matches_known_values():
    low, high = mt.wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(
        0.5962, abs=1e-3
    )
    low, high = mt.wilson_interval(0, 20)
    assert (
        low == pytest.approx(0.0, abs=1e-12) and 0.1 < high < 0.2
    )  # never below 0, not empty
    with pytest.raises(ValueError):
        mt.wilson_interval(0, 0)


def _fake_sweep(small_risk, large_risk):
    rows = []
    for s, (a, b) in enumerate(zip(small_risk, large_risk, strict=True)):
        rows += [{"m": 16, "seed": s, "subset": "a", "excess risk": a}]
        rows += [{"m": 16, "seed": s, "subset": "a+b+c+d", "excess risk": b}]
    return pd.DataFrame(rows)


def test_crossover_counts_a_win_only_when_the_paired_intervals_say_so():
    rng = np.random.default_rng(0)
    base = rng.lognormal(size=200)
    clear = mt.crossover_intervals(_fake_sweep(base, base * 1.5), "a", "a+b+c+d")
    assert (
        clear.loc[16, "verdict"] == "fewer modalities win"
        and clear.loc[16, "share"] == 1.0
    )
    assert clear.loc[16, "log ratio"] == pytest.approx(np.log(1 / 1.5))
    # A coin flip: the small subset ahead on about half the seeds, no direction.
    flip = mt.crossover_intervals(
        _fake_sweep(base, base * rng.lognormal(0, 0.5, 200)), "a", "a+b+c+d"
    )
    assert flip.loc[16, "verdict"] == "not detectable"
    assert flip.loc[16, "share low"] < 0.5 < flip.loc[16, "share high"]
    # A few huge spikes in the large subset move its mean, not the log-scale verdict.
    spiky = base * 0.8
    spiky[:3] = 50.0
    res = mt.crossover_intervals(_fake_sweep(base, spiky), "a", "a+b+c+d")
    assert res.loc[16, "mean a+b+c+d"] > 2 * res.loc[16, "median a+b+c+d"]
    assert res.loc[16, "verdict"] == "more modalities win"


def test_theorem2_complexity_can_be_rescaled_to_a_ball_that_holds_the_trained_maps():
    problem = mt.Problem(overlap=0.3)
    radius = float(np.linalg.norm(problem.arrays["h_star"] @ problem.arrays["g_star"]))
    res = mt.sweep(problem, ["a", "a+b+c+d"], [16, 256], 3, rademacher_draws=20)
    plain = mt.theorem2_table(res)
    held = mt.theorem2_table(res, radius=radius)
    ratio = held["4 (R_M + R_all)"] / plain["4 (R_M + R_all)"]
    for m in (16, 256):
        expected = max(radius, res.loc[res.m == m, "norm"].max()) / radius
        np.testing.assert_allclose(ratio.xs(m, level="m"), expected, rtol=1e-9)
    assert (held["eta"] == plain["eta"]).all()


def test_brain_patches_name_the_slice_of_every_window():
    v = _volumes()
    x, y, z = mt.brain_patches(
        v, slices=(1, 6, 2), patch=4, quantile=0.5, with_slices=True
    )
    assert z.shape == y.shape and list(np.unique(z)) == [1, 3, 5]
    assert (np.bincount(z)[[1, 3, 5]] == 36).all()
    # the windows of slice 3 are the ones cut from v[..., 3]
    np.testing.assert_array_equal(x["t2"][z == 3][0], v["t2"][4:8, 4:8, 3].ravel())


def test_batched_subset_training_follows_each_models_own_run():
    import torch

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    x = {c: rng.normal(size=(64, 16)).astype(np.float32) for c in mt.BRAIN_MODALITIES}
    x["t2"][:, :3] += 1.5 * (2 * y[:, None] - 1)
    subsets = ["t1", "t2", "t1+t1c+t2"]
    bank = mt.train_late_fusion_subsets(
        x, y, subsets, hidden=8, rep_dim=2, steps=30, lr=0.01, seed=3
    )
    for subset in subsets:
        alone = mt.train_late_fusion(
            x, y, subset, hidden=8, rep_dim=2, steps=30, lr=0.01, seed=3
        )
        np.testing.assert_allclose(
            mt.late_fusion_scores(bank[subset], x, subset),
            mt.late_fusion_scores(alone, x, subset),
            atol=1e-4,
        )
    # the t1-only model never saw t2, so its weights on t2's encoder are those it started from
    start = mt.LateFusion(16, 8, 2, seed=3)
    assert torch.equal(
        bank["t1"].encoders["t2"][0].weight, start.encoders["t2"][0].weight
    )


def test_fold_conclusion_states_a_direction_only_where_every_fold_agrees():
    assert (
        mt.fold_conclusion([0.01, 0.02, 0.1], [0.1, 0.2, 0.3]) == "ahead in every fold"
    )
    assert (
        mt.fold_conclusion([-0.3, -0.2, -0.1], [-0.1, -0.05, -0.01])
        == "behind in every fold"
    )
    assert (
        mt.fold_conclusion([0.01, -0.2, 0.1], [0.1, -0.05, 0.3])
        == "depends on the person"
    )
    assert (
        mt.fold_conclusion([0.01, -0.2, 0.1], [0.1, 0.05, 0.3])
        == "depends on the person"
    )
    assert mt.fold_conclusion([-0.1, -0.2], [0.1, 0.05]) == "not detectable in any fold"


def _fake_late_fusion(effects, seeds=3, slices=5, per_slice=20, seed=0):
    """Results of the shape late_fusion_sweep returns: subset 'big' right more often than 'small' by
    ``effects[person]``, with a shared slice effect (so patches of a slice are correlated)."""
    rng = np.random.default_rng(seed)
    rows = []
    for person, effect in effects.items():
        groups = np.repeat(np.arange(slices), per_slice)
        slice_effect = rng.normal(0, 0.15, slices)[groups]
        for s in range(seeds):
            p = np.clip(0.6 + slice_effect + rng.normal(0, 0.02), 0.05, 0.95)
            base = rng.random(groups.size)
            for subset, shift in (("t1", 0.0), ("t1+t1c+t2", effect)):
                correct = base < np.clip(p + shift, 0, 1)
                rows.append(
                    {
                        "test person": person,
                        "fraction": 1.0,
                        "seed": s,
                        "subset": subset,
                        "correct": correct,
                        "groups": groups,
                    }
                )
    return pd.DataFrame(rows)


def test_late_fusion_comparisons_give_each_fold_and_the_pool_and_read_disagreement_as_such():
    agree = _fake_late_fusion({"p1": 0.2, "p2": 0.25, "p3": 0.2})
    long = mt.late_fusion_comparisons(agree, [("t1+t1c+t2", "t1")])
    assert set(long["fold"]) == {"p1", "p2", "p3", "pooled"}
    assert (long["low"] > 0).all()
    table = mt.comparison_table(long)
    assert table.loc[("t1+t1c+t2 minus t1", 1.0), "conclusion"] == "ahead in every fold"
    flip = _fake_late_fusion({"p1": 0.25, "p2": -0.25, "p3": 0.25})
    table = mt.comparison_table(mt.late_fusion_comparisons(flip, [("t1+t1c+t2", "t1")]))
    assert (
        table.loc[("t1+t1c+t2 minus t1", 1.0), "conclusion"] == "depends on the person"
    )
    # clustering by slice widens the interval against treating the 100 patches as independent
    fold = agree[agree["test person"] == "p1"]
    no_groups = fold.assign(groups=[np.arange(100)] * len(fold))
    wide = mt.late_fusion_comparisons(fold, [("t1+t1c+t2", "t1")]).iloc[0]
    narrow = mt.late_fusion_comparisons(no_groups, [("t1+t1c+t2", "t1")]).iloc[0]
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"]


def test_late_fusion_intervals_pool_over_people_as_clusters():
    res = _fake_late_fusion({"p1": 0.0, "p2": 0.0, "p3": 0.0})
    long = mt.late_fusion_intervals(res).set_index(["subset", "fold"])
    pooled = long.loc[("t1", "pooled")]
    folds = long.loc["t1"].drop("pooled")
    assert pooled["mean"] == pytest.approx(folds["mean"].mean())  # equal-sized folds
    assert pooled["low"] < pooled["mean"] < pooled["high"]
    assert set(mt.interval_table(long.reset_index()).index.get_level_values(0)) == {
        "p1",
        "p2",
        "p3",
        "pooled",
    }


def test_chain_table_has_the_papers_table4_layout():
    problem = mt.Problem(overlap=0.3)
    chain = ["a", "a+b", "a+b+c", "a+b+c+d"]
    table = mt.overlap_sweep(problem, [0.0, 0.5, 1.0], chain, 64, 2)
    t4 = mt.chain_table(table, chain)
    assert list(t4.columns) == [1.0, 0.5, 0.0]
    inf = t4.loc["eta (infinite data)"]
    assert list(inf.index) == [1, 2, 3, 4]
    assert (inf.loc[4].abs() < 1e-9).all(), (
        "all four modalities reach g* at every overlap"
    )
    assert (inf.diff().iloc[1:] <= 1e-12).all().all(), (
        "more modalities never worse at infinite data"
    )
    assert inf.loc[1, 0.0] > inf.loc[1, 1.0], (
        "a single modality loses more as the overlap falls"
    )
