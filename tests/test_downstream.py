"""Chapter 4's scoring and classifiers (medvae_lib.latent_downstream): AUROC and its bootstrap intervals,
the linear probe, the MONAI ResNet family and its training, on small synthetic data."""

import itertools

import numpy as np
import pytest
import torch

from medvae_lib.latent_downstream import (
    Standardised,
    auroc,
    bootstrap_auroc,
    classifier_scores,
    linear_probe,
    paired_auroc_difference,
    probe_scores,
    train_classifier,
)
from medvae_lib.models import build_classifier

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def noisy_scores(n: int, noise: float, seed: int, n_seeds: int = 1):
    """Balanced labels and scores ``label + noise * N(0, 1)``: a separation that ``noise`` controls."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return labels, labels + noise * rng.standard_normal((n_seeds, n))


def bright_or_dark(n: int, seed: int, side: int = 8):
    """Images whose class is their brightness (0.3 or 0.7 on average) under pixel noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = (
        0.3
        + 0.4 * labels.float()[:, None, None, None]
        + 0.15 * torch.randn(n, 1, side, side, generator=g)
    )
    return x, labels


# -- AUROC ------------------------------------------------------------------------------------------


def test_auroc_extremes():
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.2, 0.8, 0.9, 0.3, 0.7]
    assert auroc(labels, scores) == 1.0
    assert auroc(labels, [-s for s in scores]) == 0.0
    assert auroc(labels, [0.4] * 6) == 0.5  # constant scores: every pair is a tie


def test_auroc_counts_concordant_pairs():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 25)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 6, 25).astype(float)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    concordant = sum(
        1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg)
    )
    assert auroc(labels, scores) == pytest.approx(
        concordant / (len(pos) * len(neg)), abs=1e-12
    )
    assert auroc(torch.tensor(labels), torch.tensor(scores)) == auroc(
        labels, scores
    )  # tensors work too


def test_auroc_rejects_what_it_cannot_score():
    with pytest.raises(ValueError, match="both classes"):
        auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="binary labels"):
        auroc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="1 scores are NaN or infinite"):
        auroc([0, 1, 1], [0.1, float("nan"), 0.3])
    with pytest.raises(ValueError, match="NaN or infinite"):
        auroc([0, 1, 1], [0.1, float("inf"), 0.3])


# -- bootstrap intervals ----------------------------------------------------------------------------


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_images():
    widths = {}
    for n in (40, 400):
        labels, scores = noisy_scores(n, noise=1.0, seed=n)
        table = bootstrap_auroc(labels, {"m": scores}, n_resamples=300)
        row = table.loc["m"]
        assert row["AUROC"] == pytest.approx(auroc(labels, scores[0]))
        assert row["95% CI low"] < row["AUROC"] < row["95% CI high"]
        widths[n] = row["95% CI high"] - row["95% CI low"]
    assert widths[400] < 0.6 * widths[40]  # about 1 / sqrt(10) in theory


