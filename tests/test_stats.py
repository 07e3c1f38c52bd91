"""The statistics module: intervals that cover as often as they say, and why item-level ones do not."""

import numpy as np
import pytest

from medvae_lib import stats
from medvae_lib.latent_downstream import auroc

# Designs with a known answer (true mean 0): one training run on 30 people with 20 correlated patches
# each; five seeds crossed with 20 cases; three seeds on independent test images, where the seed
# variance dominates.
DESIGNS = {
    "people x patches": dict(
        n_seeds=1, n_clusters=30, per_cluster=20, sd_seed=0, sd_cluster=1, sd_item=1
    ),
    "seeds x cases": dict(
        n_seeds=5,
        n_clusters=20,
        per_cluster=5,
        sd_seed=0.5,
        sd_cluster=1,
        sd_inter=0.3,
        sd_item=1,
    ),
    "seeds x images": dict(
        n_seeds=3, n_clusters=200, per_cluster=1, sd_seed=1, sd_cluster=1
    ),
}


@pytest.mark.parametrize("design", list(DESIGNS))
def test_nominal_95_percent_covers_93_to_97_percent(design):
    cover = stats.coverage(stats.mean_interval, 2000, seed=1, **DESIGNS[design])
    assert 0.93 <= cover <= 0.97, cover


@pytest.mark.parametrize("design", ["people x patches", "seeds x images"])
def test_item_bootstrap_under_covers(design):
    """The reason the book resamples seeds and people, not patches or images: correlated patches of one
    person, or every test image scored by the same three trained networks (which another three seeds
    would shift together), make the item bootstrap's '95 %' interval miss most of the time."""
    cover = stats.coverage(stats.item_bootstrap, 500, seed=1, **DESIGNS[design])
    assert cover < 0.6, cover


def test_one_seed_independent_items_is_the_t_interval():
    x = np.array([0.3, -0.1, 0.5, 0.2, 0.0, 0.4])
    r = stats.mean_interval(x)
    half = 2.5706 * x.std(ddof=1) / np.sqrt(x.size)
    assert r["mean"] == pytest.approx(x.mean())
    assert r["high"] - r["mean"] == pytest.approx(half, rel=1e-3)
    assert r["df"] == 5


def test_clusters_of_equal_items_count_once():
    """Copying each person's value ten times adds no information: the interval stays that of 4 people."""
    people = np.array([1.0, 2.0, 0.5, 1.5])
    once = stats.mean_interval(people)
    tenfold = stats.mean_interval(
        np.repeat(people, 10), clusters=np.repeat(list("abcd"), 10)
    )
    assert tenfold["low"] == pytest.approx(once["low"])
    assert tenfold["n_clusters"] == 4
    naive = stats.mean_interval(np.repeat(people, 10))
    assert naive["high"] - naive["low"] < 0.5 * (once["high"] - once["low"])


def test_paired_difference_pairs_seeds_and_items():
    rng = np.random.default_rng(0)
    base = rng.normal(
        0, 5, (3, 50)
    )  # large seed-and-image spread shared by both methods
    a, b = base + 0.2 + rng.normal(0, 0.01, base.shape), base
    r = stats.paired_difference(a, b)
    assert r["low"] > 0.15 and r["high"] < 0.25
    assert r["per_seed"] == pytest.approx([0.2] * 3, abs=0.01)
    assert r["a_better"] == 1.0


def test_seed_spread_widens_the_interval():
    """Per-seed differences +5, +4, +9, -0.2 on many items: the interval is that of four seeds."""
    per_seed = np.array([5.5, 4.1, 9.4, -0.2])
    rng = np.random.default_rng(0)
    diff = per_seed[:, None] + rng.normal(0, 0.5, (4, 400))
    r = stats.paired_difference(diff, np.zeros_like(diff))
    assert r["low"] < 0 < r["high"]
    assert stats.item_bootstrap(diff)["low"] > 4


def test_statistic_difference_auroc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    good = labels[None, :] + rng.normal(0, 0.8, (3, 300))
    weak = labels[None, :] + rng.normal(0, 2.0, (3, 300))
    r = stats.statistic_difference(auroc, labels, good, weak, n_resamples=300)
    assert r["low"] > 0
    same = stats.statistic_difference(
        auroc, labels, good, good + 1e-9 * rng.normal(size=good.shape), n_resamples=300
    )
    assert same["low"] <= 0 <= same["high"]


def test_refuses_bad_input():
    with pytest.raises(stats.StatsError, match="NaN"):
        stats.mean_interval([1.0, np.nan, 2.0])
    with pytest.raises(stats.StatsError, match="at least two"):
        stats.mean_interval([[1.0, 2.0]], clusters=["a", "a"])
    with pytest.raises(stats.StatsError, match="same shape"):
        stats.paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(stats.StatsError, match="one label per item"):
        stats.mean_interval([1.0, 2.0, 3.0], clusters=["a", "b"])


def test_verdict_reads_null_results_one_way():
    assert stats.verdict({"mean": 0.1, "low": -0.2, "high": 0.4}).startswith(
        "not detectable at this size"
    )
    assert stats.verdict({"mean": 0.5, "low": 0.2, "high": 0.8}, " dB").startswith(
        "above 0"
    )
