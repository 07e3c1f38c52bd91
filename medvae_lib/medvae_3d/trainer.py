"""3D stage 1: chapter 2's 2D perceptual loss and PatchGAN applied to slices along
the three axes, the 3D trainer and its configuration, and training with validation
scores at chosen steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from monai.networks.nets import PatchDiscriminator

from ..medvae_stage1 import (
    Stage1Config,
    Stage1Trainer,
    from_model_range,
    init_discriminator_weights,
    to_model_range,
)
from ..metrics import ms_ssim, psnr
from ..models import build_autoencoder, get_config
from ..training import CheckpointedTrainer, autocast
from .inflation import inflate_autoencoder
from .volumes import check_volume


def axis_slices(volumes: torch.Tensor, index=None) -> torch.Tensor:
    """The 2D slices of (N, C, X, Y, Z) volumes along all three axes as one batch of
    images (N * (X + Y + Z), C, ., .) for cubic volumes; ``index`` (a list of three
    index tensors, one per axis) keeps only those slices. Order: axis, then slice, then
    volume."""
    if volumes.ndim != 5:
        raise ValueError(
            f"expected (N, C, X, Y, Z) volumes, got shape {tuple(volumes.shape)}"
        )
    out = []
    for axis in range(3):
        moved = volumes.movedim(2 + axis, 0)  # (S, N, C, a, b)
        if index is not None:
            moved = moved[index[axis]]
        out.append(moved.reshape(-1, *moved.shape[2:]))
    shapes = {tuple(o.shape[1:]) for o in out}
    if len(shapes) > 1:
        raise ValueError(
            f"slices along the three axes differ in shape {shapes}: use cubic patches"
        )
    return torch.cat(out)


class SliceWise(torch.nn.Module):
    """A 2D loss ``loss(x_hat_2d, x_2d)`` applied to every slice along the three axes of (N, 1, X, Y, Z)
    volumes and averaged: MedVAE's 3D perceptual term (its per-slice LPIPS, averaged over slices)."""

    def __init__(self, loss_2d: torch.nn.Module):
        super().__init__()
        self.loss_2d = loss_2d

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.loss_2d(axis_slices(x_hat), axis_slices(x)).mean()


class SliceDiscriminator(torch.nn.Module):
    """A 2D PatchGAN on slices along the three axes (MedVAE's
    ``discriminator_2d_nets_to_3d``). Returns a one-element list (as MONAI's
    ``PatchDiscriminator`` returns its layers' outputs, the logits last) whose logits
    are (N, 1): for each volume, the mean patch logit over its slices. MedVAE averages
    over the whole batch as well; keeping one value per volume lets real and
    reconstructed volumes share a batch.

    ``slices_per_axis``: with None every slice is used (MedVAE); with k, k random slices
    per axis, the same for every volume of the batch, drawn from torch's generator
    (seeded per step by the trainer)."""

    def __init__(
        self, discriminator_2d: torch.nn.Module, slices_per_axis: int | None = None
    ):
        super().__init__()
        if slices_per_axis is not None and slices_per_axis < 1:
            raise ValueError(
                f"slices_per_axis must be None or at least 1, got {slices_per_axis}"
            )
        self.net = discriminator_2d
        self.slices_per_axis = slices_per_axis

    def forward(self, volumes: torch.Tensor) -> list[torch.Tensor]:
        n = len(volumes)
        index = None
        if self.slices_per_axis is not None:
            index = [
                torch.randperm(volumes.shape[2 + a], device=volumes.device)[
                    : self.slices_per_axis
                ]
                for a in range(3)
            ]
        slices = axis_slices(
            volumes, index
        )  # (slices * n, 1, a, b): volume index varies fastest
        logits = self.net(slices.contiguous())[-1]
        per_slice = (
            logits.reshape(-1, n, *logits.shape[1:]).flatten(2).mean(2)
        )  # (slices, n)
        return [per_slice.mean(0)[:, None]]


@dataclass
class Stage1Config3D(Stage1Config):
    model: str = "medvae_4_1_3d"
    disc_slices: int = (
        0  # slices per axis the discriminator sees each step; 0 = every slice (MedVAE)
    )
    init: str = "inflated"  # "inflated" (from the 2D model, MedVAE) or "scratch"
    init_from: str = (
        ""  # fingerprint of the 2D weights it was inflated from (checked on resume)
    )

    def __post_init__(self):
        super().__post_init__()
        if get_config(self.model).spatial_dims != 3:
            raise ValueError(f"Stage1Config3D trains a 3D model; {self.model} is 2D")
        if self.init not in ("inflated", "scratch"):
            raise ValueError(f"init must be 'inflated' or 'scratch', got {self.init!r}")
        if self.disc_slices < 0:
            raise ValueError(f"disc_slices must be >= 0, got {self.disc_slices}")


