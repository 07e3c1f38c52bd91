"""Chapter 3's settings: :data:`MODES`, the CI and full-mode values the notebook reads
(stage 1 comes with chapter 2's settings, ``medvae_stage1.MODES``)."""

from __future__ import annotations

from ..data_prep import MODES as _data_modes
from ..teachers import BIOMEDCLIP
from .objective import LATENT_SCALE

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
