"""Chapter 2's seeds comparison: ablations over seeds and paired tables whose intervals include them."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny

from medvae_lib import medvae_stage1
from medvae_lib.data_prep import prepare_splits
from medvae_lib.stats import item_bootstrap


@pytest.fixture(scope="module")
def images(manifest):
    return prepare_splits(manifest, "ci", 32, n={"train": 64})["train"][0]


def _scores(per_seed_shift, n_images=200, noise=0.05, seed=0):
    """A seed_fidelity-shaped table: method "b" scores 0, "a" scores the seed's shift plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for s, shift in enumerate(per_seed_shift):
        for i in range(n_images):
            rows.append(
                {
                    "seed": s,
                    "method": "b",
                    "image": i,
                    "PSNR (dB)": 0.0,
                    "sharpness error": 0.5,
                }
            )
            value = shift + noise * rng.standard_normal()
            rows.append(
                {
                    "seed": s,
                    "method": "a",
                    "image": i,
                    "PSNR (dB)": value,
                    "sharpness error": 0.5 - value,
                }
            )
    return pd.DataFrame(rows)


def test_seed_paired_table_includes_the_spread_between_seeds():
    # the seeds disagree: +1, -0.2, +0.5 dB; each seed's images agree closely
    scores = _scores([1.0, -0.2, 0.5])
    table = medvae_stage1.seed_paired_table(
        scores, [("a", "b")], metrics=("PSNR (dB)", "sharpness error")
    )
    row = table.loc[("a - b", "PSNR (dB)")]
    assert row["seed 0"] == pytest.approx(1.0, abs=0.02) and row[
        "seed 1"
    ] == pytest.approx(-0.2, abs=0.02)
    assert row["mean difference"] == pytest.approx(
        np.mean([row[f"seed {s}"] for s in range(3)])
    )
    assert row["95% CI low"] < 0 < row["95% CI high"], (
        "three seeds that disagree cannot exclude 0"
    )
    # the interval this replaces resamples images only and is far too sure of itself
    wide = scores.pivot_table(
        index="seed", columns=["method", "image"], values="PSNR (dB)"
    )
    items = item_bootstrap(wide["a"].to_numpy() - wide["b"].to_numpy())
    assert items["low"] > 0.3
    assert row["first better on (share)"] == pytest.approx(2 / 3)
    # lower is better for the sharpness error: "a" has the lower error on the two seeds with a positive shift
    sharp = table.loc[("a - b", "sharpness error")]
    assert sharp["mean difference"] == pytest.approx(-row["mean difference"])
    assert sharp["first better on (share)"] == pytest.approx(2 / 3)


def test_seed_paired_table_is_sure_when_the_seeds_agree():
    table = medvae_stage1.seed_paired_table(
        _scores([0.5, 0.52, 0.49]), [("a", "b")], metrics=("PSNR (dB)",)
    )
    row = table.loc[("a - b", "PSNR (dB)")]
    assert 0.4 < row["95% CI low"] < row["95% CI high"] < 0.6
    assert row["first better on (share)"] == 1.0


def test_comparison_config_changes_only_the_schedule():
    config = tiny(10, adv_start=4)
    assert medvae_stage1.comparison_config(config, {}) == config
    assert medvae_stage1.comparison_config(config, {"comparison_steps": None}) == config
    short = medvae_stage1.comparison_config(
        config, {"comparison_steps": 6, "comparison_adv_start": 2}
    )
    assert (short.steps, short.adv_start) == (6, 2)
    assert (
        medvae_stage1.stage1_config(medvae_stage1.MODES["ci"], 0).steps
        == medvae_stage1.MODES["ci"]["steps"]
    )


def test_seed_ablation_trains_each_seed_and_reuses_a_matching_run(images):
    config = tiny(3, adv_start=2)
    reuse = medvae_stage1.adversarial_ablation(config, images)
    runs = medvae_stage1.seed_ablation(config, images, [0, 1], reuse=reuse)
    assert list(runs) == [0, 1] and runs[0] is reuse, (
        "seed 0 has the settings of the run given to reuse"
    )
    assert runs[1]["with adversarial"].config.seed == 1
    assert runs[1]["without adversarial"].config.adv_weight == 0
    a = runs[0]["with adversarial"].reconstruct(images[:4])
    b = runs[1]["with adversarial"].reconstruct(images[:4])
    assert not torch.equal(a, b), "another seed is another training run"
    factor = 4
    scores = medvae_stage1.seed_fidelity(runs, images[:8], "resize", factor)
    assert set(scores.seed) == {0, 1} and len(scores) == 2 * 3 * 8
    resize = scores[scores.method == "resize"].pivot(
        index="seed", columns="image", values="PSNR (dB)"
    )
    assert np.allclose(resize.loc[0], resize.loc[1]), (
        "the baseline does not depend on the seed"
    )


