"""The CI-mode teacher: a small contrastive image encoder trained by the book (SimCLR's
views and loss, :class:`TeacherConfig`, :class:`ContrastiveTeacherTrainer`) and its
wrapping as a :class:`~medvae_lib.teachers.FrozenTeacher` (:func:`ci_teacher`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..teachers import FrozenTeacher
from ..training import CheckpointedTrainer, check_types
from .latents import weights_fingerprint


def augment(
    x: torch.Tensor, max_rotation: float = 10.0, min_scale: float = 0.7
) -> torch.Tensor:
    """Random views of images in [0, 1], drawn independently per image from torch's current RNG: a
    random crop (zoom ``1 / scale`` with ``scale`` in [min_scale, 1], shifted within the image), a small
    rotation, and a contrast and brightness change. No flips: a flipped chest X-ray puts the heart on
    the wrong side."""
    n = len(x)
    angle = (torch.rand(n) * 2 - 1) * math.radians(max_rotation)
    scale = min_scale + (1 - min_scale) * torch.rand(n)
    shift = (torch.rand(n, 2) * 2 - 1) * (1 - scale)[:, None]
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[:, 0]], 1),
            torch.stack([sin, cos, shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    views = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    contrast = (0.7 + 0.6 * torch.rand(n, 1, 1, 1)).to(x)
    brightness = ((torch.rand(n, 1, 1, 1) * 2 - 1) * 0.1).to(x)
    mean = views.mean((2, 3), keepdim=True)
    return ((views - mean) * contrast + mean + brightness).clamp(0, 1)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: for each of the 2N views, cross-entropy of finding its partner
    among the other 2N - 1 by cosine similarity / temperature."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(a)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, partner)


@dataclass
class TeacherConfig:
    image_size: int = 32
    width: int = 16
    stem_stride: int = (
        2  # halves the first feature maps: a quarter of the cost on a CPU
    )
    embed_dim: int = 64
    steps: int = 300
    batch_size: int = 128
    lr: float = 1e-3
    temperature: float = 0.2
    seed: int = 0
    log_every: int = 10

    def __post_init__(self):
        check_types(self)
        for name in (
            "image_size",
            "width",
            "stem_stride",
            "embed_dim",
            "steps",
            "batch_size",
            "log_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"TeacherConfig.{name} must be at least 1, got {getattr(self, name)}"
                )
        if self.batch_size < 2:
            raise ValueError("contrastive training needs at least 2 images a batch")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"TeacherConfig.{name} must be positive, got {getattr(self, name)}"
                )


class ContrastiveTeacherTrainer(CheckpointedTrainer):
    """SimCLR (Chen et al., 2020) on training images, without labels: an encoder (the book's small
    ResNet, three input channels as BiomedCLIP's vision tower has) and a projection MLP; two random
    views of each image should find each other. The encoder's output is the teacher's embedding."""

    def __init__(self, config: TeacherConfig, device="cpu"):
        super().__init__(config, device)
        from ..models import build_classifier

        self.name = "contrastive teacher"
        torch.manual_seed(config.seed)
        self.encoder = build_classifier(
            3,
            width=config.width,
            num_classes=config.embed_dim,
            stem_stride=config.stem_stride,
        ).to(self.device)
        d = config.embed_dim
        self.projector = torch.nn.Sequential(
            torch.nn.Linear(d, d), torch.nn.ReLU(), torch.nn.Linear(d, d)
        ).to(self.device)
        params = list(self.encoder.parameters()) + list(self.projector.parameters())
        self.opt = torch.optim.Adam(params, lr=config.lr)
        self.mean = self.std = 0.5  # replaced by the training images' statistics in fit

    def modules(self):
        return {"encoder": self.encoder, "projector": self.projector}

    def optimizers(self):
        return {"encoder": self.opt}

    def check_images(self, images: torch.Tensor) -> None:
        s = self.config.image_size
        if (
            images.ndim != 4
            or images.shape[1] != 1
            or tuple(images.shape[2:]) != (s, s)
        ):
            raise ValueError(
                f"the teacher trains on (N, 1, {s}, {s}) images; got {tuple(images.shape)}"
            )
        if len(images) < self.config.batch_size:
            raise ValueError(
                f"{len(images)} images are fewer than one batch of {self.config.batch_size}"
            )

    def fit(self, images: torch.Tensor, *args, **kwargs):
        self.check_images(images)
        self.mean, self.std = float(images.mean()), float(images.std())
        return super().fit(images, *args, **kwargs)

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        self.encoder.train()
        self.projector.train()
        views = [(augment(batch) - self.mean) / self.std for _ in range(2)]
        a, b = (
            self.net("projector")(self.net("encoder")(v.expand(-1, 3, -1, -1)))
            for v in views
        )
        loss = nt_xent(a, b, self.config.temperature)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"nt_xent": loss.detach()}

    def teacher(self) -> FrozenTeacher:
        """The trained encoder, frozen, with its preprocessing (the training images' mean and std)."""
        import copy

        return ci_teacher(copy.deepcopy(self.encoder), self.config, self.mean, self.std)


def ci_teacher(
    encoder: torch.nn.Module, config: TeacherConfig, mean: float, std: float
) -> FrozenTeacher:
    """Wrap a contrastive encoder as a :class:`FrozenTeacher`; its name holds the weights' fingerprint,
    so a stage-2 head is resumed or reused only with the very same teacher."""
    return FrozenTeacher(
        encoder,
        image_size=config.image_size,
        mean=(mean,) * 3,
        std=(std,) * 3,
        name=f"contrastive ResNet {weights_fingerprint(encoder)[:12]}",
        provenance=f"SimCLR, {config.steps} steps on the training split only, no labels (medvae_stage2.TeacherConfig)",
    )