def test_bootstrap_reports_the_spread_over_seeds():
    labels, scores = noisy_scores(30, noise=1.0, seed=0, n_seeds=3)
    same = np.repeat(scores[:1], 2, axis=0)
    table = bootstrap_auroc(
        labels,
        {"same": same, "different": scores, "single": scores[0]},
        n_resamples=100,
    )
    assert table.loc["same", "seed std"] == 0.0 and table.loc["same", "seeds"] == 2
    per_seed = [auroc(labels, row) for row in scores]
    assert table.loc["different", "seed std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert table.loc["different", "AUROC"] == pytest.approx(np.mean(per_seed))
    assert table.loc["single", "seeds"] == 1 and table.loc["single", "seed std"] == 0.0
    # one draw of test images for every method: two identical rows give one and the same interval
    low_high = ["95% CI low", "95% CI high"]
    assert list(table.loc["same", low_high]) == list(table.loc["single", low_high])


def test_bootstrap_is_reproducible_and_checks_shapes():
    labels, scores = noisy_scores(30, noise=1.0, seed=0)
    a = bootstrap_auroc(labels, {"m": scores}, n_resamples=50, seed=3)
    b = bootstrap_auroc(labels, {"m": scores}, n_resamples=50, seed=3)
    c = bootstrap_auroc(labels, {"m": scores}, n_resamples=50, seed=4)
    assert a.equals(b) and not a.equals(c)
    with pytest.raises(ValueError, match="m: 29 scores per seed for 30 labels"):
        bootstrap_auroc(labels, {"m": scores[:, 1:]}, n_resamples=10)


def test_paired_difference_of_a_method_with_itself_is_exactly_zero():
    labels, scores = noisy_scores(40, noise=1.0, seed=0, n_seeds=2)
    result = paired_auroc_difference(labels, scores, scores.copy(), n_resamples=200)
    assert result == {"difference": 0.0, "95% CI low": 0.0, "95% CI high": 0.0}


def test_paired_difference_finds_a_clearly_better_method():
    labels, good = noisy_scores(80, noise=0.3, seed=0, n_seeds=2)
    _, poor = noisy_scores(80, noise=3.0, seed=1, n_seeds=2)
    forward = paired_auroc_difference(labels, good, poor, n_resamples=150)
    expected = np.mean([auroc(labels, r) for r in good]) - np.mean(
        [auroc(labels, r) for r in poor]
    )
    assert forward["difference"] == pytest.approx(expected)
    assert 0 < forward["95% CI low"] < forward["difference"] < forward["95% CI high"]
    backward = paired_auroc_difference(labels, poor, good, n_resamples=150)
    assert backward["difference"] == pytest.approx(-forward["difference"])
    assert backward["95% CI high"] == pytest.approx(
        -forward["95% CI low"]
    )  # the same resamples


# -- intervals over seeds and test images (medvae_lib.stats) ---------------------------------------


def test_auroc_table_reads_chance_and_keeps_the_per_seed_values():
    from medvae_lib.latent_downstream import auroc_table

    labels, good = noisy_scores(200, noise=1.0, seed=0, n_seeds=3)
    _, chance = noisy_scores(200, noise=1.0, seed=1, n_seeds=3)
    chance = chance - labels  # pure noise: AUROC about 0.5
    table = auroc_table(
        labels, {"good": good, "noise": chance, "one seed": good[:1]}, n_resamples=300
    )
    per_seed = [auroc(labels, row) for row in good]
    assert table.loc["good", "AUROC"] == pytest.approx(np.mean(per_seed))
    assert table.loc["good", "per seed"] == ", ".join(f"{v:.3f}" for v in per_seed)
    assert table.loc["good", "seeds"] == 3 and table.loc["one seed", "seeds"] == 1
    for method in table.index:
        row = table.loc[method]
        assert row["95% CI low"] < row["AUROC"] < row["95% CI high"]
    assert table.loc["good", "vs chance (0.5)"] == "above 0"
    assert table.loc["noise", "vs chance (0.5)"] == "not detectable at this size"
    assert table.loc["noise", "95% CI low"] < 0.5 < table.loc["noise", "95% CI high"]


def test_auroc_intervals_include_the_spread_over_seeds():
    """Two seeds that disagree: an interval over test images alone would exclude zero (each seed's
    difference is far from it); with the seed variance added it does not."""
    from medvae_lib.latent_downstream import auroc_difference

    labels, base = noisy_scores(400, noise=1.0, seed=0, n_seeds=1)
    _, better = noisy_scores(400, noise=0.5, seed=1, n_seeds=1)
    _, worse = noisy_scores(400, noise=2.0, seed=2, n_seeds=1)
    a = np.concatenate([better, worse])  # seed 0 well above base, seed 1 well below
    b = np.concatenate([base, base])
    mixed = auroc_difference(labels, a, b, n_resamples=300)
    first = auroc_difference(labels, better, base, n_resamples=300)
    assert first["95% CI low"] > 0 and first["reading"] == "above 0"
    assert mixed["95% CI low"] < 0 < mixed["95% CI high"]
    assert mixed["reading"] == "not detectable at this size"
    per_seed = [float(v) for v in mixed["per seed"].split(", ")]
    assert per_seed[0] > 0.05 and per_seed[1] < -0.05
    assert mixed["difference"] == pytest.approx(
        np.mean([auroc(labels, r) for r in a]) - auroc(labels, base[0])
    )


def test_auroc_difference_of_a_method_with_itself_is_zero_and_paired_table_has_a_row_per_pair():
    from medvae_lib.latent_downstream import auroc_difference, paired_table

    labels, scores = noisy_scores(60, noise=1.0, seed=0, n_seeds=2)
    same = auroc_difference(labels, scores, scores.copy(), n_resamples=100)
    assert (same["difference"], same["95% CI low"], same["95% CI high"]) == (
        0.0,
        0.0,
        0.0,
    )
    _, other = noisy_scores(60, noise=2.0, seed=5, n_seeds=2)
    table = paired_table(
        labels, {"a": scores, "b": other}, [("a", "b"), ("b", "a")], n_resamples=100
    )
    assert list(table.index) == ["a - b", "b - a"]
    assert table.loc["a - b", "difference"] == pytest.approx(
        -table.loc["b - a", "difference"]
    )
    assert table.loc["a - b", "95% CI low"] == pytest.approx(
        -table.loc["b - a", "95% CI high"]
    )


def test_trivial_controls_of_a_test_split():
    from medvae_lib.latent_downstream import trivial_controls

    controls = trivial_controls(np.array([1, 1, 1, 0]))
    assert controls == {
        "test images": 4,
        "share of class 1": 0.75,
        "majority-class rate": 0.75,
        "AUROC of a constant score": 0.5,
    }
    assert trivial_controls(torch.tensor([0, 0, 0, 0, 1]))[
        "majority-class rate"
    ] == pytest.approx(0.8)


# -- the linear probe -------------------------------------------------------------------------------


def test_linear_probe_keeps_the_best_c_and_separates_separable_data():
    rng = np.random.default_rng(0)

    def split(n):
        y = np.arange(n) % 2
        x = rng.standard_normal((n, 1, 4, 4)) + 1.5 * y[:, None, None, None]
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    (tx, ty), (vx, vy), (sx, sy) = split(60), split(60), split(200)
    model, table = linear_probe(tx, ty, vx, vy, cs=(1e-4, 0.01, 1.0))
    assert list(table["C"]) == [1e-4, 0.01, 1.0]
    assert auroc(vy, probe_scores(model, vx)) == pytest.approx(
        table["validation AUROC"].max()
    )
    assert model[-1].C in set(
        table.loc[table["validation AUROC"] == table["validation AUROC"].max(), "C"]
    )
    assert auroc(sy, probe_scores(model, sx)) > 0.95


def test_linear_probe_returns_the_best_c_wherever_it_is_in_the_list():
    """50 features, one informative, 30 training images: here the strongest penalty validates best, and it
    is neither the first nor the last C tried, so neither a first-fit nor a last-fit probe passes."""
    rng = np.random.default_rng(1)

    def split(n):
        y = np.arange(n) % 2
        x = rng.standard_normal((n, 50))
        x[:, 0] += 1.5 * y
        return torch.tensor(x), torch.tensor(y)

    (tx, ty), (vx, vy) = split(30), split(300)
    model, table = linear_probe(tx, ty, vx, vy, cs=(1.0, 1e-2, 1e3))
    scores = dict(zip(table["C"], table["validation AUROC"], strict=True))
    assert scores[1e-2] > max(scores[1.0], scores[1e3])
    assert model[-1].C == 1e-2
    assert auroc(vy, probe_scores(model, vx)) == scores[1e-2]


# -- the classifier family --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "shape", "num_classes"),
    [
        (1, (8, 8), 1),
        (3, (8, 8), 4),
        (1, (32, 32), 2),
        (4, (13, 9), 1),
        (1, (2, 2), 1),
        (1, (8, 8, 8), 3),
    ],
)
def test_build_classifier_takes_any_input_size(channels, shape, num_classes):
    model = build_classifier(
        channels, spatial_dims=len(shape), width=4, num_classes=num_classes
    ).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, *shape))
    assert out.shape == (2, num_classes) and torch.isfinite(out).all()


