import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import REPO, tiny
from monai.transforms import GaussianSmooth

from medvae_lib import medvae_stage1
from medvae_lib.data_prep import prepare_splits
from medvae_lib.medvae_stage1 import (
    Stage1Trainer,
    adversarial_ablation,
    resize_baseline,
    to_model_range,
)
from medvae_lib.models import build_autoencoder
from medvae_lib.training import (
    CHECKPOINT_NAME,
    NonFiniteLossError,
    batch_indices,
    export_weights,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    seed_everything,
    settings_for,
    tensor_fingerprint,
)


@pytest.fixture(scope="module")
def images(manifest):
    return prepare_splits(manifest, "ci", 32, n={"train": 64})["train"][0]


def test_batches_depend_only_on_seed_and_step():
    assert torch.equal(
        batch_indices(100, 8, step=5, seed=1), batch_indices(100, 8, step=5, seed=1)
    )
    assert not torch.equal(
        batch_indices(100, 8, step=5, seed=1), batch_indices(100, 8, step=6, seed=1)
    )
    with pytest.raises(ValueError, match="need at least one sample"):
        batch_indices(0, 8, step=0, seed=0)


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
    assert (
        "d_loss" in resumed.history[-1] and "d_loss" not in resumed.history[1]
    )  # warm-up, then adversarial
    assert {"logit_real", "logit_fake", "adv_weight"} <= set(resumed.history[-1])
    for a, b in zip(
        straight.autoencoder.state_dict().values(),
        resumed.autoencoder.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b), (
            "a resumed run must end where the uninterrupted run ends (on a CPU)"
        )
    for a, b in zip(
        straight.discriminator.state_dict().values(),
        resumed.discriminator.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)

    fresh = Stage1Trainer(tiny(1))
    fresh.fit(images, checkpoint_dir=tmp_path, resume=False, overwrite=True)
    assert (
        fresh.step == 1
        and torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 1
    )


def test_resume_with_other_settings_or_other_data_is_refused(images, tmp_path):
    Stage1Trainer(tiny(1)).fit(
        images,
        checkpoint_dir=tmp_path,
        data={"manifest": "pneumoniamnist", "key": "ci"},
    )
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["extra"]["data"]
    assert (
        saved["fingerprint"] == tensor_fingerprint(images)
        and saved["key"] == "ci"
        and saved["shape"] == [64, 1, 32, 32]
    )
    with pytest.raises(
        FileExistsError, match=r"made with other settings .*'kl_weight': \(1e-06, 0.1\)"
    ):
        Stage1Trainer(tiny(2, kl_weight=0.1)).fit(images, checkpoint_dir=tmp_path)
    with pytest.raises(FileExistsError, match="trained on other data"):
        Stage1Trainer(tiny(2)).fit(images.flip(0), checkpoint_dir=tmp_path)


class _NaNUpdate(Stage1Trainer):
    """Logs a finite loss at every step, but its update at step 2 leaves a NaN weight, as NaN or
    infinite gradients would."""

    def train_step(self, batch, step):
        logs = super().train_step(batch, step)
        if step == 2:
            with torch.no_grad():
                self.autoencoder.decoder.conv_out.weight[0, 0, 0, 0] = float("nan")
        return logs


def test_non_finite_weights_stop_the_run_before_the_checkpoint_is_replaced(
    images, tmp_path
):
    run = _NaNUpdate(tiny(6, adv_start=100))
    with pytest.raises(
        NonFiniteLossError,
        match="at step 3 the autoencoder's weights .* are not finite",
    ):
        run.fit(images, checkpoint_dir=tmp_path, checkpoint_every=1)
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["step"] == 2, (
        "the last good checkpoint (after step 2's predecessor) must stay"
    )
    assert all(
        torch.isfinite(v).all() for v in saved["modules"]["autoencoder"].values()
    )


