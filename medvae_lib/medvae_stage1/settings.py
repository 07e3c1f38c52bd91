"""Chapter 2's settings: :data:`MODES` (the CI and full-mode values the notebook
reads), :class:`Stage1Config` and the configs built from a notebook's settings, and
the metadata that identifies an exported stage-1 model."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..data_prep import MODES as _data_modes
from ..losses import PERCEPTUAL_KINDS
from ..models import build_autoencoder, get_config, layout_fingerprint
from ..training import amp_dtype, check_types


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
    # mixed precision (medvae_lib.training.amp_dtype): "auto" is float16 autocast on a
    # GPU and float32 on a CPU; MedVAE's configurations train in float32
    amp: str = "auto"

    def __post_init__(self):
        check_types(self)
        get_config(self.model)  # raises on an unknown model name
        amp_dtype(self.amp, "cpu")  # raises on an unknown amp setting
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
        # Sized to a free Colab session (a T4, a few hours; see full_mode_cost):
        # 4,000 steps, the GAN from step 2,000. PAPER_SCALE holds the longer run.
        "steps": 4000,
        "batch_size": 16,
        "perceptual": "vgg",
        "kl_weight": 1e-6,
        "lr": 7.2e-5,
        "lr_d": 7.2e-5,  # MedVAE: base_learning_rate 4.5e-6 x batch size 16
        # taming's NLayerDiscriminator as MedVAE builds it: 64 channels, 3 layers.
        # MedVAE's 2D experiments: disc_start 3125, disc_weight 0.5, alternating updates.
        "adv_start": 2000,
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
        "amp": "auto",  # float16 autocast on a GPU (the papers: float32)
    },
}


# Full mode at the scale of MedVAE's schedule, for a GPU with more time than a free Colab
# session: pass it as the notebook's ``overrides`` (about 19 T4-hours, see
# ``python -m medvae_lib.full_mode_cost --chapter 02 --paper``).
PAPER_SCALE = {"steps": 20000, "adv_start": 3125}


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
        # logging and precision do not identify the model (an export made before the
        # amp setting existed is reused)
        **{
            k: str(v)
            for k, v in asdict(config).items()
            if k not in ("log_every", "amp")
        },
        "data": str(data.get("checksum")),
        "image_size": str(data.get("image_size")),
        "architecture": _layout(config.model, config.width),
    }