def test_build_classifier_layout():
    model = build_classifier(2, width=4, layers=(2, 1, 1, 3))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (
        1,
        1,
    )  # no striding in the stem
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 1, 1, 3]
    assert model.fc.in_features == 8 * 4 and model.fc.out_features == 1
    assert build_classifier(1, width=4, stem_stride=2).conv1.stride == (2, 2)
    seen = {}

    def record(module, inputs, output):
        seen["shape"] = output.shape

    model.layer1.register_forward_hook(record)
    model.eval()(torch.randn(2, 2, 8, 8))
    assert seen["shape"][-2:] == (8, 8), (
        "no stem striding and no max pooling: stage 1 sees the full 8x8 input"
    )
    model3d = build_classifier(1, spatial_dims=3, width=4)
    assert isinstance(model3d.conv1, torch.nn.Conv3d)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 0}, "must be positive"),
        ({"in_channels": 1, "width": 0}, "must be positive"),
        ({"in_channels": 1, "num_classes": 0}, "must be positive"),
        ({"in_channels": 1, "stem_stride": 0}, "must be positive"),
        ({"in_channels": 1, "spatial_dims": 1}, "spatial_dims must be 2 or 3"),
        ({"in_channels": 1, "layers": (1, 1, 1)}, "four positive block counts"),
        ({"in_channels": 1, "layers": (1, 0, 1, 1)}, "four positive block counts"),
    ],
)
def test_build_classifier_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_classifier(**kwargs)