def test_the_arm_without_the_adversarial_term_can_be_left_out(images):
    config = tiny(3, adv_start=2)
    both = medvae_stage1.adversarial_ablation(config, images)
    alone = medvae_stage1.adversarial_ablation(config, images, without=False)
    assert list(alone) == ["with adversarial"]
    a, b = (
        both["with adversarial"].autoencoder.state_dict(),
        alone["with adversarial"].autoencoder.state_dict(),
    )
    assert all(torch.equal(a[k], b[k]) for k in a), (
        "leaving the second arm out changes nothing of the first"
    )


def test_edge_energy_and_worst_images():
    flat = torch.full((3, 1, 16, 16), 0.5)
    assert torch.equal(medvae_stage1.edge_energy(flat), torch.zeros(3))
    stripes = torch.zeros(1, 1, 16, 16)
    stripes[..., (torch.arange(16) // 2) % 2 == 0] = (
        1.0  # period 4: the Sobel filter sees every edge
    )
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    assert medvae_stage1.edge_energy(stripes) > medvae_stage1.edge_energy(step) > 0
    # PSNR that falls with detail: the worst images are the most detailed ones
    g = torch.Generator().manual_seed(0)
    images = (
        torch.rand(20, 1, 16, 16, generator=g)
        * torch.linspace(0, 1, 20)[:, None, None, None]
    )
    energy = medvae_stage1.edge_energy(images).numpy()
    train = (
        torch.rand(50, 1, 16, 16, generator=g)
        * torch.linspace(0, 1, 50)[:, None, None, None]
    )
    out = medvae_stage1.worst_images(
        images, torch.arange(20) % 2, 30 - 5 * energy, train, n=4
    )
    assert out["spearman"] == pytest.approx(-1.0)
    assert sorted(out["table"]["image"]) == [16, 17, 18, 19]
    assert (out["table"]["percentile among training images"] > 60).all()
    assert 0 < out["train_share"] < 0.4


def test_published_model_is_compared_with_the_trained_one_on_the_same_images(images):
    """The published model enters through the same reconstruction path as the trained
    one: the trained model set beside its own weights differs by exactly 0, a
    three-channel model gets the grey image on each channel, and the resize control is
    in the table."""
    from medvae_lib.models import build_autoencoder

    trained = medvae_stage1.Stage1Trainer(tiny(1))
    reference = images[:8]
    table = medvae_stage1.published_beside(trained.autoencoder, trained, reference)
    same = table.loc["published - trained here"]
    assert np.allclose(same["mean difference"], 0.0, atol=1e-6)
    assert ("published - resize", "PSNR (dB)") in table.index
    three = build_autoencoder("medvae_4_3_2d", width=8, in_channels=3)
    out = medvae_stage1.reconstruct_with(three, reference)
    assert out.shape == reference.shape and 0 <= out.min() and out.max() <= 1


def test_full_mode_published_weights_path_on_an_official_format_checkpoint(
    images, tmp_path, monkeypatch
):
    """Chapters 2 and 4's full-mode cells, end to end without the network: the hub is
    replaced by a checkpoint written in MedVAE's format ({"state_dict": ...}); the model is
    downloaded, verified and loaded by published_model, then set beside a trained model
    (chapter 2) and asked for its stage-2 latents (chapter 4)."""
    import hashlib
    import types

    import huggingface_hub

    from medvae_lib import models
    from medvae_lib.latent_downstream import published_latents

    torch.manual_seed(0)
    released = models.build_autoencoder("medvae_4_1_2d", width="full")
    path = tmp_path / "vae_4x_1c_2D.ckpt"
    torch.save({"state_dict": released.state_dict()}, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(
        huggingface_hub,
        "get_hf_file_metadata",
        lambda url: types.SimpleNamespace(etag=f'"{sha}"'),
    )
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(path))
    published = models.published_model("medvae_4_1_2d")
    reference = images[:4]
    table = medvae_stage1.published_beside(
        published, medvae_stage1.Stage1Trainer(tiny(1)), reference
    )
    assert ("published - trained here", "PSNR (dB)") in table.index
    assert np.isfinite(table["mean difference"]).all()
    with torch.no_grad():
        expected = released.project(released.encode(reference * 2 - 1)[0])
    assert torch.allclose(published_latents(published, reference), expected, atol=1e-5)
