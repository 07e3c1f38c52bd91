"""MedVAE stage 2: align the latent with a frozen medical image encoder (chapter ``03_medvae_stage2``).

Read against MedVAE's code (``medvae/models/autoencoder_kl.py``, ``medvae/medvae_finetune_s2.py``,
``medvae/utils/vae/train_components_stage2.py`` and ``BiomedClipLoss`` in ``medvae/losses/vae_losses.py``):

* the stage-1 encoder, decoder and the 1x1 convolutions around the latent are frozen; only a small head
  is trained: ``latent = channel_proj(channel_ds(z) + z)``, where ``channel_ds`` is
  1x1 conv (C -> 64), ReLU, 3x3 conv (64 -> 64), ReLU, 1x1 conv (64 -> C) and ``channel_proj`` a 1x1
  conv (C -> C) (:class:`ProjectionHead`);
* ``z`` is a *sample* of the stage-1 posterior during training;
* the loss is the only one of stage 2: the squared L2 distance between the frozen teacher's embedding of
  the image and of the latent *rendered as an image* (divided by 4.6, averaged over its channels,
  tiled to three channels, resized to the teacher's input size and normalised), summed over the
  embedding and divided by the batch size (:func:`render_latent`, :meth:`Stage2Trainer.train_step`);
* Adam with betas (0.5, 0.9), learning rate 1e-4 per image of the batch (4e-4 at batch 4).

The decoder still decodes ``z``, not the head's output: stage 2 changes the latent a downstream model
reads, never the reconstructions.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data_prep import MODES as _data_modes
from .medvae_stage1 import export_metadata
from .models import ProjectionHead, build_autoencoder, get_config
from .teachers import BIOMEDCLIP, FrozenTeacher
from .training import CheckpointedTrainer, check_types, world

LATENT_SCALE = (
    4.6  # MedVAE's BiomedClipLoss divides the latent by 4.6 before rendering it
)


def render_latent(latent: torch.Tensor, scale: float = LATENT_SCALE) -> torch.Tensor:
    """A latent as the one-channel image the teacher sees: divided by ``scale`` and
    averaged over its channels, as MedVAE's ``BiomedClipLoss`` does (the teacher then
    tiles, resizes and normalises it). The values are not clipped to [0, 1]: a latent is
    not an image, and clipping would stop gradients."""
    if latent.ndim != 4:
        raise ValueError(
            f"render_latent takes (N, C, H, W) 2D latents; got {tuple(latent.shape)}"
        )
    return (latent / scale).mean(1, keepdim=True)


def teacher_distance(
    teacher: FrozenTeacher,
    images: torch.Tensor,
    latents: torch.Tensor,
    batch_size: int = 128,
):
    """Per image, the squared L2 distance between the teacher's embedding of the image (in [0, 1]) and of
    the rendered latent: stage 2's loss, image by image."""
    if len(images) != len(latents):
        raise ValueError(f"{len(images)} images but {len(latents)} latents")
    out = []
    device = next(teacher.parameters()).device
    with torch.no_grad():
        for x, z in zip(
            images.split(batch_size), latents.split(batch_size), strict=True
        ):
            x, z = x.to(device), z.to(device)
            out.append(((teacher(x) - teacher(render_latent(z))) ** 2).sum(1).cpu())
    return torch.cat(out)


@torch.no_grad()
def embed(
    teacher: FrozenTeacher, images: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """The teacher's embeddings of ``images`` (in [0, 1]), batch by batch, on the CPU."""
    device = next(teacher.parameters()).device
    return torch.cat([teacher(x.to(device)).cpu() for x in images.split(batch_size)])


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, shapes and values): which stage-1 model a head belongs to."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        value = value.detach().cpu().contiguous()
        h.update(f"{name} {tuple(value.shape)} {value.dtype}".encode())
        h.update(
            value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b""
        )
    return h.hexdigest()


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


