"""Mixed precision (the ``amp`` setting) and parked runs: "auto" changes nothing on a
CPU, float16 really autocasts and its scaler survives a resume, the adversarial balance
is the same of scaled losses, and parking a finished run changes no number."""

from dataclasses import replace

import pytest
import torch
from helpers import tiny_puir_settings

from medvae_lib import personalized_invariant as pi
from medvae_lib.losses import adaptive_adv_weight
from medvae_lib.medvae_stage1 import Stage1Config, Stage1Trainer
from medvae_lib.training import CHECKPOINT_NAME, amp_dtype, read_checkpoint


def _config(**changes):
    base = dict(
        width=8,
        steps=10,
        batch_size=4,
        adv_start=4,
        adv_weight=0.5,
        alternate_updates=True,
        disc_channels=8,
        disc_layers=2,
        log_every=1,
    )
    return Stage1Config(**{**base, **changes})


def _images():
    return torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def _weights(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.autoencoder.parameters()])


def test_auto_is_float32_on_a_cpu_bit_for_bit():
    assert amp_dtype("auto", "cpu") is None and amp_dtype("auto", "cuda") is not None
    runs = {}
    for amp in ("auto", "off"):
        t = Stage1Trainer(_config(amp=amp))
        t.fit(_images(), verbose=False)
        runs[amp] = _weights(t)
    assert torch.equal(runs["auto"], runs["off"])
    with pytest.raises(ValueError, match="amp setting 'half'"):
        _config(amp="half")


def test_float16_autocasts_logs_skipped_steps_and_its_scaler_resumes(tmp_path):
    t = Stage1Trainer(_config(amp="float16"))
    dtypes = []
    t.autoencoder.decoder.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    history = t.fit(_images(), tmp_path, checkpoint_every=5, verbose=False)
    assert set(dtypes) == {torch.float16}
    # MedVAE's summed loss overflows float16 at the scaler's first scale: the
    # scaler skips those steps, halves its scale, and the logs say so
    skipped = [h["amp_skipped"] for h in history if "amp_skipped" in h]
    assert skipped and max(skipped) == 1.0
    assert all(torch.isfinite(_weights(t)))
    saved = read_checkpoint(tmp_path / CHECKPOINT_NAME)["extra"]["scalers"]
    assert saved["generator"]["scale"] == t.scaler("generator").get_scale() < 2**16
    resumed = Stage1Trainer(_config(amp="float16"))
    resumed.load(tmp_path / CHECKPOINT_NAME)
    for name in ("generator", "discriminator"):
        assert resumed.scaler(name).get_scale() == saved[name]["scale"]
    assert "d_amp_skipped" in history[-1]  # step 9: the discriminator's own scaler


def test_the_balance_of_scaled_losses_is_the_balance_of_the_losses():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 3)
    x = torch.rand(5, 6)
    out = layer(x)
    nll, adv = out.abs().sum(), -(out**3).mean()
    plain = adaptive_adv_weight(nll, adv, layer.weight)
    s = 2.0**14
    scaled = adaptive_adv_weight(s * nll, s * adv, layer.weight, eps=1e-4 * s)
    assert scaled == pytest.approx(plain.item(), rel=1e-5)
    # an overflowed gradient (infinite, or NaN where infinities of both signs met)
    # gives the ratio's limit or 0, never NaN
    inf = float("inf")
    assert adaptive_adv_weight(nll, adv * inf, layer.weight) == 0.0
    assert adaptive_adv_weight(out.sum() * inf, adv, layer.weight) == 1e4
    assert adaptive_adv_weight(nll * inf, adv * inf, layer.weight) == 0.0


def test_a_parked_run_frees_its_gradients_and_continues_unchanged():
    def finished():
        t = Stage1Trainer(_config(steps=6))
        t.fit(_images(), verbose=False)
        return t

    parked, kept = finished(), finished()
    parked.park(keep=("autoencoder",))
    assert parked.parked
    assert all(
        p.grad is None for m in parked.modules().values() for p in m.parameters()
    )
    assert any(p.grad is not None for p in kept.autoencoder.parameters())
    longer = replace(parked.config, steps=10)
    a, b = parked.branch(longer), kept.branch(longer)
    parked.fit(_images(), verbose=False)  # fit brings a parked run back
    assert not parked.parked
    for t in (a, b):
        t.fit(_images(), verbose=False)
    assert torch.equal(_weights(a), _weights(b))


@pytest.mark.parametrize("amp", ["float16", "bfloat16"])
def test_puir_trains_under_autocast(amp):
    settings = tiny_puir_settings(steps=3, batch_size=2, amp=amp)
    images = torch.rand(4, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(4, 1, 32, 32)
    mask[..., 4:-4, 6:-6] = 1
    samples = torch.cat([images * mask, mask], 1)
    trainer = pi.train_variant(settings, "full", 0, samples)
    losses = [h["loss"] for h in trainer.history]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert trainer.amp == amp_dtype(amp, "cpu")
    assert ("amp_skipped" in trainer.history[-1]) == (amp == "float16")


def test_an_ablation_arm_starts_from_the_warm_ups_scale():
    warm = Stage1Trainer(_config(amp="float16", steps=4))
    warm.fit(_images(), verbose=False)
    scale = warm.scaler("generator").get_scale()
    assert scale < 2**16  # the summed loss overflowed at the first scale
    arm = warm.branch(replace(warm.config, steps=8))
    assert arm.scaler("generator").get_scale() == scale


def test_checkpoints_and_exports_made_before_the_amp_setting_are_reused(tmp_path):
    from medvae_lib.medvae_stage1.settings import export_metadata

    t = Stage1Trainer(_config(steps=3))
    t.fit(_images(), tmp_path, checkpoint_every=3, verbose=False)
    path = tmp_path / CHECKPOINT_NAME
    state = torch.load(path, weights_only=True)
    del state["extra"]["config"]["amp"]  # as written before the setting existed
    torch.save(state, path)
    again = Stage1Trainer(_config(steps=3))
    again.fit(_images(), tmp_path, checkpoint_every=3, verbose=False)
    assert again.step == 3  # resumed, not refused
    meta = export_metadata(t.config, "ci", {"checksum": "x", "image_size": 32})
    assert "amp" not in meta


def test_synthesis_follows_the_amp_setting():
    settings = tiny_puir_settings()
    torch.manual_seed(0)
    model = pi.build_model(settings, "full")
    samples = torch.rand(2, 5, 32, 32, generator=torch.Generator().manual_seed(1))
    plain = pi.synthesise(model, samples, settings)
    low = pi.synthesise(model, samples, {**settings, "amp": "float16"})
    assert low.dtype == plain.dtype == torch.float32
    assert not torch.equal(low, plain)  # it did run in float16
    assert (low - plain).abs().mean() < 0.005