# -- training a classifier --------------------------------------------------------------------------


def test_train_classifier_learns_brightness():
    x, y = bright_or_dark(64, seed=0)
    tx, ty = bright_or_dark(64, seed=1)
    model, history = train_classifier(x, y, steps=25, batch_size=16, width=4, lr=3e-3)
    assert not model.training and len(history) >= 2 and "bce" in history[-1]
    scores = classifier_scores(model, tx, batch_size=20)
    assert scores.shape == (64,)
    assert auroc(ty, scores) > 0.95


def test_train_classifier_is_reproducible():
    x, y = bright_or_dark(32, seed=0)
    tx, _ = bright_or_dark(16, seed=1)
    runs = [
        train_classifier(x, y, steps=5, batch_size=8, width=4, seed=s)[0]
        for s in (0, 0, 1)
    ]
    a, b, c = (classifier_scores(m, tx) for m in runs)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_train_classifier_standardises_with_the_training_statistics():
    g = torch.Generator().manual_seed(0)
    x = (
        torch.randn(20, 2, 4, 4, generator=g)
        * torch.tensor([1.0, 50.0])[None, :, None, None]
    )
    x = x + torch.tensor([3.0, -100.0])[None, :, None, None]
    y = torch.arange(20) % 2
    model, _ = train_classifier(x, y, steps=1, batch_size=4, width=4)
    assert isinstance(model, Standardised)
    per_channel = x.transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(model.mean.flatten(), per_channel.mean(1))
    torch.testing.assert_close(model.std.flatten(), per_channel.std(1))
    assert {"mean", "std"} <= set(model.state_dict()), (
        "the statistics are saved with the weights"
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.model((x - model.mean) / model.std))
        standardised = model.model(
            (x - per_channel.mean(1)[:, None, None]) / per_channel.std(1)[:, None, None]
        )
        torch.testing.assert_close(model(x), standardised)


def test_train_classifier_does_not_care_about_the_input_scale():
    """Standardisation makes ``a * x + b`` train the same classifier as ``x``, up to float rounding (which
    Adam's first, sign-like steps amplify to about 1e-3 on these logits)."""
    x, y = bright_or_dark(32, seed=0)
    tx, _ = bright_or_dark(16, seed=1)
    plain, _ = train_classifier(x, y, steps=5, batch_size=8, width=4)
    scaled, _ = train_classifier(100 * x - 7, y, steps=5, batch_size=8, width=4)
    np.testing.assert_allclose(
        classifier_scores(plain, tx), classifier_scores(scaled, 100 * tx - 7), atol=2e-2
    )


