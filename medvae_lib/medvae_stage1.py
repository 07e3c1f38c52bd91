"""MedVAE stage 1: train a KL autoencoder for reconstruction (chapter ``02_medvae_stage1``).

The generator loss is MedVAE's (latent diffusion's ``LPIPSWithDiscriminator``), with images scaled to
``[-1, 1]`` as MedVAE does; the terms live in :mod:`medvae_lib.losses`:

    sum_pixels(|x - x_hat| + w_p * perceptual) / B  +  w_kl * sum_latent(KL) / B  +  lambda * w_adv * hinge_G

where ``lambda`` is VQGAN's adaptive weight and the adversarial term (a MONAI ``PatchDiscriminator``
trained with the hinge loss on raw logits) is switched on after ``adv_start`` warm-up steps.
Following MedVAE: Adam with betas (0.5, 0.9) for both networks, the discriminator initialised with
N(0, 0.02) weights as in taming-transformers. Deviating from MedVAE, the discriminator sees real and
reconstructed images in **one** batch (in both steps), so its batch normalisation uses the statistics
of the mixed batch instead of normalising real and fake images each by their own statistics, which
hides global differences between them from it.

The perceptual term is LPIPS (``monai.losses.PerceptualLoss``) in full mode; its weights come from a
hub, so CI mode, which has no network, uses ``1 - SSIM`` (MONAI's ``SSIMLoss``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator

from .data_prep import MODES as _data_modes
from .losses import (
    PERCEPTUAL_KINDS,
    adaptive_adv_weight,
    hinge_d_loss,
    hinge_g_loss,
    kl_loss,
    perceptual_loss,
    reconstruction_nll,
)
from .metrics import ms_ssim, psnr
from .models import (
    build_autoencoder,
    decoder_output_layer,
    get_config,
    grey_input,
    layout_fingerprint,
)
from .training import CheckpointedTrainer, check_types


@dataclass
class Stage1Config:
    model: str = "medvae_4_1_2d"
    width: int | str = 16
    steps: int = 400
    batch_size: int = 16
    lr: float = 2e-4
    lr_d: float = 2e-4
    adam_beta1: float = (
        0.5  # MedVAE / latent diffusion: Adam(betas=(0.5, 0.9)) for both networks
    )
    adam_beta2: float = 0.9
    kl_weight: float = 1e-6
    perceptual: str = "ssim"
    perceptual_weight: float = 1.0
    adv_weight: float = (
        0.5  # 0 switches the adversarial term (and the discriminator's training) off
    )
    adaptive_adv: bool = True
    adv_start: int = 200
    # MedVAE: from adv_start on, the generator trains on even batches and the
    # discriminator on odd ones; False updates both on every batch.
    alternate_updates: bool = False
    disc_channels: int = 32
    disc_layers: int = 3
    seed: int = 0
    log_every: int = 10

    def __post_init__(self):
        check_types(self)
        get_config(self.model)  # raises on an unknown model name
        for name in (
            "steps",
            "batch_size",
            "log_every",
            "disc_channels",
            "disc_layers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"Stage1Config.{name} must be at least 1, got {getattr(self, name)}"
                )
        for name in ("lr", "lr_d"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"Stage1Config.{name} must be positive, got {getattr(self, name)}"
                )
        for name in ("kl_weight", "perceptual_weight", "adv_weight", "adv_start"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"Stage1Config.{name} must be >= 0, got {getattr(self, name)}"
                )
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ValueError(
                f"Adam's betas must lie in [0, 1), got ({self.adam_beta1}, {self.adam_beta2})"
            )
        if self.perceptual not in PERCEPTUAL_KINDS:
            raise ValueError(
                f"unknown perceptual loss {self.perceptual!r}; choose one of {PERCEPTUAL_KINDS}"
            )


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images (what the data pipeline and the metrics use) to MedVAE's [-1, 1]."""
    return x * 2.0 - 1.0


def from_model_range(y: torch.Tensor) -> torch.Tensor:
    """The decoder's [-1, 1] output back to [0, 1], clipped."""
    return ((y + 1.0) / 2.0).clamp(0.0, 1.0)


def init_discriminator_weights(module: torch.nn.Module) -> None:
    """taming-transformers' ``weights_init`` (used by MedVAE): conv weights N(0, 0.02), norm scales N(1, 0.02)."""
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        torch.nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        torch.nn.init.normal_(module.weight, 1.0, 0.02)
        torch.nn.init.zeros_(module.bias)


