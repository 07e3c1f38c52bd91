import pytest
import torch

from medvae_lib import medvae_stage1
from medvae_lib.data_prep import prepare_splits
from medvae_lib.medvae_stage1 import Stage1Config, Stage1Trainer, kl_divergence, resize_baseline
from medvae_lib.models import build_autoencoder
from medvae_lib.training import (
    CHECKPOINT_NAME,
    batch_indices,
    export_weights,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    seed_everything,
    settings_for,
)


@pytest.fixture(scope="module")
def images(manifest):
    return prepare_splits(manifest, "ci", 32, n={"train": 64})["train"][0]


def tiny(steps, **kw):
    return Stage1Config(width=8, steps=steps, batch_size=4, adv_start=2, disc_channels=8, log_every=1, **kw)


def test_batches_depend_only_on_seed_and_step():
    assert torch.equal(batch_indices(100, 8, step=5, seed=1), batch_indices(100, 8, step=5, seed=1))
    assert not torch.equal(batch_indices(100, 8, step=5, seed=1), batch_indices(100, 8, step=6, seed=1))
    with pytest.raises(ValueError, match="need at least one sample"):
        batch_indices(0, 8, step=0, seed=0)


def test_kl_of_standard_normal_is_zero():
    assert kl_divergence(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)).item() == 0.0
    # one dimension with mu=1, sigma=1: 0.5 * 1 = 0.5, summed over 16 dimensions
    assert kl_divergence(torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 4)).item() == pytest.approx(8.0)


def test_resume_continues_from_the_saved_step_exactly(images, tmp_path):
    seed_everything(0)
    straight = Stage1Trainer(tiny(4))
    straight.fit(images)

    first = Stage1Trainer(tiny(2))
    first.fit(images, checkpoint_dir=tmp_path)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 2

    resumed = Stage1Trainer(tiny(4))
    resumed.fit(images, checkpoint_dir=tmp_path)
    assert resumed.step == 4
    assert [h["step"] for h in resumed.history] == [0, 1, 2, 3]
    assert "adv_d" in resumed.history[-1] and "adv_d" not in resumed.history[1]  # warm-up, then adversarial
    for a, b in zip(straight.autoencoder.state_dict().values(), resumed.autoencoder.state_dict().values()):
        assert torch.equal(a, b), "a resumed run must end where the uninterrupted run ends"
    for a, b in zip(straight.discriminator.state_dict().values(), resumed.discriminator.state_dict().values()):
        assert torch.equal(a, b)

    fresh = Stage1Trainer(tiny(1))
    fresh.fit(images, checkpoint_dir=tmp_path, resume=False)
    assert fresh.step == 1 and torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 1


def test_resume_with_other_settings_is_refused(images, tmp_path):
    Stage1Trainer(tiny(1)).fit(images, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"made with other settings .*'kl_weight': \(1e-06, 0.1\)"):
        Stage1Trainer(tiny(2, kl_weight=0.1)).fit(images, checkpoint_dir=tmp_path)


def test_checkpoints_load_safely(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    path = save_checkpoint(tmp_path / "c.pt", 7, {"m": model}, {"o": opt}, {"note": "x"})
    other = torch.nn.Linear(3, 2)
    step, extra = load_checkpoint(path, {"m": other}, {"o": torch.optim.Adam(other.parameters())})
    assert step == 7 and extra == {"note": "x"} and torch.equal(other.weight, model.weight)
    with pytest.raises(ValueError, match=r"has no modules \['d'\]"):
        load_checkpoint(path, {"d": other}, {})
    torch.save({"step": 1, "payload": Exception("pickled object")}, tmp_path / "unsafe.pt")
    with pytest.raises(ValueError, match="is not a loadable checkpoint"):
        load_checkpoint(tmp_path / "unsafe.pt", {}, {})
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt", {}, {})


def test_safetensors_round_trip_and_strict_keys(tmp_path):
    model = build_autoencoder("medvae_4_1_2d", width=8)
    path = export_weights(tmp_path / "w.safetensors", model, {"model": "medvae_4_1_2d"})
    copy = load_weights(path, build_autoencoder("medvae_4_1_2d", width=8))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), copy.state_dict().values()))
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        load_weights(path, build_autoencoder("medvae_8_4_2d", width=8))


def test_notebook_settings():
    assert settings_for(medvae_stage1.MODES, "ci", {"steps": 5})["steps"] == 5
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['step'\]"):
        settings_for(medvae_stage1.MODES, "ci", {"step": 5})
    with pytest.raises(ValueError, match="unknown mode 'gpu'"):
        settings_for(medvae_stage1.MODES, "gpu")
    for mode in medvae_stage1.MODES:
        config = medvae_stage1.stage1_config(medvae_stage1.MODES[mode], seed=0)
        assert config.kl_weight == 1e-6 and config.adv_start < config.steps


def test_fit_rejects_images_of_the_wrong_shape(images):
    trainer = Stage1Trainer(tiny(1))
    with pytest.raises(ValueError, match=r"trains on \(N, 1, \*spatial\) images"):
        trainer.fit(images[:, 0])
    with pytest.raises(ValueError, match="divisible by 4"):
        trainer.fit(images[..., :30, :30])


def test_resize_baseline_keeps_shape_and_range(images):
    out = resize_baseline(images[:4], 4)
    assert out.shape == images[:4].shape and 0 <= out.min() and out.max() <= 1


def test_hinge_losses_on_known_logits():
    from medvae_lib.medvae_stage1 import hinge_d_loss, hinge_g_loss

    confident = hinge_d_loss(torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -2.0))
    assert confident.item() == 0.0  # both beyond the margin
    undecided = hinge_d_loss(torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3))
    assert undecided.item() == 1.0
    assert hinge_g_loss(torch.tensor([[1.0, 3.0]])).item() == -2.0


def test_perceptual_losses():
    from monai.utils import OptionalImportError

    from medvae_lib.medvae_stage1 import perceptual_loss

    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    ssim = perceptual_loss("ssim", 2)
    assert ssim(x, x).item() == pytest.approx(0.0, abs=1e-5) and ssim(x, 1 - x).item() > 0.5
    # LPIPS needs the lpips package and weights from a hub (full mode, Colab); without lpips it fails by name.
    try:
        perceptual_loss("alex", 2)
    except (OptionalImportError, ImportError) as err:
        assert "lpips" in str(err)
