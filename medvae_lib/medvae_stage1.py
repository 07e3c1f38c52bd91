"""MedVAE stage 1: train a KL autoencoder for reconstruction (chapter ``02_medvae_stage1``).

The generator loss is the one of latent-diffusion autoencoders that MedVAE trains with:

    L1(x, x_hat) + w_p * perceptual(x, x_hat) + w_kl * KL(q(z|x) || N(0, I)) + w_adv * hinge_G(D(x_hat))

where the adversarial term (a MONAI ``PatchDiscriminator`` trained with the hinge loss) is switched on
only after ``adv_start`` warm-up steps, once reconstructions are good enough to be worth criticising.
The hinge loss is the one of VQGAN / latent diffusion, on raw logits (:func:`hinge_d_loss`).
MONAI's ``PatchAdversarialLoss(criterion="hinge")`` passes the logits through ``tanh`` first; in our
runs the logits grew to a spread of about 10, ``tanh`` saturated and the discriminator stopped
learning (both losses stuck at exactly 1), so it is not used here.

The perceptual term is MONAI's ``PerceptualLoss`` (LPIPS-style, ``perceptual="alex"`` and friends) in
full mode; those networks' weights come from a hub, so CI mode, which has no network, uses
``perceptual="ssim"``: MONAI's ``SSIMLoss``, a perception-motivated structural loss that needs no
pretrained weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import PerceptualLoss, SSIMLoss
from monai.networks.nets import PatchDiscriminator

from .data_prep import MODES as _data_modes
from .metrics import ms_ssim, psnr
from .models import build_autoencoder, get_config
from .training import CHECKPOINT_NAME, batch_indices, load_checkpoint, run_steps, save_checkpoint


@dataclass
class Stage1Config:
    model: str = "medvae_4_1_2d"
    width: int | str = 16
    steps: int = 400
    batch_size: int = 16
    lr: float = 2e-4
    lr_d: float = 4e-4
    kl_weight: float = 1e-6
    perceptual: str = "ssim"
    perceptual_weight: float = 0.2
    adv_weight: float = 0.5
    adaptive_adv: bool = True
    adv_start: int = 200
    disc_channels: int = 32
    disc_layers: int = 3
    seed: int = 0
    log_every: int = 10

    def __post_init__(self):
        get_config(self.model)  # raises on an unknown model name
        if self.adv_start < 0 or self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps, batch_size must be positive and adv_start >= 0: {self}")


def perceptual_loss(kind: str, spatial_dims: int) -> torch.nn.Module:
    """``"ssim"`` (no weights needed) or a ``monai.losses.PerceptualLoss`` network type (weights from a hub)."""
    if kind == "ssim":
        return SSIMLoss(spatial_dims=spatial_dims, data_range=1.0, win_size=7)
    return PerceptualLoss(spatial_dims=spatial_dims, network_type=kind, is_fake_3d=spatial_dims == 3)


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)), summed over latent dimensions, averaged over the batch."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2)) - 1)
    return kl.flatten(1).sum(1).mean()


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: push real patches' logits above +1 and reconstructed ones below -1."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: raise the discriminator's logits on reconstructions."""
    return -logits_fake.mean()


