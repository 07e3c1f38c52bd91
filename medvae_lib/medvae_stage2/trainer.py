"""Training the stage-2 head: :class:`Stage2Config` and :class:`Stage2Trainer`, which
fits a :class:`~medvae_lib.models.ProjectionHead` on a frozen stage-1 autoencoder
against a frozen teacher."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import ProjectionHead, get_config
from ..teachers import FrozenTeacher
from ..training import CheckpointedTrainer, check_types
from .latents import project, reconstruct, weights_fingerprint
from .objective import LATENT_SCALE, render_latent


@dataclass
class Stage2Config:
    model: str = "medvae_4_1_2d"
    width: int | str = 16
    steps: int = 400
    batch_size: int = 4
    lr: float = 4e-4  # MedVAE: base_learning_rate 1e-4 x batch size 4
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    hidden: int = 64
    latent_scale: float = LATENT_SCALE
    sample_posterior: bool = True
    teacher: str = ""  # the teacher's name: a run is resumed only with the same teacher
    stage1: str = ""  # fingerprint of the frozen stage-1 weights: likewise
    seed: int = 0
    log_every: int = 10

    def __post_init__(self):
        check_types(self)
        get_config(self.model)
        for name in ("steps", "batch_size", "log_every", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"Stage2Config.{name} must be at least 1, got {getattr(self, name)}"
                )
        for name in ("lr", "latent_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"Stage2Config.{name} must be positive, got {getattr(self, name)}"
                )
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ValueError(
                f"Adam's betas must lie in [0, 1), got ({self.adam_beta1}, {self.adam_beta2})"
            )
        if get_config(self.model).spatial_dims != 2:
            raise ValueError(
                f"this stage 2 is MedVAE's 2D stage 2; {self.model} is 3D (chapter 5 treats 3D)"
            )


class Stage2Trainer(CheckpointedTrainer):
    """Trains a :class:`ProjectionHead` on top of a frozen stage-1 autoencoder against a frozen teacher.

    Only the head is a module of this trainer (checkpointed, optimised); the autoencoder and the
    teacher are frozen and named in the config (``stage1`` fingerprint, ``teacher`` name), so a
    checkpoint is resumed only on top of the same ones.
    """

    def __init__(
        self,
        config: Stage2Config,
        autoencoder: torch.nn.Module,
        teacher: FrozenTeacher,
        device="cpu",
    ):
        super().__init__(config, device)
        if config.stage1 and config.stage1 != weights_fingerprint(autoencoder):
            raise ValueError(
                "Stage2Config.stage1 does not match the autoencoder's weights (see weights_fingerprint)"
            )
        if config.teacher and teacher.name and config.teacher != teacher.name:
            raise ValueError(
                f"Stage2Config.teacher is {config.teacher!r} but the teacher is {teacher.name!r}"
            )
        self.name = f"stage 2 {config.model}"
        cfg = get_config(config.model)
        channels = getattr(autoencoder, "latent_channels", cfg.latent_channels)
        if channels != cfg.latent_channels:
            raise ValueError(
                f"{config.model} has {cfg.latent_channels} latent channels but the stage-1 autoencoder has "
                f"{channels}: train (or load) the stage-1 model of {config.model} first"
            )
        self.autoencoder = autoencoder.to(self.device).eval().requires_grad_(False)
        self.teacher = teacher.to(self.device)
        torch.manual_seed(config.seed)
        self.head = ProjectionHead(
            cfg.latent_channels, cfg.spatial_dims, config.hidden
        ).to(self.device)
        self.opt = torch.optim.Adam(
            self.head.parameters(),
            lr=config.lr,
            betas=(config.adam_beta1, config.adam_beta2),
        )

    def modules(self):
        return {"head": self.head}

    def optimizers(self):
        return {"head": self.opt}

    def check_images(self, images: torch.Tensor) -> None:
        cfg = get_config(self.config.model)
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(
                f"stage 2 trains on (N, 1, H, W) images; got shape {tuple(images.shape)}"
            )
        cfg.latent_shape(tuple(images.shape[2:]))
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"stage 2 trains on images scaled to [0, 1]; these span [{lo:.3g}, {hi:.3g}]"
            )

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """One head update on images in [0, 1]: sample z from the frozen posterior,
        project it, and pull the teacher's embedding of the rendered latent towards its
        embedding of the image."""
        c = self.config
        with torch.no_grad():
            mu, sigma = self.autoencoder.encode(batch * 2.0 - 1.0)  # MedVAE's [-1, 1]
            z = mu + sigma * self.global_randn_like(mu) if c.sample_posterior else mu
            target = self.teacher(batch)
        self.head.train()
        latent = self.net("head")(z)
        loss = (
            ((self.teacher(render_latent(latent, c.latent_scale)) - target) ** 2)
            .sum(1)
            .mean()
        )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"teacher distance": loss.detach()}

    @torch.no_grad()
    def latents(self, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Stage-2 latents of images in [0, 1]: the head applied to the posterior mean (no sampling)."""
        self.head.eval()
        return project(self.autoencoder, self.head, images, batch_size, self.device)

    def reconstruct(self, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """What the stage-2 model reconstructs: the frozen decoder on the posterior mean."""
        return reconstruct(self.autoencoder, images, batch_size, self.device)
