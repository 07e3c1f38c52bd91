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

Files (each imports only the ones above it in this list, never this package):

* ``settings.py``: :data:`MODES`, the CI and full-mode settings; :class:`Stage1Config`,
  :func:`stage1_config` and :func:`comparison_config`, which build it from a notebook's
  settings; :func:`export_metadata`, what identifies an exported stage-1 model.
* ``trainer.py``: :func:`to_model_range`, :func:`from_model_range`,
  :func:`init_discriminator_weights` and :class:`Stage1Trainer`.
* ``ablation.py``: :func:`adversarial_ablation` and :func:`seed_ablation`.
* ``evaluation.py``: :func:`resize_baseline`, :func:`fidelity`, :func:`add_sharpness`,
  the comparison over seeds (:func:`seed_fidelity`, :func:`seed_paired_table`), the
  published model (:func:`reconstruct_with`, :func:`published_beside`), and
  :func:`edge_energy`, :func:`worst_images` and :func:`latent_table`.
* ``figures.py``: :func:`plot_latents`, :func:`plot_architecture` and
  :func:`plot_reconstructions`.
"""

from .ablation import adversarial_ablation, seed_ablation
from .evaluation import (
    LOWER_IS_BETTER,
    add_sharpness,
    edge_energy,
    fidelity,
    latent_table,
    published_beside,
    reconstruct_with,
    resize_baseline,
    seed_fidelity,
    seed_paired_table,
    worst_images,
)
from .figures import plot_architecture, plot_latents, plot_reconstructions
from .settings import (
    MODES,
    Stage1Config,
    comparison_config,
    export_metadata,
    stage1_config,
)
from .trainer import (
    Stage1Trainer,
    from_model_range,
    init_discriminator_weights,
    to_model_range,
)

__all__ = [
    "MODES",
    "Stage1Config",
    "comparison_config",
    "stage1_config",
    "export_metadata",
    "to_model_range",
    "from_model_range",
    "init_discriminator_weights",
    "Stage1Trainer",
    "adversarial_ablation",
    "seed_ablation",
    "resize_baseline",
    "fidelity",
    "LOWER_IS_BETTER",
    "add_sharpness",
    "seed_fidelity",
    "seed_paired_table",
    "reconstruct_with",
    "published_beside",
    "edge_energy",
    "worst_images",
    "latent_table",
    "plot_latents",
    "plot_architecture",
    "plot_reconstructions",
]