def adaptive_adv_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """VQGAN's balance (Esser et al., 2021), used by latent diffusion and MedVAE: scale the adversarial
    term so that its gradient at the decoder's last layer is as large as the reconstruction term's."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()


class Stage1Trainer:
    """Generator (``AutoencoderKL``), discriminator, their optimizers and losses, with checkpoint/resume."""

    def __init__(self, config: Stage1Config, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        dims = get_config(config.model).spatial_dims
        torch.manual_seed(config.seed)
        self.autoencoder = build_autoencoder(config.model, width=config.width).to(self.device)
        self.discriminator = PatchDiscriminator(
            spatial_dims=dims, num_layers_d=config.disc_layers, channels=config.disc_channels, in_channels=1
        ).to(self.device)
        self.opt_g = torch.optim.Adam(self.autoencoder.parameters(), lr=config.lr)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d)
        self.perceptual = perceptual_loss(config.perceptual, dims).to(self.device)
        self.step = 0
        self.history: list[dict] = []

    # -- one optimisation step -------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        c = self.config
        self.autoencoder.train()
        self.discriminator.train()
        adversarial_on = step >= c.adv_start

        self.opt_g.zero_grad(set_to_none=True)
        x_hat, z_mu, z_sigma = self.autoencoder(x)
        rec = F.l1_loss(x_hat, x)
        perc = self.perceptual(x_hat, x)
        kl = kl_divergence(z_mu, z_sigma)
        rec_terms = rec + c.perceptual_weight * perc
        loss_g = rec_terms + c.kl_weight * kl
        logs = {"l1": rec.detach(), "perceptual": perc.detach(), "kl": kl.detach()}
        if adversarial_on:
            logits_fake = self.discriminator(x_hat.contiguous())[-1]
            adv_g = hinge_g_loss(logits_fake)
            weight = c.adv_weight
            if c.adaptive_adv:
                last_layer = self.autoencoder.decoder.blocks[-1].conv.weight
                weight = weight * adaptive_adv_weight(rec_terms, adv_g, last_layer)
            loss_g = loss_g + weight * adv_g
            logs["adv_g"] = adv_g.detach()
            logs["adv_scale"] = weight
        loss_g.backward()
        self.opt_g.step()

        if adversarial_on:
            self.opt_d.zero_grad(set_to_none=True)
            logits_fake = self.discriminator(x_hat.detach().contiguous())[-1]
            logits_real = self.discriminator(x.contiguous())[-1]
            loss_d = hinge_d_loss(logits_real, logits_fake)
            loss_d.backward()
            self.opt_d.step()
            logs["adv_d"] = loss_d.detach()
        return logs

    # -- checkpoints -------------------------------------------------------------------------------
    def _state(self):
        modules = {"autoencoder": self.autoencoder, "discriminator": self.discriminator}
        return modules, {"generator": self.opt_g, "discriminator": self.opt_d}

    def save(self, path: str | Path) -> Path:
        modules, optimizers = self._state()
        extra = {"config": asdict(self.config), "history": self.history}
        return save_checkpoint(path, self.step, modules, optimizers, extra)

    def load(self, path: str | Path) -> int:
        modules, optimizers = self._state()
        step, extra = load_checkpoint(path, modules, optimizers, map_location=self.device)
        saved = extra.get("config", {})
        mine = asdict(self.config)
        # Every setting but the run length must match, or the resumed run is a different experiment.
        differ = {k: (saved.get(k), v) for k, v in mine.items() if k != "steps" and saved.get(k) != v}
        if differ:
            raise ValueError(f"checkpoint {path} was made with other settings (saved, now): {differ}")
        self.step, self.history = step, list(extra.get("history", []))
        return step

    # -- the run ---------------------------------------------------------------------------------
    def fit(
        self,
        images: torch.Tensor,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
        resume: bool = True,
    ) -> list[dict]:
        """Train up to ``config.steps`` on ``images`` (N, 1, *spatial) in [0, 1].

        With ``checkpoint_dir``, a checkpoint is written there every ``checkpoint_every`` steps and at
        the end, and (with ``resume``) a checkpoint found there is resumed from; without ``resume``
        the run starts afresh and overwrites it.
        """
        c = self.config
        if images.ndim != get_config(c.model).spatial_dims + 2 or images.shape[1] != 1:
            raise ValueError(f"{c.model} trains on (N, 1, *spatial) images; got shape {tuple(images.shape)}")
        get_config(c.model).latent_shape(tuple(images.shape[2:]))  # raises if a side does not divide
        ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
        if resume and ckpt is not None and ckpt.is_file():
            self.load(ckpt)
            print(f"resumed from {ckpt} at step {self.step}")

        def step_fn(step: int):
            torch.manual_seed(c.seed * 1_000_003 + step)  # latent sampling noise: a function of the step
            idx = batch_indices(len(images), c.batch_size, step, c.seed)
            logs = self.train_step(images[idx].to(self.device), step)
            self.step = step + 1
            return logs

        def checkpoint_fn(done: int):
            self.save(ckpt)

        return run_steps(
            step_fn, self.step, c.steps, checkpoint_fn if ckpt else None, checkpoint_every,
            desc=f"stage 1 {c.model}", log_every=c.log_every, history=self.history,
        )

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Decode the posterior mean (no sampling): deterministic reconstructions, clipped to [0, 1]."""
        self.autoencoder.eval()
        out = []
        for chunk in images.split(batch_size):
            z_mu, _ = self.autoencoder.encode(chunk.to(self.device))
            out.append(self.autoencoder.decode(z_mu).clamp(0, 1).cpu())
        return torch.cat(out)