@torch.no_grad()
def stage1_latents(
    autoencoder: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 128,
    device="cpu",
):
    """Posterior means of images in [0, 1] (the stage-1 latent)."""
    autoencoder.eval()
    out = [
        autoencoder.encode(x.to(device) * 2.0 - 1.0)[0].cpu()
        for x in images.split(batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def reconstruct(
    autoencoder: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 128,
    device="cpu",
):
    """Reconstructions in [0, 1] from the posterior mean: ``decode(mu)``, as in both stages (stage 2's
    head never feeds the decoder)."""
    mus = stage1_latents(autoencoder, images, batch_size, device)
    return torch.cat(
        [
            ((autoencoder.decode(m.to(device)) + 1) / 2).clamp(0, 1).cpu()
            for m in mus.split(batch_size)
        ]
    )


@torch.no_grad()
def project(
    autoencoder,
    head: ProjectionHead,
    images: torch.Tensor,
    batch_size: int = 128,
    device="cpu",
):
    """Stage-2 latents: ``head(posterior mean)``."""
    head.eval()
    mus = stage1_latents(autoencoder, images, batch_size, device)
    return torch.cat([head(m.to(device)).cpu() for m in mus.split(batch_size)])


# -- the CI-mode teacher: a small contrastive image encoder trained by the book ---------------------


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
        from .models import build_classifier

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


# -- where the chapters' models come from: exported weights when present and matching, else training --


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _matching_export(paths, expected: dict[str, str]) -> tuple[Path | None, str]:
    """The first of ``paths`` whose safetensors metadata hold ``expected``; else None and why not."""
    reasons = []
    for path in map(Path, paths):
        if not path.is_file():
            reasons.append(f"no {path}")
            continue
        meta = _metadata(path)
        differ = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
        if not differ:
            return path, f"loaded {path}"
        reasons.append(f"{path} was made with other settings (saved, wanted): {differ}")
    return None, "; ".join(reasons)


def stage1_autoencoder(
    config,
    mode: str,
    images: torch.Tensor,
    data: dict,
    device="cpu",
    checkpoint_every: int = 0,
    overwrite: bool = False,
):
    """Chapter 2's stage-1 model: loaded from chapter 2's export (``runs/02_medvae_stage1/<mode>/<model>/``)
    or this chapter's own when its metadata match ``config`` and the data, else trained here through
    :class:`~medvae_lib.medvae_stage1.Stage1Trainer` on ``images`` and exported for the next run (a
    checkpoint of other settings in this chapter's folder is replaced only with ``overwrite=True``).
    Returns the autoencoder and a sentence saying which happened."""
    from .medvae_stage1 import Stage1Trainer
    from .training import export_weights, load_weights, run_dir

    expected = export_metadata(config, mode, data)
    name = f"{config.model}.safetensors"
    own = run_dir("03_medvae_stage2", mode, config.model) / "stage1"
    path, why = _matching_export(
        [run_dir("02_medvae_stage1", mode, config.model) / name, own / name], expected
    )
    if path is not None:
        return load_weights(
            path, build_autoencoder(config.model, width=config.width)
        ).to(device), why
    trainer = Stage1Trainer(config, device)
    trainer.fit(
        images, own, checkpoint_every, resume=True, data=data, overwrite=overwrite
    )
    if world()[0] == 0:  # under torchrun, one process writes
        export_weights(own / name, trainer.autoencoder, expected)
    return trainer.autoencoder, f"trained stage 1 here ({why})"


def teacher_metadata(
    config: TeacherConfig, mode: str, data: dict, mean: float, std: float
) -> dict[str, str]:
    return {
        "teacher": "contrastive",
        "mode": mode,
        **{k: str(v) for k, v in vars(config).items()},
        "data": str(data.get("checksum")),
        "mean": repr(mean),
        "std": repr(std),
    }


def contrastive_teacher(
    config: TeacherConfig, mode: str, images: torch.Tensor, data: dict, device="cpu"
):
    """CI mode's teacher: loaded from ``runs/03_medvae_stage2/<mode>/teacher.safetensors`` when it was
    trained with ``config`` on the same training images, else trained here on ``images`` (the training
    split only) and exported. Returns the :class:`FrozenTeacher` and a sentence saying which happened."""
    from .models import build_classifier
    from .training import export_weights, load_weights, run_dir

    mean, std = float(images.mean()), float(images.std())
    expected = teacher_metadata(config, mode, data, mean, std)
    path = run_dir("03_medvae_stage2", mode) / "teacher.safetensors"
    found, why = _matching_export([path], expected)
    if found is not None:
        encoder = load_weights(
            found,
            build_classifier(
                3,
                width=config.width,
                num_classes=config.embed_dim,
                stem_stride=config.stem_stride,
            ),
        )
        return ci_teacher(encoder, config, mean, std).to(device), why
    if world()[1] > 1:
        raise RuntimeError(
            f"the CI teacher is trained in one process (its contrastive loss needs the whole batch), not under "
            f"torchrun: run chapter 3 once first ({why})"
        )
    trainer = ContrastiveTeacherTrainer(config, device)
    trainer.fit(images, data=data)
    if world()[0] == 0:  # under torchrun, one process writes
        export_weights(path, trainer.encoder, expected)
    return trainer.teacher(), f"trained the teacher here ({why})"


def head_metadata(config: Stage2Config, mode: str, data: dict) -> dict[str, str]:
    return {
        "stage": "2",
        "mode": mode,
        **{k: str(v) for k, v in vars(config).items()},
        "data": str(data.get("checksum")),
    }


def stage2_head(
    config: Stage2Config,
    mode: str,
    autoencoder,
    teacher,
    images,
    data,
    device="cpu",
    **fit_kwargs,
):
    """Chapter 3's head: loaded from ``runs/03_medvae_stage2/<mode>/<model>/head.safetensors`` when it was
    trained with ``config`` (which names the stage-1 weights and the teacher) on the same data, else
    trained here; ``fit_kwargs`` go to :meth:`~medvae_lib.training.CheckpointedTrainer.fit`, so, as for
    every trainer of the book, a checkpoint made with other settings is replaced only with
    ``overwrite=True``. Returns the trainer (its ``history`` is empty when loaded) and a sentence."""
    from .training import export_weights, load_weights, run_dir

    trainer = Stage2Trainer(config, autoencoder, teacher, device)
    folder = run_dir("03_medvae_stage2", mode, config.model)
    expected = head_metadata(config, mode, data)
    found, why = _matching_export([folder / "head.safetensors"], expected)
    if found is not None:
        load_weights(found, trainer.head)
        return trainer, why
    trainer.fit(images, folder / "head", data=data, **fit_kwargs)
    if world()[0] == 0:  # under torchrun, one process writes
        export_weights(folder / "head.safetensors", trainer.head, expected)
    return trainer, f"trained the head here ({why})"


def stage2_config(
    settings: dict, seed: int, autoencoder, teacher: FrozenTeacher
) -> Stage2Config:
    """The Stage2Config for a notebook's settings, naming the stage-1 weights and the teacher it uses."""
    fields = Stage2Config.__dataclass_fields__
    chosen = {
        k: v
        for k, v in settings.items()
        if k in fields and k not in ("teacher", "stage1")
    }
    return Stage2Config(
        seed=seed,
        teacher=teacher.name,
        stage1=weights_fingerprint(autoencoder),
        **chosen,
    )


def teacher_config(settings: dict, seed: int) -> TeacherConfig:
    """The CI teacher's TeacherConfig from a notebook's ``teacher_*`` settings."""
    fields = TeacherConfig.__dataclass_fields__
    chosen = {
        k.removeprefix("teacher_"): v
        for k, v in settings.items()
        if k.startswith("teacher_")
    }
    return TeacherConfig(
        seed=seed,
        image_size=settings["image_size"],
        **{k: v for k, v in chosen.items() if k in fields},
    )


# Settings for the two ways chapter 3 runs; stage 1 comes with chapter 2's settings (medvae_stage1.MODES).
MODES = {
    "ci": {
        **_data_modes["ci"],
        "model": "medvae_4_1_2d",
        "width": 16,
        # The teacher: BiomedCLIP cannot be downloaded in CI, so a small contrastive encoder trained here.
        "teacher": "contrastive",
        "teacher_width": 16,
        "teacher_embed_dim": 64,
        "teacher_steps": 300,
        "teacher_batch_size": 128,
        "teacher_lr": 1e-3,
        "teacher_temperature": 0.2,
        # MedVAE's rule: learning rate 1e-4 per image of the batch.
        "steps": 400,
        "batch_size": 16,
        "lr": 1.6e-3,
        "hidden": 64,
        "latent_scale": LATENT_SCALE,
        "sample_posterior": True,
        "ms_ssim_kernel": 7,
        "checkpoint_every": 0,
        "resume": False,
    },
    "full": {
        **_data_modes["full"],
        "model": "medvae_4_1_2d",
        "width": "full",
        "teacher": BIOMEDCLIP,
        # MedVAE's stage-2 run: batch 4, learning rate 4e-4 (100 epochs of its own data).
        "steps": 20000,
        "batch_size": 4,
        "lr": 4e-4,
        "hidden": 64,
        "latent_scale": LATENT_SCALE,
        "sample_posterior": True,
        "ms_ssim_kernel": 11,
        "checkpoint_every": 1000,
        "resume": True,
    },
}


def plot_rendered_latents(
    images,
    teacher: FrozenTeacher,
    latents: dict,
    index,
    titles=None,
    scale=LATENT_SCALE,
):
    """For the images at ``index``: the image as the teacher sees it (after its resize), then each
    latent of ``latents`` (``{name: (N, C, h, w)}``) rendered as the teacher sees it. Every panel shows
    the teacher's input before normalisation, each on its own grey scale."""
    import matplotlib.pyplot as plt

    index = torch.as_tensor(index)
    rows = {"image": images[index]} | {
        name: render_latent(z[index], scale) for name, z in latents.items()
    }
    fig, axes = plt.subplots(
        len(rows),
        len(index),
        figsize=(1.7 * len(index), 1.7 * len(rows)),
        squeeze=False,
    )
    size = teacher.image_size
    for r, (name, x) in enumerate(rows.items()):
        shown = F.interpolate(
            x.float(), size=(size, size), mode="bicubic", align_corners=False
        )
        for j in range(len(index)):
            axes[r, j].imshow(shown[j, 0], cmap="gray")
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
            if r == 0 and titles is not None:
                axes[r, j].set_title(titles[j], fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return fig


def chapter_models(
    stage1,
    settings: dict,
    mode: str,
    seed: int,
    train_x,
    data: dict,
    device="cpu",
    require_stage1: bool = False,
    **fit_kwargs,
):
    """Chapter 3's three models for chapter 4 and the command line: the stage-1 autoencoder
    (:func:`stage1_autoencoder`), the teacher (BiomedCLIP through open_clip, or the CI teacher of
    :func:`contrastive_teacher`) and the stage-2 trainer (:func:`stage2_head`), each loaded when an
    export matches and trained otherwise. Returns them and a sentence for each saying which happened.
    With ``require_stage1`` a missing stage-1 export is an error instead of a training run."""
    from .teachers import load_open_clip_teacher
    from .training import run_dir

    if require_stage1:
        name = f"{stage1.model}.safetensors"
        found, why = _matching_export(
            [
                run_dir("02_medvae_stage1", mode, stage1.model) / name,
                run_dir("03_medvae_stage2", mode, stage1.model) / "stage1" / name,
            ],
            export_metadata(stage1, mode, data),
        )
        if found is None:
            raise FileNotFoundError(
                f"no stage-1 weights to start from ({why}); run chapter 2 (or chapter 3) first"
            )
    notes = {}
    overwrite = fit_kwargs.get("overwrite", False)
    autoencoder, notes["stage 1"] = stage1_autoencoder(
        stage1, mode, train_x, data, device, overwrite=overwrite
    )
    if settings["teacher"] == "contrastive":
        teacher, notes["teacher"] = contrastive_teacher(
            teacher_config(settings, seed), mode, train_x, data, device
        )
    else:
        teacher, notes["teacher"] = (
            load_open_clip_teacher(settings["teacher"], device),
            f"loaded {settings['teacher']}",
        )
    config = stage2_config(settings, seed, autoencoder, teacher)
    trainer, notes["stage 2"] = stage2_head(
        config, mode, autoencoder, teacher, train_x, data, device, **fit_kwargs
    )
    return autoencoder, teacher, trainer, notes


def main(argv=None) -> None:
    """Train the stage-2 head from a terminal, on one or several GPUs (``torchrun``)::

        python -m medvae_lib.medvae_stage2 --mode full
        torchrun --nproc_per_node 4 -m medvae_lib.medvae_stage2 --mode full

    It needs chapter 2's exported stage-1 weights (run chapter 2 first) and, in CI mode, chapter 3's
    teacher; it writes the head where chapter 3 looks for it, so the notebook then loads it.
    """
    import argparse

    from . import data_prep, medvae_stage1
    from .training import init_distributed, seed_everything, settings_for

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps", type=int, default=None, help="override the mode's number of steps"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a checkpoint made with other settings",
    )
    args = parser.parse_args(argv)

    device = init_distributed()
    seed_everything(args.seed)
    settings = settings_for(
        MODES, args.mode, {"steps": args.steps} if args.steps else None
    )
    prepared = data_prep.prepare_splits(
        "pneumoniamnist", settings["data_key"], settings["image_size"], seed=args.seed
    )
    data = data_prep.data_identity(
        "pneumoniamnist", settings["data_key"], settings["image_size"]
    )
    stage1 = medvae_stage1.stage1_config(
        settings_for(medvae_stage1.MODES, args.mode), args.seed
    )
    *_, notes = chapter_models(
        stage1,
        settings,
        args.mode,
        args.seed,
        prepared["train"][0],
        data,
        device,
        require_stage1=True,
        checkpoint_every=settings["checkpoint_every"],
        resume=True,
        overwrite=args.overwrite,
    )
    if world()[0] == 0:
        print("\n".join(f"{part}: {how}" for part, how in notes.items()))


if __name__ == "__main__":
    main()
