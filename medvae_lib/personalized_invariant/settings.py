"""The chapter's settings: the four contrasts, the variants of the ablation with their
labels, BraTS file suffixes and the CI / full ``MODES``."""

from __future__ import annotations

CONTRASTS = ("t1", "t1c", "t2", "flair")
# The four models of the ablation, each adding one part to the one before it.
# ``skips``: whether the decoder gets the encoder's skip connections; absent: the mode's ``skips``
# setting. "unet" is the released decoder (all skips) with the baseline's losses, kept for comparison.
VARIANTS = {
    "baseline": {"consistency": False, "prior": False, "ssl": False},
    "consistency": {"consistency": True, "prior": False, "ssl": False},
    "prior": {"consistency": True, "prior": True, "ssl": False},
    "full": {"consistency": True, "prior": True, "ssl": True},
    "unet": {"consistency": False, "prior": False, "ssl": False, "skips": True},
}
VARIANT_LABELS = {
    "baseline": "baseline (reconstruction)",
    "consistency": "+ individual constraint",
    "prior": "+ learnable prior",
    "full": "full (+ rotation, contrastive)",
    "unet": "baseline, U-Net skips (released)",
}
# BraTS 2023 file suffixes of the four contrasts (full mode reads a BraTS folder).
BRATS_SUFFIXES = {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f"}

MODES = {
    "ci": {
        "manifest": "brain_mri",
        "spatial_dims": 2,
        "backbone": "basicunet",
        "features": (8, 8, 16, 32, 64, 8),
        "feature_size": 12,
        "image_size": 48,  # 2D: slices of 192 x 192 mm pooled by 4 to 48 x 48 (4 mm pixels)
        "crop_mm": 192,
        "pool": 4,
        "slice_step": 4,  # every fourth axial slice (4 mm apart)
        "min_brain_fraction": 0.35,  # keep slices whose brain area is >= 35% of the subject's largest
        "window": (
            -3.0,
            5.0,
        ),  # z-scores (on the brain) mapped linearly to [0, 1], clipped
        "test_subjects": ("TCGA-FG-6692",),
        "folds": "leave_one_out",  # every person is the test person once
        "val_fraction": 0.2,
        "val_gap": 2,
        "skips": False,  # decoder without skip connections: it sees the image only through X_h
        "steps": 40,
        "batch_size": 4,
        "lr": 3e-3,
        "weight_decay": 1e-5,
        "fg_weight": 10.0,
        "consistency_weight": 1.0,
        "ssl_weight": 1.0,
        "prior_heads": 3,
        "contrastive_dim": 128,
        "temperature": 0.1,
        "ssim_kernel": 7,
        "seeds": (0, 1, 2),
        "variants": tuple(VARIANTS),
        "brats_folder": "",
        "n_train_subjects": 0,
        "n_test_subjects": 0,
        "volume_size": (),
        "threads": 1,  # torch threads per process: one is as fast as two for these small convolutions
        "workers": 2,  # processes training (fold, variant) jobs side by side: the 2 cores of CI
        "checkpoint_every": 0,  # runs of seconds: no checkpoints
    },
    "full": {
        "manifest": "brain_mri",
        "spatial_dims": 3,
        "backbone": "swinunetr",
        "features": (32, 32, 64, 128, 256, 32),
        "feature_size": 48,
        "image_size": 96,  # 3D: random 96^3 patches at 1 mm, as the released training script
        "crop_mm": 0,
        "pool": 1,
        "slice_step": 1,
        "min_brain_fraction": 0.0,
        "window": (-3.0, 5.0),
        "test_subjects": (),  # empty: hold out test_fraction of the BraTS patients
        "folds": "holdout",  # one split: test_fraction of the patients
        "skips": False,
        "test_fraction": 0.2,
        "val_fraction": 0.1,
        "val_gap": 0,
        # Sized to a free Colab session (a T4, a few hours; see full_mode_cost): 2,000
        # steps, two seeds; PAPER_SCALE runs longer. Batch 1: PUIR's scripts' batch_size.
        "steps": 2000,
        "batch_size": 1,
        "lr": 2e-4,
        "weight_decay": 1e-5,
        "fg_weight": 10.0,
        "consistency_weight": 1.0,
        "ssl_weight": 1.0,
        "prior_heads": 3,
        "contrastive_dim": 512,
        "temperature": 0.1,
        "ssim_kernel": 11,
        "seeds": (0, 1),
        "variants": tuple(VARIANTS),
        "brats_folder": "",  # a folder of BraTS 2023 GLI subjects (see download_brats); "" = the local files
        "n_train_subjects": 80,  # training people held in memory (cropped to volume_size, float16): RAM, not the method, sets this
        "n_test_subjects": 40,  # test people scored (sliding-window synthesis of 16 pairs each)
        "volume_size": (
            160,
            192,
            160,
        ),  # every brain cropped / padded to this box (BraTS brains fit)
        "threads": 0,  # 0: leave torch's default
        "workers": 1,
        "checkpoint_every": 500,  # every run, into runs/07_personalized_invariant/full/
        "amp": "auto",  # float16 autocast on a GPU (PUIR's scripts: --noamp)
    },
}


# Full mode with more steps and seeds, for a GPU with more time than a free Colab
# session: pass it as the notebook's ``overrides``.
PAPER_SCALE = {"steps": 5000, "seeds": (0, 1, 2)}