class Stage1Trainer(CheckpointedTrainer):
    """Generator (:class:`~medvae_lib.models.MedVAE`), discriminator, their optimisers
    and losses. Stage 1 trains the whole autoencoder except stage 2's head.

    ``fit`` (checkpoint, resume, data identity, non-finite guard) comes from
    :class:`~medvae_lib.training.CheckpointedTrainer`; it takes images in ``[0, 1]``.
    """

    def __init__(self, config: Stage1Config, device: torch.device | str = "cpu"):
        super().__init__(config, device)
        self.name = f"stage 1 {config.model}"
        dims = get_config(config.model).spatial_dims
        torch.manual_seed(config.seed)
        self.autoencoder = build_autoencoder(config.model, width=config.width).to(
            self.device
        )
        self.discriminator = PatchDiscriminator(
            spatial_dims=dims,
            num_layers_d=config.disc_layers,
            channels=config.disc_channels,
            in_channels=1,
        ).to(self.device)
        self.discriminator.apply(init_discriminator_weights)
        betas = (config.adam_beta1, config.adam_beta2)
        self.autoencoder.channel_ds.requires_grad_(False)  # stage 2's head
        self.autoencoder.channel_proj.requires_grad_(False)
        self.opt_g = torch.optim.Adam(
            [p for p in self.autoencoder.parameters() if p.requires_grad],
            lr=config.lr,
            betas=betas,
        )
        self.opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=config.lr_d, betas=betas
        )
        self.perceptual = perceptual_loss(config.perceptual, dims).to(self.device)

    def modules(self):
        return {"autoencoder": self.autoencoder, "discriminator": self.discriminator}

    def optimizers(self):
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def check_images(self, images: torch.Tensor) -> None:
        cfg = get_config(self.config.model)
        if images.ndim != cfg.spatial_dims + 2 or images.shape[1] != 1:
            raise ValueError(
                f"{cfg.name} trains on (N, 1, *spatial) images; got shape {tuple(images.shape)}"
            )
        cfg.latent_shape(tuple(images.shape[2:]))  # raises if a side does not divide
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"stage 1 trains on images scaled to [0, 1]; these span [{lo:.3g}, {hi:.3g}]"
            )

    def adversarial(self, step: int) -> bool:
        return self.config.adv_weight > 0 and step >= self.config.adv_start

    # -- one optimisation step: the generator, then the discriminator ------------------------------
    def generator_step(
        self, x: torch.Tensor, step: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One autoencoder update on a batch ``x`` in [-1, 1]; the discriminator's
        weights are not touched (its parameters are frozen during this step). Returns
        the logs and the detached reconstructions."""
        c = self.config
        self.autoencoder.train()
        self.discriminator.train()
        self.opt_g.zero_grad(set_to_none=True)
        x_hat, z_mu, z_sigma = self.autoencoder(x)
        perc = self.perceptual(x_hat, x)
        nll = reconstruction_nll(x, x_hat, perc, c.perceptual_weight)
        kl = kl_loss(z_mu, z_sigma)
        loss = nll + c.kl_weight * kl
        logs = {
            "l1": (x_hat - x).abs().mean().detach() / 2,
            "perceptual": perc.detach(),
            "kl": kl.detach(),
        }
        if self.adversarial(step):
            self.discriminator.requires_grad_(False)
            # The discriminator runs in training mode, as in its own step, but its
            # batch-norm running
            # statistics are put back afterwards: this step changes nothing of the
            # discriminator.
            buffers = {k: v.clone() for k, v in self.discriminator.named_buffers()}
            try:
                logits = self.discriminator(torch.cat([x, x_hat]).contiguous())[-1]
                adv_g = hinge_g_loss(logits[len(x) :])
                weight = torch.tensor(c.adv_weight)
                if c.adaptive_adv:
                    weight = weight * adaptive_adv_weight(
                        nll, adv_g, decoder_output_layer(self.autoencoder)
                    )
                loss = loss + weight * adv_g
                loss.backward()
            finally:
                self.discriminator.requires_grad_(True)
                with torch.no_grad():
                    for k, v in self.discriminator.named_buffers():
                        v.copy_(buffers[k])
            logs.update(adv_g=adv_g.detach(), adv_weight=weight.detach())
        else:
            loss.backward()
        self.opt_g.step()
        return logs, x_hat.detach()

    def discriminator_step(
        self, x: torch.Tensor, x_hat: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One discriminator update: real and reconstructed images in one batch, hinge loss."""
        self.discriminator.train()
        self.opt_d.zero_grad(set_to_none=True)
        logits = self.discriminator(torch.cat([x, x_hat.detach()]).contiguous())[-1]
        logits_real, logits_fake = logits[: len(x)], logits[len(x) :]
        loss_d = hinge_d_loss(logits_real, logits_fake)
        loss_d.backward()
        self.opt_d.step()
        return {
            "d_loss": loss_d.detach(),
            "logit_real": logits_real.mean().detach(),
            "logit_fake": logits_fake.mean().detach(),
        }

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        x = to_model_range(batch)
        if self.adversarial(step) and self.config.alternate_updates and step % 2:
            with torch.no_grad():  # MedVAE's odd batches: the discriminator only
                self.autoencoder.train()
                x_hat = self.autoencoder(x)[0]
            return self.discriminator_step(x, x_hat)
        logs, x_hat = self.generator_step(x, step)
        if self.adversarial(step) and not self.config.alternate_updates:
            logs.update(self.discriminator_step(x, x_hat))
        return logs

    def branch(self, config: Stage1Config) -> Stage1Trainer:
        """A copy of this trainer (weights, optimiser states, step, history) that goes on with
        ``config``: the ablation's two arms continue from one warm-up on the same batches."""
        other = Stage1Trainer(config, self.device)
        for name, module in other.modules().items():
            module.load_state_dict(copy.deepcopy(self.modules()[name].state_dict()))
        for name, opt in other.optimizers().items():
            settings = [
                {k: v for k, v in group.items() if k != "params"}
                for group in opt.param_groups
            ]
            opt.load_state_dict(copy.deepcopy(self.optimizers()[name].state_dict()))
            for group, mine in zip(
                opt.param_groups, settings, strict=True
            ):  # the moments are copied, lr and betas are the new config's
                group.update(mine)
        other.step, other.history = self.step, copy.deepcopy(self.history)
        other.data_identity = copy.deepcopy(self.data_identity)
        return other

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self, images: torch.Tensor, batch_size: int = 64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation of ``images`` in [0, 1]."""
        self.autoencoder.eval()
        mus, sigmas = [], []
        for chunk in images.split(batch_size):
            mu, sigma = self.autoencoder.encode(to_model_range(chunk.to(self.device)))
            mus.append(mu.cpu())
            sigmas.append(sigma.cpu())
        return torch.cat(mus), torch.cat(sigmas)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Decode the posterior mean (no sampling): deterministic reconstructions in [0, 1]."""
        self.autoencoder.eval()
        out = []
        for chunk in images.split(batch_size):
            z_mu, _ = self.autoencoder.encode(to_model_range(chunk.to(self.device)))
            out.append(from_model_range(self.autoencoder.decode(z_mu)).cpu())
        return torch.cat(out)


def adversarial_ablation(
    config: Stage1Config,
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = True,
    data: dict | None = None,
    overwrite: bool = False,
    without: bool = True,
) -> dict[str, Stage1Trainer]:
    """Train the warm-up (steps before ``adv_start``) once, then two arms from it on the same batches and
    noise: ``"with adversarial"`` (``config``) and ``"without adversarial"`` (``adv_weight = 0``;
    left out when ``without`` is false, which changes nothing of the first arm).

    The difference between the arms is the effect of the adversarial term alone. Each part writes its
    checkpoints to its own sub-folder of ``checkpoint_dir``; ``resume`` and ``overwrite`` are passed on to
    :meth:`~medvae_lib.training.CheckpointedTrainer.fit`.
    """
    if not 0 < config.adv_start < config.steps or config.adv_weight == 0:
        raise ValueError(
            f"the ablation needs 0 < adv_start < steps and adv_weight > 0; got {config}"
        )
    sub = (
        (lambda name: Path(checkpoint_dir) / name)
        if checkpoint_dir
        else (lambda name: None)
    )
    warm = Stage1Trainer(replace(config, steps=config.adv_start), device)
    warm.name = f"stage 1 {config.model} warm-up"
    warm.fit(
        images,
        sub("warmup"),
        checkpoint_every,
        resume=resume,
        data=data,
        overwrite=overwrite,
    )
    arms = {
        "with adversarial": config,
        "without adversarial": replace(config, adv_weight=0.0),
    }
    if not without:
        del arms["without adversarial"]
    runs = {}
    for name, arm_config in arms.items():
        trainer = warm.branch(arm_config)
        trainer.name = f"stage 1 {config.model} {name}"
        trainer.fit(
            images,
            sub(name.replace(" ", "_")),
            checkpoint_every,
            resume=resume,
            data=data,
            overwrite=overwrite,
        )
        runs[name] = trainer
    return runs


def resize_baseline(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Shrink by ``factor`` per side (area average), then enlarge back (bicubic/trilinear), clipped to [0, 1].

    With one latent channel, the shrunken image holds exactly as many numbers as a MedVAE latent of
    the same factor: the baseline a learned latent has to beat.
    """
    small = F.interpolate(images, scale_factor=1 / factor, mode="area")
    mode = "bicubic" if images.ndim == 4 else "trilinear"
    return F.interpolate(
        small, size=images.shape[2:], mode=mode, align_corners=False
    ).clamp(0, 1)


def fidelity(
    reference: torch.Tensor,
    reconstructions: dict[str, torch.Tensor],
    kernel_size: int = 7,
    scales: int | None = None,
):
    """PSNR and MS-SSIM of each reconstruction against ``reference``, one row per method and image."""
    import pandas as pd

    rows = []
    for method, rec in reconstructions.items():
        p, m = (
            psnr(rec, reference),
            ms_ssim(rec, reference, kernel_size=kernel_size, scales=scales),
        )
        rows += [
            {"method": method, "image": i, "PSNR (dB)": float(a), "MS-SSIM": float(b)}
            for i, (a, b) in enumerate(zip(p, m, strict=True))
        ]
    return pd.DataFrame(rows)


LOWER_IS_BETTER = ("sharpness error",)


def comparison_config(config: Stage1Config, settings: dict) -> Stage1Config:
    """The settings of the seeds comparison: ``config`` with each ``comparison_<field>`` entry of
    ``settings`` (e.g. ``comparison_steps``) in place of ``<field>``; ``None`` keeps ``config``'s."""
    changes = {
        key.removeprefix("comparison_"): value
        for key, value in settings.items()
        if key.startswith("comparison_")
        and key != "comparison_seeds"
        and value is not None
    }
    return replace(config, **changes)


def seed_ablation(
    config: Stage1Config,
    images: torch.Tensor,
    seeds,
    device: torch.device | str = "cpu",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = True,
    data: dict | None = None,
    overwrite: bool = False,
    reuse: dict[str, Stage1Trainer] | None = None,
) -> dict[int, dict[str, Stage1Trainer]]:
    """:func:`adversarial_ablation` once per seed in ``seeds`` (``config`` with its seed replaced):
    the training runs whose spread an honest interval must include.

    Each seed trains from its own initialisation and batch order; its checkpoints go to
    ``checkpoint_dir/seed_<seed>``. ``reuse``: an ablation already trained (e.g. the chapter's own
    run), taken instead of training a seed again when its settings equal that seed's."""
    out = {}
    for s in seeds:
        cfg = replace(config, seed=int(s))
        if (
            reuse is not None
            and "without adversarial" in reuse
            and reuse["with adversarial"].config == cfg
        ):
            out[int(s)] = reuse
            continue
        folder = Path(checkpoint_dir) / f"seed_{int(s)}" if checkpoint_dir else None
        out[int(s)] = adversarial_ablation(
            cfg,
            images,
            device,
            folder,
            checkpoint_every,
            resume=resume,
            data=data,
            overwrite=overwrite,
        )
    return out


def seed_fidelity(
    runs_by_seed: dict[int, dict[str, Stage1Trainer]],
    reference: torch.Tensor,
    baseline: str,
    factor: int,
    kernel_size: int = 7,
):
    """:func:`fidelity` and :func:`add_sharpness` of every seed's arms and of the resize
    baseline (named ``baseline``; the same for every seed) on ``reference``: one row per seed,
    method and image."""
    import pandas as pd

    resized = resize_baseline(reference, factor)
    frames = []
    for s, runs in runs_by_seed.items():
        recs = {name: run.reconstruct(reference) for name, run in runs.items()}
        recs[baseline] = resized
        scores = fidelity(reference, recs, kernel_size=kernel_size)
        frames.append(add_sharpness(scores, reference, recs).assign(seed=int(s)))
    return pd.concat(frames, ignore_index=True)


def seed_paired_table(
    scores, pairs, metrics=("PSNR (dB)", "MS-SSIM", "sharpness error")
):
    """Paired differences (first minus second method of each pair) over seeds and test images
    (:func:`seed_fidelity`'s table), with the 95% interval of :func:`medvae_lib.stats.paired_difference`:
    a random-effects interval over seeds and images, never over images alone.

    Columns: the mean difference, the interval, the share of seeds on which the first method is
    better (higher, or lower for the metrics in ``LOWER_IS_BETTER``) and each seed's mean
    difference (``seed <s>``)."""
    import numpy as np
    import pandas as pd

    from .stats import paired_difference

    rows = []
    for a, b in pairs:
        for m in metrics:
            first = scores[scores.method == a].pivot(
                index="seed", columns="image", values=m
            )
            second = scores[scores.method == b].pivot(
                index="seed", columns="image", values=m
            )
            second = second.loc[first.index, first.columns]
            d = paired_difference(first.to_numpy(), second.to_numpy())
            per_seed = np.asarray(d["per_seed"])
            if len(per_seed) == 1:  # one seed: the share of images instead
                per_seed = (first.to_numpy() - second.to_numpy())[0]
            better = per_seed < 0 if m in LOWER_IS_BETTER else per_seed > 0
            rows.append(
                {
                    "comparison": f"{a} - {b}",
                    "metric": m,
                    "mean difference": d["mean"],
                    "95% CI low": d["low"],
                    "95% CI high": d["high"],
                    "first better on (share)": float(better.mean()),
                    **{
                        f"seed {s}": v
                        for s, v in zip(first.index, d["per_seed"], strict=True)
                    },
                }
            )
    return pd.DataFrame(rows).set_index(["comparison", "metric"])


@torch.no_grad()
def reconstruct_with(autoencoder, images: torch.Tensor, batch_size: int = 32):
    """Reconstructions in [0, 1] of ``images`` in [0, 1] by any MedVAE (decoding the
    posterior mean); a model with three input channels (the published 3- and 4-channel
    ones) gets the grey image on each."""
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    out = []
    for chunk in images.split(batch_size):
        x = grey_input(autoencoder, to_model_range(chunk.to(device)))
        y = autoencoder.decode(autoencoder.encode(x)[0]).mean(1, keepdim=True)
        out.append(from_model_range(y).cpu())
    return torch.cat(out)


def published_beside(published, trained, reference: torch.Tensor, kernel_size: int = 7):
    """MedVAE's published model beside the one trained here, on the same images:
    :func:`seed_paired_table` of "published - trained here" (intervals over images; one
    trained seed) and the resize baseline as the control."""
    factor = 2 ** (len(published.arch.ch_mult) - 1)
    recs = {
        "published": reconstruct_with(published, reference),
        "trained here": trained.reconstruct(reference),
        "resize": resize_baseline(reference, factor),
    }
    scores = fidelity(reference, recs, kernel_size=kernel_size)
    scores = add_sharpness(scores, reference, recs).assign(seed=0)
    pairs = [("published", "trained here"), ("published", "resize")]
    return seed_paired_table(scores, pairs)


def add_sharpness(
    scores, reference: torch.Tensor, reconstructions: dict[str, torch.Tensor]
):
    """Add ``sharpness`` (edge energy relative to the original, :func:`~medvae_lib.metrics.gradient_ratio`;
    1 is right, below 1 blurred, above 1 invented edges) and ``sharpness error`` = |1 - sharpness|
    (lower is better) to a :func:`fidelity` table."""
    from .metrics import gradient_ratio

    scores = scores.copy()
    for name, rec in reconstructions.items():
        ratio = gradient_ratio(rec, reference).numpy()
        scores.loc[scores.method == name, "sharpness"] = ratio
        scores.loc[scores.method == name, "sharpness error"] = abs(1.0 - ratio)
    return scores


def edge_energy(images: torch.Tensor) -> torch.Tensor:
    """Fine detail of each 2D image: its mean Sobel gradient magnitude (the quantity
    :func:`~medvae_lib.metrics.gradient_ratio` compares), one value per image."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([kx, kx.T])[:, None]
    g = F.conv2d(F.pad(images.float(), (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(1).sqrt().flatten(1).mean(1)


def worst_images(images, labels, psnr_values, train_images, n: int = 4) -> dict:
    """What the ``n`` images with the lowest PSNR have in common: a table of them (class, edge
    energy, and its percentile among the training images), Spearman's rank correlation between
    PSNR and edge energy over all ``images``, and the share of training images with at least the
    edge energy of the least detailed of the ``n``."""
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    psnr_values = np.asarray(psnr_values, dtype=float)
    energy = edge_energy(images).numpy()
    train_energy = np.sort(edge_energy(train_images).numpy())
    order = np.argsort(psnr_values)[:n]
    table = pd.DataFrame(
        {
            "image": order,
            "class": np.asarray(labels).ravel()[order],
            "PSNR (dB)": psnr_values[order],
            "edge energy": energy[order],
            "percentile among training images": 100
            * np.searchsorted(train_energy, energy[order])
            / train_energy.size,
        }
    )
    rho = float(spearmanr(psnr_values, energy).statistic)
    share = float((train_energy >= energy[order].min()).mean())
    return {"table": table, "spearman": rho, "train_share": share}


def latent_table(z_mu: torch.Tensor, z_sigma: torch.Tensor):
    """What the KL term sees: statistics of the posterior means and standard deviations, and the KL per
    latent value, against the N(0, 1) prior (mean 0, std 1, sigma 1, KL 0)."""
    import pandas as pd

    from .losses import kl_divergence

    per_value = kl_divergence(z_mu, z_sigma) / z_mu[0].numel()
    return pd.DataFrame(
        [
            {
                "mean of mu": z_mu.mean().item(),
                "std of mu": z_mu.std().item(),
                "mean sigma": z_sigma.mean().item(),
                "KL per latent value (nats)": per_value.mean().item(),
                "KL per image (nats)": (per_value * z_mu[0].numel()).mean().item(),
            }
        ]
    )


def plot_latents(
    images: torch.Tensor, z_mu: torch.Tensor, z_sigma: torch.Tensor, index, titles=None
):
    """Left: histograms of every posterior mean (against the N(0, 1) prior density) and of every
    posterior standard deviation (the prior's is 1). Right: for the images at ``index``, the image and
    each latent channel's mean."""
    import matplotlib.pyplot as plt
    import numpy as np

    index = list(index)
    channels = z_mu.shape[1]
    rows = max(2, 1 + channels)
    fig = plt.figure(figsize=(3.6 + 1.5 * len(index), 1.7 * rows + 0.3))
    grid = fig.add_gridspec(rows, 1 + len(index), width_ratios=[2.4] + [1] * len(index))
    top, bottom = (
        fig.add_subplot(grid[: rows // 2, 0]),
        fig.add_subplot(grid[rows // 2 :, 0]),
    )
    values = z_mu.flatten().numpy()
    top.hist(values, bins=60, density=True, alpha=0.7, label="posterior means $\\mu$")
    grid_x = np.linspace(min(values.min(), -4), max(values.max(), 4), 200)
    top.plot(
        grid_x,
        np.exp(-(grid_x**2) / 2) / np.sqrt(2 * np.pi),
        "k--",
        lw=1,
        label="prior N(0, 1)",
    )
    top.legend(fontsize=7)
    bottom.hist(
        z_sigma.flatten().numpy(),
        bins=60,
        density=True,
        alpha=0.7,
        color="C1",
        label="posterior std $\\sigma$",
    )
    bottom.axvline(1.0, color="k", ls="--", lw=1, label="prior std 1")
    bottom.set_xlim(0, max(1.1, float(z_sigma.max()) * 1.05))
    bottom.legend(fontsize=7)
    bottom.set_xlabel("value")
    for j, i in enumerate(index):
        a = fig.add_subplot(grid[0, 1 + j])
        a.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
        a.set_title(titles[j] if titles is not None else f"image {i}", fontsize=8)
        panels = [a]
        for c in range(channels):
            b = fig.add_subplot(grid[1 + c, 1 + j])
            b.imshow(z_mu[i, c], cmap="viridis")
            if j == 0:
                b.set_ylabel(f"$\\mu$, channel {c}", fontsize=8)
            panels.append(b)
        for p in panels:
            p.set_xticks([])
            p.set_yticks([])
    fig.tight_layout()
    return fig


def plot_architecture(model_name: str, image_size: int, width: int | str):
    """A block diagram of stage 1: encoder, posterior, sampling, decoder, and the losses' inputs."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    cfg = get_config(model_name)
    latent = "x".join(map(str, cfg.latent_shape((image_size,) * cfg.spatial_dims)))
    image = "x".join([str(image_size)] * cfg.spatial_dims)
    boxes = {
        "x": (0.2, 2.0, f"image x\n1x{image}\nin [-1, 1]", "#dfe9f5"),
        "enc": (
            1.9,
            2.0,
            f"encoder\n{cfg.levels - 1} halvings\n-> {2 * cfg.latent_channels} maps",
            "#f5e6cc",
        ),
        "post": (3.6, 2.0, "1x1 conv\nmean $\\mu$,\nlog-variance", "#f5e6cc"),
        "z": (5.3, 2.0, f"z = $\\mu$ + $\\sigma\\epsilon$\n{latent}", "#e3f1df"),
        "dec": (7.0, 2.0, "decoder\n(mirror of\nthe encoder)", "#f5e6cc"),
        "xh": (8.7, 2.0, f"reconstruction\n$\\hat x$, 1x{image}", "#dfe9f5"),
        "kl": (3.6, 0.3, "KL($q(z|x)$ || N(0, I))", "#f7d9d9"),
        "rec": (8.7, 3.7, "L1 + perceptual\n(x vs $\\hat x$)", "#f7d9d9"),
        "disc": (8.7, 0.3, "PatchGAN D\nreal x vs $\\hat x$\n(hinge)", "#f7d9d9"),
    }
    fig, ax = plt.subplots(figsize=(10.5, 3.6))
    for x0, y0, text, color in boxes.values():
        ax.add_patch(
            FancyBboxPatch(
                (x0, y0), 1.45, 1.0, boxstyle="round,pad=0.05", fc=color, ec="0.3"
            )
        )
        ax.text(x0 + 0.72, y0 + 0.5, text, ha="center", va="center", fontsize=8)

    def arrow(a, b, dy_a=0.5, dy_b=0.5, dx_a=1.45, dx_b=0.0):
        (xa, ya, *_), (xb, yb, *_) = boxes[a], boxes[b]
        ax.add_patch(
            FancyArrowPatch(
                (xa + dx_a, ya + dy_a),
                (xb + dx_b, yb + dy_b),
                arrowstyle="-|>",
                mutation_scale=12,
                color="0.3",
            )
        )

    for a, b in (
        ("x", "enc"),
        ("enc", "post"),
        ("post", "z"),
        ("z", "dec"),
        ("dec", "xh"),
    ):
        arrow(a, b)
    arrow("post", "kl", dy_a=0.0, dy_b=1.0, dx_a=0.72, dx_b=0.72)
    arrow("xh", "rec", dy_a=1.0, dy_b=0.0, dx_a=0.72, dx_b=0.72)
    arrow("xh", "disc", dy_a=0.0, dy_b=1.0, dx_a=0.72, dx_b=0.72)
    ax.set_xlim(0, 10.4)
    ax.set_ylim(0.1, 4.9)
    ax.axis("off")
    ax.set_title(f"{model_name} (width {width}): stage 1", fontsize=10)
    fig.tight_layout()
    return fig


def plot_reconstructions(
    reference: torch.Tensor,
    reconstructions: dict[str, torch.Tensor],
    index,
    titles=None,
):
    """A grid for the images at ``index``: originals on the first row, then one row per method, each
    followed by its absolute error map."""
    import matplotlib.pyplot as plt

    index = torch.as_tensor(index)
    reference = reference[index]
    reconstructions = {method: rec[index] for method, rec in reconstructions.items()}
    n = len(index)
    rows = ["original"] + [m for m in reconstructions for _ in (0, 1)]
    fig, axes = plt.subplots(
        len(rows), n, figsize=(1.6 * n, 1.6 * len(rows)), squeeze=False
    )
    for j in range(n):
        axes[0, j].imshow(reference[j, 0], cmap="gray", vmin=0, vmax=1)
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=8)
        for r, rec in enumerate(reconstructions.values()):
            axes[1 + 2 * r, j].imshow(rec[j, 0], cmap="gray", vmin=0, vmax=1)
            axes[2 + 2 * r, j].imshow(
                (rec[j, 0] - reference[j, 0]).abs(), cmap="magma", vmin=0, vmax=0.3
            )
    for i, label in enumerate(rows):
        axes[i, 0].set_ylabel(label if i == 0 or i % 2 == 1 else "|error|", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


# Settings for the two ways chapter 2 runs; the notebook's `overrides` parameter changes single entries.
MODES = {
    "ci": {
        **_data_modes["ci"],
        # width 16 and batches of 8 keep the exported model's 900 steps within about a
        # minute on 2 CPU cores.
        "model": "medvae_4_1_2d",
        "width": 16,
        "steps": 900,
        "batch_size": 8,
        "perceptual": "ssim",
        "kl_weight": 1e-6,  # MedVAE's (lpips_with_discriminator.yaml); exercise 2 raises it
        "lr": 2e-4,
        "lr_d": 2e-4,
        # A tenth of MedVAE's adversarial weight: with 0.5 the generator follows the still untrained
        # discriminator with half the force of the reconstruction gradient and fidelity collapses.
        "adv_start": 600,
        "adv_weight": 0.1,
        "disc_layers": 3,
        "disc_channels": 32,
        # MS-SSIM at 32x32 fits 3 scales of a 7-pixel window (the paper: 5 scales of 11 pixels).
        "ms_ssim_kernel": 7,
        # The exported model trains the adversarial arm only; the ablation runs over seeds
        # (seed_ablation) on a shorter schedule (batches of 8, 200 + 80 steps) so that three
        # seeds fit the time budget.
        "ablation": False,
        "comparison_seeds": 3,
        "comparison_steps": 280,
        "comparison_adv_start": 200,
        "comparison_batch_size": 8,
        "checkpoint_every": 300,
        "resume": False,
    },
    "full": {
        **_data_modes["full"],
        # LPIPS on VGG-16 features, as MedVAE's LPIPS (from taming-transformers) is.
        "model": "medvae_4_1_2d",
        "width": "full",
        "steps": 20000,
        "batch_size": 16,
        "perceptual": "vgg",
        "kl_weight": 1e-6,
        "lr": 7.2e-5,
        "lr_d": 7.2e-5,  # MedVAE: base_learning_rate 4.5e-6 x batch size 16
        # taming's NLayerDiscriminator as MedVAE builds it: 64 channels, 3 layers.
        # MedVAE's 2D experiments: disc_start 3125, disc_weight 0.5, alternating updates.
        "adv_start": 3125,
        "adv_weight": 0.5,
        "alternate_updates": True,
        "disc_layers": 3,
        "disc_channels": 64,
        # At 128 px a window of 11 fits 4 MS-SSIM scales (the paper: 5, on larger images).
        "ms_ssim_kernel": 11,
        "ablation": True,
        # The seeds comparison on the exported model's own schedule: its ablation is the first seed.
        "comparison_seeds": 3,
        "comparison_steps": None,
        "comparison_adv_start": None,
        "comparison_batch_size": None,
        "checkpoint_every": 1000,
        "resume": True,
    },
}


def stage1_config(settings: dict, seed: int) -> Stage1Config:
    """The Stage1Config for a notebook's settings (entries that are not training settings are ignored)."""
    fields = Stage1Config.__dataclass_fields__
    return Stage1Config(seed=seed, **{k: v for k, v in settings.items() if k in fields})


def _layout(model: str, width) -> str:
    """:func:`~medvae_lib.models.layout_fingerprint` of the network, built on the meta
    device: names and shapes without allocating or initialising the weights."""
    with torch.device("meta"):
        return layout_fingerprint(build_autoencoder(model, width))


def export_metadata(config, mode: str, data: dict) -> dict[str, str]:
    """The metadata chapter 2 writes into its exported safetensors and chapter 3 checks before reusing
    them. What identifies an exported stage-1 model: its settings, the run mode, the data's checksum
    and the network's layout (the names and shapes of its weights)."""
    from dataclasses import asdict

    return {
        "stage": "1",
        "mode": mode,
        **{k: str(v) for k, v in asdict(config).items() if k != "log_every"},
        "data": str(data.get("checksum")),
        "image_size": str(data.get("image_size")),
        "architecture": _layout(config.model, config.width),
    }