def test_train_classifier_rejects_bad_input():
    x, y = bright_or_dark(8, seed=0)
    bad = x.clone()
    bad[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        train_classifier(bad, y, steps=1)
    with pytest.raises(ValueError, match="binary 0/1 labels"):
        train_classifier(x, torch.arange(8) % 3, steps=1)
    with pytest.raises(ValueError, match="N labels"):
        train_classifier(x, y[:7], steps=1)
    with pytest.raises(ValueError, match=r"\(N, C, \*spatial\)"):
        train_classifier(x.flatten(1), y, steps=1)


def test_the_bootstrap_auroc_by_ranks_equals_scikit_learn_with_ties():
    from medvae_lib.latent_downstream import _auroc_by_ranks

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 6, 200).astype(float) + labels * 0.5  # many ties
    assert _auroc_by_ranks(labels, scores) == pytest.approx(
        auroc(labels, scores), abs=1e-12
    )


def test_the_rate_distortion_sweep_compares_each_latent_with_a_resize_of_the_same_size():
    from medvae_lib.latent_downstream import rate_distortion, resize_side

    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.arange(n) % 2
        x = (
            torch.rand(n, 1, 16, 16, generator=g) * 0.5 + 0.5 * y[:, None, None, None]
        ).clamp(0, 1)
        return x, y

    splits = {"train": split(24), "val": split(16), "test": split(16)}
    models = ["medvae_4_1_2d", "medvae_8_4_2d"]
    table, pairs = rate_distortion(
        models, splits, steps=2, width=8, batch_size=8, seeds=(0, 1)
    )
    assert len(table) == 4 and set(table.method) == {"MedVAE latent", "resize"}
    assert all(len(v.split(", ")) == 2 for v in pairs["per seed"]), (
        "one difference per seed"
    )
    assert set(pairs["reading"]) <= {
        "above 0",
        "below 0",
        "not detectable at this size",
    }
    assert (
        resize_side(16, "medvae_8_4_2d") == 4 and resize_side(32, "medvae_4_3_2d") == 14
    )
    latent = table[table.method == "MedVAE latent"].set_index("configuration")[
        "stored values"
    ]
    resized = table[table.method == "resize"].set_index("configuration")[
        "stored values"
    ]
    assert (
        latent.to_dict()
        == resized.to_dict()
        == {"medvae_4_1_2d": 16, "medvae_8_4_2d": 16}
    )
    assert set(pairs.index.get_level_values("metric")) == {
        "PSNR (dB)",
        "MS-SSIM",
        "probe AUROC",
    }
    assert (pairs["95% CI low"] <= pairs["difference"] + 1e-12).all()
    assert (pairs["difference"] <= pairs["95% CI high"] + 1e-12).all()
    wide = table.pivot(index="configuration", columns="method", values="PSNR (dB)")
    psnr_pairs = pairs.xs("PSNR (dB)", level="metric")["difference"]
    assert np.allclose(psnr_pairs, wide["MedVAE latent"] - wide["resize"])
    with pytest.raises(ValueError, match="3D"):
        resize_side(16, "medvae_4_1_3d")
    with pytest.raises(ValueError, match="at least one seed"):
        rate_distortion(models, splits, steps=1, width=8, batch_size=8, seeds=())


def test_published_latents_are_the_stage2_projection_of_the_posterior_mean():
    """As MedVAE's MVAE returns for 2D images: channel_proj(channel_ds(mu) + mu) of the
    image in [-1, 1]; a three-channel model reads the grey image on each channel."""
    from medvae_lib.latent_downstream import published_latents
    from medvae_lib.models import build_autoencoder

    torch.manual_seed(0)
    model = build_autoencoder("medvae_4_1_2d", width=8).eval()
    x = torch.rand(3, 1, 32, 32)
    z = published_latents(model, x, batch_size=2)
    with torch.no_grad():
        mu = model.encode(x * 2 - 1)[0]
        assert torch.allclose(z, model.project(mu), atol=1e-6)
    assert not torch.allclose(z, mu, atol=1e-3)
    three = build_autoencoder("medvae_4_3_2d", width=8, in_channels=3)
    assert published_latents(three, x).shape == (3, 3, 8, 8)