class _NaNLoss(Stage1Trainer):
    """Logs a NaN loss at step 2."""

    def train_step(self, batch, step):
        logs = super().train_step(batch, step)
        return {**logs, "l1": torch.tensor(float("nan"))} if step == 2 else logs


def test_a_non_finite_loss_stops_the_run_before_its_checkpoint(images, tmp_path):
    with pytest.raises(NonFiniteLossError, match="step 2 gave non-finite values"):
        _NaNLoss(tiny(6, adv_start=100)).fit(
            images, checkpoint_dir=tmp_path, checkpoint_every=1
        )
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 2, (
        "no checkpoint after the NaN step"
    )


def test_a_diverging_run_stops(images, tmp_path):
    with pytest.raises(NonFiniteLossError, match="non-finite values"):
        Stage1Trainer(tiny(4, lr=1e12, adv_start=100)).fit(
            images, checkpoint_dir=tmp_path
        )
    bad = images.clone()
    bad[3, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="1 training image"):
        Stage1Trainer(tiny(1)).fit(bad)


def test_generator_step_leaves_the_discriminator_unchanged(images):
    trainer = Stage1Trainer(tiny(10, adv_start=0))
    x = to_model_range(images[:4])
    before = {
        k: v.clone() for k, v in trainer.discriminator.state_dict().items()
    }  # weights and batch-norm statistics
    ae_before = [p.clone() for p in trainer.autoencoder.parameters()]
    logs, x_hat = trainer.generator_step(x, step=5)
    assert "adv_g" in logs and not x_hat.requires_grad
    for k, v in trainer.discriminator.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(
        p.grad is None and p.requires_grad for p in trainer.discriminator.parameters()
    )
    assert any(
        not torch.equal(a, b)
        for a, b in zip(ae_before, trainer.autoencoder.parameters(), strict=True)
    )


def test_discriminator_learns_to_tell_real_from_blurred(images):
    """The easy case: real images against strongly blurred copies. A discriminator that learns pushes
    real logits up and blurred ones down within a few dozen steps (the committed CI run of an earlier
    version stayed at chance, hinge loss 1.0, for 300 steps)."""
    seed_everything(0)
    trainer = Stage1Trainer(tiny(1, disc_channels=16, disc_layers=2, lr_d=2e-4))
    blur = GaussianSmooth(sigma=1.5)
    for step in range(60):
        real = images[batch_indices(len(images), 16, step, 0)]
        blurred = torch.stack([blur(im).as_tensor() for im in real])
        logs = trainer.discriminator_step(to_model_range(real), to_model_range(blurred))
    assert logs["d_loss"] < 0.5
    assert logs["logit_real"] - logs["logit_fake"] > 1.0


def test_ablation_arms_share_the_warm_up(images, tmp_path):
    seed_everything(0)
    runs = adversarial_ablation(tiny(4, adv_start=2), images, checkpoint_dir=tmp_path)
    with_adv, without = runs["with adversarial"], runs["without adversarial"]
    # step 2 (adv_start) is the arms' first own step; its losses are computed before either arm's update,
    # so they are equal only if both start from the same weights with the same batch and noise.
    first_with = next(h for h in with_adv.history if h["step"] == 2)
    first_without = next(h for h in without.history if h["step"] == 2)
    assert (
        first_with["l1"] == first_without["l1"]
        and first_with["kl"] == first_without["kl"]
    )
    assert "d_loss" in with_adv.history[-1] and "d_loss" not in without.history[-1]
    assert without.config.adv_weight == 0 and with_adv.step == without.step == 4
    assert {p.name for p in tmp_path.iterdir()} == {
        "warmup",
        "with_adversarial",
        "without_adversarial",
    }
    branch = with_adv.branch(tiny(6, adv_start=2, lr=1e-3, adam_beta1=0.8))
    assert branch.opt_g.param_groups[0]["lr"] == 1e-3, (
        "a branch takes its own settings, not the copied ones"
    )
    assert branch.opt_g.param_groups[0]["betas"] == (0.8, 0.9)
    assert (
        branch.opt_g.state_dict()["state"][0]["step"]
        == with_adv.opt_g.state_dict()["state"][0]["step"]
    )