def resize_baseline(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Shrink by ``factor`` per side (area average), then enlarge back (bicubic/trilinear), clipped.

    With one latent channel, the shrunken image holds exactly as many numbers as a MedVAE latent of
    the same factor: the baseline a learned latent has to beat.
    """
    small = F.interpolate(images, scale_factor=1 / factor, mode="area")
    mode = "bicubic" if images.ndim == 4 else "trilinear"
    return F.interpolate(small, size=images.shape[2:], mode=mode, align_corners=False).clamp(0, 1)


def fidelity(reference: torch.Tensor, reconstructions: dict[str, torch.Tensor], scales: int | None = None):
    """PSNR and MS-SSIM of each reconstruction against ``reference``, one row per method and image."""
    import pandas as pd

    rows = []
    for method, rec in reconstructions.items():
        p, m = psnr(rec, reference), ms_ssim(rec, reference, kernel_size=7, scales=scales)
        rows += [{"method": method, "image": i, "PSNR (dB)": float(a), "MS-SSIM": float(b)} for i, (a, b) in enumerate(zip(p, m))]
    return pd.DataFrame(rows)


def plot_reconstructions(reference: torch.Tensor, reconstructions: dict[str, torch.Tensor], index, titles=None):
    """A grid for the images at ``index``: originals on the first row, then one row per method, each
    followed by its absolute error map."""
    import matplotlib.pyplot as plt

    index = torch.as_tensor(index)
    reference = reference[index]
    reconstructions = {method: rec[index] for method, rec in reconstructions.items()}
    n = len(index)
    rows = ["original"] + [m for m in reconstructions for _ in (0, 1)]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.6 * len(rows)), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(reference[j, 0], cmap="gray", vmin=0, vmax=1)
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=8)
        for r, (method, rec) in enumerate(reconstructions.items()):
            axes[1 + 2 * r, j].imshow(rec[j, 0], cmap="gray", vmin=0, vmax=1)
            axes[2 + 2 * r, j].imshow((rec[j, 0] - reference[j, 0]).abs(), cmap="magma", vmin=0, vmax=0.3)
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
        **_data_modes["ci"], "n_test": 200,
        "model": "medvae_4_1_2d", "width": 32, "steps": 900, "batch_size": 16, "perceptual": "ssim",
        # 32x32 images: a two-layer discriminator (patches of about 8x8 pixels), a gentler adversarial weight.
        "adv_start": 600, "adv_weight": 0.1, "disc_layers": 2,
        "checkpoint_every": 300, "resume": False,
    },
    "full": {
        **_data_modes["full"], "n_test": None,
        "model": "medvae_4_1_2d", "width": "full", "steps": 20000, "batch_size": 16, "perceptual": "alex",
        "adv_start": 5000, "adv_weight": 0.5, "disc_layers": 3,
        "checkpoint_every": 1000, "resume": True,
    },
}


def stage1_config(settings: dict, seed: int) -> Stage1Config:
    """The Stage1Config for a notebook's settings (entries that are not training settings are ignored)."""
    fields = Stage1Config.__dataclass_fields__
    return Stage1Config(seed=seed, **{k: v for k, v in settings.items() if k in fields})