class Stage1Trainer3D(Stage1Trainer):
    """Chapter 2's stage-1 trainer on volumes: the same generator and discriminator
    steps (L1 + perceptual, KL, adaptive hinge GAN after ``adv_start``), with the
    perceptual loss and the PatchGAN being **2D** networks applied to slices along the
    three axes, as in MedVAE. With ``init="inflated"`` the autoencoder starts from
    ``autoencoder_2d`` (:func:`inflate_autoencoder`)."""

    def __init__(
        self,
        config: Stage1Config3D,
        autoencoder_2d: torch.nn.Module | None = None,
        device="cpu",
    ):
        from ..losses import perceptual_loss
        from ..medvae_stage2 import weights_fingerprint

        CheckpointedTrainer.__init__(
            self, config, device
        )  # Stage1Trainer's own set-up is 2D/3D-generic; ours:
        self.name = f"stage 1 {config.model} ({config.init})"
        torch.manual_seed(config.seed)
        if config.init == "inflated":
            if autoencoder_2d is None:
                raise ValueError("init='inflated' needs the 2D autoencoder to inflate")
            if config.init_from and config.init_from != weights_fingerprint(
                autoencoder_2d
            ):
                raise ValueError(
                    "Stage1Config3D.init_from does not match the 2D autoencoder's weights"
                )
            self.autoencoder = inflate_autoencoder(
                autoencoder_2d, config.model, config.width
            ).to(self.device)
        else:
            self.autoencoder = build_autoencoder(config.model, width=config.width).to(
                self.device
            )
        disc = PatchDiscriminator(
            spatial_dims=2,
            num_layers_d=config.disc_layers,
            channels=config.disc_channels,
            in_channels=1,
        )
        disc.apply(init_discriminator_weights)
        self.discriminator = SliceDiscriminator(disc, config.disc_slices or None).to(
            self.device
        )
        betas = (config.adam_beta1, config.adam_beta2)
        self.opt_g = torch.optim.Adam(
            self.autoencoder.parameters(), lr=config.lr, betas=betas
        )
        self.opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=config.lr_d, betas=betas
        )
        self.perceptual = SliceWise(perceptual_loss(config.perceptual, 2)).to(
            self.device
        )

    def check_images(self, images: torch.Tensor) -> None:
        check_volume(images, get_config(self.config.model).factor)
        super().check_images(images)


def stage1_3d_config(
    settings: dict, seed: int, init: str, autoencoder_2d=None
) -> Stage1Config3D:
    """The :class:`Stage1Config3D` of a notebook's settings for ``init`` ("inflated" or "scratch")."""
    from ..medvae_stage2 import weights_fingerprint

    fields = Stage1Config3D.__dataclass_fields__
    chosen = {
        k: v
        for k, v in settings.items()
        if k in fields and k not in ("init", "init_from", "seed")
    }
    fingerprint = (
        weights_fingerprint(autoencoder_2d)
        if init == "inflated" and autoencoder_2d is not None
        else ""
    )
    return Stage1Config3D(seed=seed, init=init, init_from=fingerprint, **chosen)


def train_with_evaluation(
    trainers: dict,
    patches,
    val_patches,
    eval_steps,
    data=None,
    kernel_size=7,
    scales=None,
    checkpoint_dir=None,
    checkpoint_every: int = 0,
):
    """Train each trainer of ``trainers`` up to each step of ``eval_steps`` in turn (the same batches for
    all: every trainer draws them from its seed and step) and score the validation patches there: a table
    of PSNR and MS-SSIM (means over the patches) by run and step, step 0 before any training.

    With ``checkpoint_dir`` each run checkpoints into its own sub-folder and resumes from it. Each score
    is also kept in the run's ``evaluations``, which its checkpoints hold, so a run resumed past an
    evaluation step reports the score it had there instead of scoring again at a later step."""
    from dataclasses import replace

    import pandas as pd

    from ..scorecard import slug

    rows = []
    for step in sorted({0, *eval_steps}):
        for name, trainer in trainers.items():
            if step > trainer.step:
                trainer.config = replace(trainer.config, steps=step)
                folder = Path(checkpoint_dir) / slug(name) if checkpoint_dir else None
                try:
                    trainer.fit(
                        patches, folder, checkpoint_every, resume=True, data=data
                    )
                except ValueError as err:
                    if "already has" not in str(err):
                        raise
            earlier = {e["step"]: e for e in trainer.evaluations}
            if step < trainer.step and step in earlier:  # scored before a resume
                rows.append({"run": name, **earlier[step]})
                continue
            rec = reconstruct_patches(
                trainer.autoencoder,
                val_patches,
                device=trainer.device,
                amp=trainer.config.amp,
            )
            score = {
                "step": trainer.step,
                "PSNR (dB)": float(psnr(rec, val_patches).mean()),
                "MS-SSIM": float(
                    ms_ssim(
                        rec, val_patches, kernel_size=kernel_size, scales=scales
                    ).mean()
                ),
            }
            if trainer.step not in earlier:
                trainer.evaluations.append(score)
            rows.append({"run": name, **score})
    return pd.DataFrame(rows)


@torch.no_grad()
def reconstruct_patches(
    autoencoder, patches: torch.Tensor, batch_size: int = 8, device="cpu", amp="auto"
) -> torch.Tensor:
    """Reconstructions in [0, 1] of (N, 1, s, s, s) patches from the posterior mean, patch by
    patch batch (under float16 autocast on a GPU: the ``amp`` setting)."""
    autoencoder.eval()
    out = []
    for chunk in patches.split(batch_size):
        with autocast(amp, device):
            mu, _ = autoencoder.encode(to_model_range(chunk.to(device)))
            out.append(from_model_range(autoencoder.decode(mu)).float().cpu())
    return torch.cat(out)
