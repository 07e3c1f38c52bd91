"""Training one variant of the ablation: :class:`PUIRConfig`, the step of
:class:`PUIRTrainer` and :func:`train_variant` (one variant, one seed)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..training import CheckpointedTrainer, seed_everything
from .model import build_model
from .objectives import (
    consistency_loss,
    contrastive_loss,
    patch_drop,
    reconstruction_loss,
    rotate,
)
from .settings import CONTRASTS, VARIANTS


@dataclass
class PUIRConfig:
    variant: str = "full"
    steps: int = 120
    batch_size: int = 6
    seed: int = 0
    log_every: int = 20
    lr: float = 3e-3
    weight_decay: float = 1e-5
    fg_weight: float = 10.0
    consistency_weight: float = 1.0
    ssl_weight: float = 1.0
    temperature: float = 0.1
    patch: int = (
        0  # 3D: random cubic patch side; 0 = train on whole samples (2D slices)
    )
    amp: str = (
        "auto"  # mixed precision: float16 on a GPU (medvae_lib.training.amp_dtype)
    )
    settings: dict = field(default_factory=dict)


MODEL_SETTINGS = (
    "spatial_dims",
    "image_size",
    "backbone",
    "features",
    "feature_size",
    "prior_heads",
    "contrastive_dim",
    "skips",
)


def random_patches(batch: torch.Tensor, size: int) -> torch.Tensor:
    """One random cubic patch of side ``size`` per sample (same place in every channel)."""
    out = []
    for sample in batch:
        lo = [int(torch.randint(0, s - size + 1, ())) for s in sample.shape[1:]]
        out.append(sample[(slice(None), *(slice(a, a + size) for a in lo))])
    return torch.stack(out).float()


class PUIRTrainer(CheckpointedTrainer):
    """Trains one variant of the ablation. A step takes B samples, feeds each of the four contrasts
    (in a random order) through the network and adds the variant's losses."""

    name = "puir"

    def __init__(self, config: PUIRConfig, device="cpu"):
        super().__init__(config, device)
        torch.manual_seed(config.seed)
        self.model = build_model(config.settings, config.variant).to(self.device)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.parts = VARIANTS[config.variant]

    def modules(self):
        return {"model": self.model}

    def optimizers(self):
        return {"opt": self.opt}

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, float]:
        c = self.config
        if c.patch:
            batch = random_patches(batch, c.patch)
        images, mask = (
            batch[:, : len(CONTRASTS)].float(),
            batch[:, len(CONTRASTS) :].float(),
        )
        b, k = len(images), len(CONTRASTS)
        order = torch.randperm(k)
        # contrast-major: rows [j * B:(j + 1) * B] are contrast order[j] of the B
        # samples, repeated to 4 channels
        inputs = (
            images[:, order]
            .transpose(0, 1)
            .reshape(k * b, 1, *images.shape[2:])
            .repeat_interleave(k, 1)
        )
        targets, masks = (
            images.repeat(k, *[1] * (images.ndim - 1)),
            mask.repeat(k, *[1] * (mask.ndim - 1)),
        )
        net = self.net("model")
        logs = {}
        with self.autocast():  # float16 on a GPU (the amp setting), else float32
            if self.parts["ssl"]:
                turns = torch.randint(0, 4, (k * b,))
                rotated = rotate(inputs, turns)
                out = net(patch_drop(rotated))
                with torch.no_grad():
                    second = net(
                        patch_drop(rotate(rotated, torch.randint(0, 4, (k * b,))))
                    )["contrastive"]
                prediction = rotate(out["out"], (4 - turns) % 4)
                rot = F.cross_entropy(out["rotation"], turns.to(out["rotation"].device))
                con = contrastive_loss(out["contrastive"], second, c.temperature)
                ssl = rot + con
                logs.update(rotation=rot.item(), contrastive=con.item())
            else:
                out = net(inputs)
                prediction, ssl = out["out"], 0.0
            rec = reconstruction_loss(prediction, targets, masks, c.fg_weight)
            loss = rec + c.ssl_weight * ssl
            if self.parts["consistency"]:
                cons = consistency_loss(out["x_h"].reshape(k, b, *out["x_h"].shape[1:]))
                loss = loss + c.consistency_weight * cons
                logs["consistency"] = cons.item()
        self.opt.zero_grad(set_to_none=True)
        logs.update(self.backward_step(loss, "opt"))
        return {"loss": loss.item(), "reconstruction": rec.item(), **logs}


def train_variant(
    settings: dict,
    variant: str,
    seed: int,
    train_samples: torch.Tensor,
    device="cpu",
    verbose: bool = True,
    checkpoint_dir=None,
) -> PUIRTrainer:
    """Train one variant with one seed on the training samples (N, 5, ...) and return the trainer
    (``verbose=False``: no progress bar, no summary line). With ``checkpoint_dir`` it
    checkpoints there every ``settings["checkpoint_every"]`` steps and at the end, and
    resumes from a checkpoint it finds (full mode's runs take hours)."""
    seed_everything(seed)
    config = PUIRConfig(
        variant=variant,
        steps=settings["steps"],
        batch_size=settings["batch_size"],
        seed=seed,
        lr=settings["lr"],
        weight_decay=settings["weight_decay"],
        fg_weight=settings["fg_weight"],
        consistency_weight=settings["consistency_weight"],
        ssl_weight=settings["ssl_weight"],
        temperature=settings["temperature"],
        patch=settings["image_size"] if settings["spatial_dims"] == 3 else 0,
        amp=settings.get("amp", "auto"),
        # what builds the network: other settings (steps, seeds, workers, the data
        # folder) may change between a run and its resumption
        settings={
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in settings.items()
            if k in MODEL_SETTINGS
        },
    )
    trainer = PUIRTrainer(config, device)
    trainer.fit(
        train_samples,
        checkpoint_dir,
        settings.get("checkpoint_every", 0),
        data={"variant": variant},
        verbose=verbose,
    )
    trainer.model.eval()
    return trainer
