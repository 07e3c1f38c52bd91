"""MedVAE stage 2: align the latent with a frozen medical image encoder (chapter
``03_medvae_stage2``).

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

Files (each imports only the ones above it in this list, never this package):

* ``objective.py``: :data:`LATENT_SCALE`, :func:`render_latent`,
  :func:`teacher_distance` and :func:`embed`.
* ``latents.py``: :func:`weights_fingerprint` and the frozen stage-1 model's latents and
  reconstructions (:func:`stage1_latents`, :func:`reconstruct`, :func:`project`).
* ``settings.py``: :data:`MODES`, the CI and full-mode settings.
* ``trainer.py``: :class:`Stage2Config` and :class:`Stage2Trainer`.
* ``contrastive.py``: the CI-mode teacher (:func:`augment`, :func:`nt_xent`,
  :class:`TeacherConfig`, :class:`ContrastiveTeacherTrainer`, :func:`ci_teacher`).
* ``exports.py``: exported weights reused when their metadata match, else trained
  (:func:`stage1_autoencoder`, :func:`contrastive_teacher`, :func:`stage2_head`, their
  ``*_metadata`` and ``_matching_export``).
* ``chapter.py``: :func:`stage2_config`, :func:`teacher_config` and
  :func:`chapter_models`.
* ``figures.py``: :func:`plot_rendered_latents`.
* ``cli.py``: :func:`main`, run by ``python -m medvae_lib.medvae_stage2``
  (``__main__.py``).

``ProjectionHead`` (:mod:`medvae_lib.models`) is re-exported here because tests reach it
as ``medvae_stage2.ProjectionHead``.
"""

from ..models import ProjectionHead
from .chapter import chapter_models, stage2_config, teacher_config
from .cli import main
from .contrastive import (
    ContrastiveTeacherTrainer,
    TeacherConfig,
    augment,
    ci_teacher,
    nt_xent,
)
from .exports import (
    _matching_export,
    _metadata,
    contrastive_teacher,
    head_metadata,
    stage1_autoencoder,
    stage2_head,
    teacher_metadata,
)
from .figures import plot_rendered_latents
from .latents import project, reconstruct, stage1_latents, weights_fingerprint
from .objective import LATENT_SCALE, embed, render_latent, teacher_distance
from .settings import MODES
from .trainer import Stage2Config, Stage2Trainer

__all__ = [
    "LATENT_SCALE",
    "render_latent",
    "teacher_distance",
    "embed",
    "weights_fingerprint",
    "stage1_latents",
    "reconstruct",
    "project",
    "MODES",
    "Stage2Config",
    "Stage2Trainer",
    "augment",
    "nt_xent",
    "TeacherConfig",
    "ContrastiveTeacherTrainer",
    "ci_teacher",
    "stage1_autoencoder",
    "teacher_metadata",
    "contrastive_teacher",
    "head_metadata",
    "stage2_head",
    "stage2_config",
    "teacher_config",
    "chapter_models",
    "plot_rendered_latents",
    "main",
    "ProjectionHead",
    "_matching_export",
    "_metadata",
]