class _Pickled:
    """An arbitrary object: unpickling it would run code from this module, which weights_only refuses."""


def test_checkpoints_load_safely(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    path = save_checkpoint(
        tmp_path / "c.pt", 7, {"m": model}, {"o": opt}, {"note": "x"}
    )
    other = torch.nn.Linear(3, 2)
    step, extra = load_checkpoint(
        path, {"m": other}, {"o": torch.optim.Adam(other.parameters())}
    )
    assert (
        step == 7 and extra == {"note": "x"} and torch.equal(other.weight, model.weight)
    )
    with pytest.raises(ValueError, match=r"has no modules \['d'\]"):
        load_checkpoint(path, {"d": other}, {})
    torch.save({"step": 1, "payload": _Pickled()}, tmp_path / "unsafe.pt")
    with pytest.raises(ValueError, match="is not a loadable checkpoint"):
        load_checkpoint(tmp_path / "unsafe.pt", {}, {})
    torch.save({"step": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a checkpoint of this book"):
        load_checkpoint(tmp_path / "other.pt", {}, {})
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt", {}, {})


def test_safetensors_round_trip_and_strict_keys(tmp_path):
    model = build_autoencoder("medvae_4_1_2d", width=8)
    path = export_weights(tmp_path / "w.safetensors", model, {"model": "medvae_4_1_2d"})
    copy = load_weights(path, build_autoencoder("medvae_4_1_2d", width=8))
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            model.state_dict().values(), copy.state_dict().values(), strict=True
        )
    )
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
        assert 0 < config.adv_start < config.steps


def test_fit_rejects_images_it_cannot_train_on(images):
    trainer = Stage1Trainer(tiny(1))
    with pytest.raises(ValueError, match=r"trains on \(N, 1, \*spatial\) images"):
        trainer.fit(images[:, 0])
    with pytest.raises(ValueError, match="divisible by 4"):
        trainer.fit(images[..., :30, :30])
    with pytest.raises(ValueError, match=r"scaled to \[0, 1\]"):
        trainer.fit(images * 255)


def test_reconstructions_are_images_in_range(images):
    trainer = Stage1Trainer(tiny(1))
    out = trainer.reconstruct(images[:5])
    assert out.shape == images[:5].shape and 0 <= out.min() and out.max() <= 1
    mu, sigma = trainer.encode(images[:5])
    assert mu.shape == sigma.shape == (5, 1, 8, 8) and (sigma > 0).all()


def test_resize_baseline_keeps_shape_and_range(images):
    out = resize_baseline(images[:4], 4)
    assert out.shape == images[:4].shape and 0 <= out.min() and out.max() <= 1
    # the shrunken image holds as many values as the one-channel latent
    assert torch.nn.functional.interpolate(
        images[:4], scale_factor=0.25, mode="area"
    ).shape[2:] == (8, 8)


def test_run_dirs_are_per_mode_and_drive_needs_colab():
    from medvae_lib.training import run_dir

    assert run_dir("02_medvae_stage1", "ci") != run_dir("02_medvae_stage1", "full")
    assert run_dir("02_medvae_stage1", "ci").parts[-2:] == ("02_medvae_stage1", "ci")
    with pytest.raises(RuntimeError, match="needs Google Colab"):
        run_dir("02_medvae_stage1", "full", drive=True)


def test_a_quiet_run_prints_nothing_and_trains_the_same(images, capsys, monkeypatch):
    monkeypatch.setenv(
        "TQDM_DISABLE", "0"
    )  # the bar would show, were the run not quiet
    seed_everything(0)
    loud = Stage1Trainer(tiny(3))
    loud.fit(images)
    said = capsys.readouterr()
    assert "steps 0-3" in said.out
    seed_everything(0)
    quiet = Stage1Trainer(tiny(3))
    quiet.fit(images, verbose=False)
    said = capsys.readouterr()
    assert said.out == "" and said.err == ""
    assert quiet.history == loud.history


def test_alternating_updates_train_one_network_per_batch_after_adv_start(images):
    """MedVAE's schedule: from adv_start on, even batches update the autoencoder only
    and odd batches the discriminator only; before it, the autoencoder trains alone."""
    trainer = Stage1Trainer(
        tiny(6, adv_start=2, adv_weight=0.5, alternate_updates=True, log_every=1)
    )

    def snapshot():
        return {
            name: [p.detach().clone() for p in module.parameters()]
            for name, module in trainer.modules().items()
        }

    batch = images[:4]
    changed = []
    for step in range(6):
        before = snapshot()
        logs = trainer.train_step(batch, step)
        after = snapshot()
        changed.append(
            {
                name
                for name in before
                if any(
                    not torch.equal(a, b)
                    for a, b in zip(before[name], after[name], strict=True)
                )
            }
        )
        assert ("d_loss" in logs) == (step >= 2 and step % 2 == 1)
        assert ("l1" in logs) == (step < 2 or step % 2 == 0)
    assert changed == [
        {"autoencoder"},
        {"autoencoder"},
        {"autoencoder"},
        {"discriminator"},
        {"autoencoder"},
        {"discriminator"},
    ]


def test_a_checkpoint_of_another_network_layout_is_not_resumed(images, tmp_path):
    """Same settings, other architecture (e.g. a checkpoint written before the network
    changed): the run refuses it with the reason instead of failing inside
    load_state_dict."""
    Stage1Trainer(tiny(1)).fit(images, tmp_path)
    trainer = Stage1Trainer(tiny(2))
    trainer.autoencoder.post_quant_conv = torch.nn.Conv2d(1, 2, 1)
    with pytest.raises(FileExistsError, match="another network layout for"):
        trainer.fit(images, tmp_path)


_KILLED_RUN = """
import sys, torch
from helpers import tiny
from medvae_lib.data import load_manifest
from medvae_lib.data_prep import prepare_splits
from medvae_lib.medvae_stage1 import Stage1Trainer
from medvae_lib.training import seed_everything

torch.set_num_threads(1)
images = prepare_splits(load_manifest("pneumoniamnist"), "ci", 32, n={"train": 64})
seed_everything(0)
Stage1Trainer(tiny(10_000)).fit(images["train"][0], checkpoint_dir=sys.argv[1],
                                checkpoint_every=1)
"""


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(images, tmp_path):
    """As after a Colab disconnect: a training process is killed (SIGKILL, mid-run, maybe mid-write)
    with its checkpoints in a folder (on Drive with use_drive=True); a new process resumes from the
    folder and ends exactly where an uninterrupted run of the same length ends."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}"}
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(tmp_path)], env=env
    )
    checkpoint, step = tmp_path / CHECKPOINT_NAME, 0
    try:
        deadline = time.monotonic() + 300
        while step < 3 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.2)
            if checkpoint.is_file():
                step = torch.load(checkpoint, weights_only=True)["step"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert step >= 3, "the training process wrote no checkpoint to resume from"
    killed_at = torch.load(checkpoint, weights_only=True)["step"]
    assert killed_at < 10_000
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = Stage1Trainer(tiny(killed_at + 2))
        resumed.fit(images, checkpoint_dir=tmp_path)
        seed_everything(0)
        straight = Stage1Trainer(tiny(killed_at + 2))
        straight.fit(images)
    finally:
        torch.set_num_threads(before)
    assert resumed.step == killed_at + 2
    for a, b in zip(
        straight.autoencoder.state_dict().values(),
        resumed.autoencoder.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
