"""MedVAE for volumes (chapter ``05_medvae_3d``): inflation from 2D, 3D stage-1 training, memory-bounded
inference of whole volumes, and latents for a 3D downstream task.

Read against MedVAE's code (StanfordMIMI/MedVAE: ``medvae/models/autoencoder_kl_3d.py``,
``medvae/losses/vae_losses.py``, ``medvae/utils/loaders.py``, ``medvae/medvae_main.py``,
``configs/experiment/medvae_4x_1c_3d_finetuning.yaml``):

* **Inflation.** MedVAE's 3D ``init_from_ckpt`` loads the 2D checkpoint into the 3D network: a weight
  whose 2D shape has one axis fewer than its 3D shape is placed in the **middle index of the last
  kernel axis**, zeros elsewhere (:func:`inflate_state_dict`); every other tensor (biases, group-norm
  scales, 1x1 convolutions that keep their shape) is copied. The 3D net then starts out as the 2D net
  applied to each slice across the last axis (axial slices of an RAS volume), except that its
  down-sampling also strides across slices (see :func:`inflate_autoencoder`).
* **3D training.** Random 64^3 patches (``load_mri_3d_finetune``: min-max scaled to [0, 1], then
  [-1, 1], padded with -1 to 64); the loss is latent diffusion's ``LPIPSWithDiscriminator`` with its
  2D LPIPS and 2D PatchGAN discriminator applied to **every slice along all three axes**
  (``discriminator_2d_nets_to_3d``), averaged (:class:`SliceWise`, :class:`SliceDiscriminator`).
  Settings: batch 4, Adam(0.5, 0.9), learning rate 4.5e-6 per volume of the batch, KL weight 1e-6,
  discriminator weight 0.5 from step 3125.
* **Intensities.** MRI: min-max per volume; CT: clipped to [-1000, 1000] HU, then scaled
  (``load_ct_3d``); both then to [-1, 1]; :func:`ct_to_unit`.
* **Inference.** ``MVAE._process_3d`` runs ``monai.inferers.sliding_window_inference`` with Gaussian
  blending, one window at a time, windows of at most 160 voxels a side (``roi_size_calc``).

Files (each imports only the ones above it in this list, never this package):

* ``settings.py``: :data:`MODES`, the CI and full-mode settings.
* ``volumes.py``: reading, checking and preparing volumes (:func:`load_brain_volume`,
  :func:`check_volume`, :func:`ct_to_unit`), random patches and test tiles.
* ``inflation.py``: :func:`inflate_state_dict`, :func:`inflate_autoencoder` and
  chapter 2's 2D model (:func:`chapter2_autoencoder`).
* ``trainer.py``: the slice-wise losses (:func:`axis_slices`, :class:`SliceWise`,
  :class:`SliceDiscriminator`), :class:`Stage1Config3D`, :class:`Stage1Trainer3D`
  and :func:`train_with_evaluation`.
* ``inference.py``: whole-volume encode and decode, in one pass or sliding
  (:func:`encode_sliding`, :func:`reconstruct_volume`), and :func:`peak_memory`.
* ``evaluation.py``: scores per tile and per volume, :func:`fold_table` and
  :func:`fold_verdict`.
* ``downstream.py``: the 3D downstream probe (:func:`downstream_comparison`).
* ``folds.py``: the leave-one-person-out folds (:func:`fold_data`,
  :func:`train_fold`, :func:`run_folds`) and :func:`settings_search`.
* ``figures.py``: :func:`plot_planes` and :func:`plot_fold_curves`.

``get_config`` (:mod:`medvae_lib.models`) and ``psnr`` (:mod:`medvae_lib.metrics`) are
re-exported here because the chapter and its tests reach them as ``medvae_3d.<name>``.
"""

from ..metrics import psnr
from ..models import get_config
from .downstream import (
    downstream_comparison,
    encode_volumes,
    multiclass_probe,
    shrink_volumes,
    timed_probe,
)
from .evaluation import fold_table, fold_verdict, tile_scores, volume_fidelity
from .figures import plot_fold_curves, plot_planes
from .folds import (
    fold_data,
    hold_out_slab,
    person_folds,
    resize_reconstruction,
    run_folds,
    score_fold,
    settings_search,
    train_fold,
)
from .inference import (
    decode_sliding,
    decode_whole,
    encode_sliding,
    encode_whole,
    fit_window,
    peak_memory,
    reconstruct_volume,
)
from .inflation import (
    chapter2_autoencoder,
    inflate_autoencoder,
    inflate_state_dict,
    twin_2d_model,
)
from .settings import MODES
from .trainer import (
    SliceDiscriminator,
    SliceWise,
    Stage1Config3D,
    Stage1Trainer3D,
    axis_slices,
    reconstruct_patches,
    stage1_3d_config,
    train_with_evaluation,
)
from .volumes import (
    BRAIN_MANIFEST,
    CONTRASTS,
    CT_WINDOW,
    background_value,
    check_volume,
    ct_to_unit,
    foreground,
    load_brain_set,
    load_brain_volume,
    orientation,
    pad_to_multiple,
    random_patches,
    read_nifti,
    tile_boxes,
    tiles,
)

__all__ = [
    "MODES",
    "BRAIN_MANIFEST",
    "CONTRASTS",
    "CT_WINDOW",
    "ct_to_unit",
    "read_nifti",
    "orientation",
    "check_volume",
    "pad_to_multiple",
    "background_value",
    "foreground",
    "load_brain_volume",
    "load_brain_set",
    "random_patches",
    "tile_boxes",
    "tiles",
    "inflate_state_dict",
    "twin_2d_model",
    "inflate_autoencoder",
    "chapter2_autoencoder",
    "axis_slices",
    "SliceWise",
    "SliceDiscriminator",
    "Stage1Config3D",
    "Stage1Trainer3D",
    "stage1_3d_config",
    "train_with_evaluation",
    "reconstruct_patches",
    "encode_whole",
    "decode_whole",
    "encode_sliding",
    "decode_sliding",
    "fit_window",
    "reconstruct_volume",
    "peak_memory",
    "tile_scores",
    "volume_fidelity",
    "fold_table",
    "fold_verdict",
    "encode_volumes",
    "timed_probe",
    "shrink_volumes",
    "downstream_comparison",
    "multiclass_probe",
    "person_folds",
    "hold_out_slab",
    "fold_data",
    "train_fold",
    "resize_reconstruction",
    "score_fold",
    "run_folds",
    "settings_search",
    "plot_planes",
    "plot_fold_curves",
    "get_config",
    "psnr",
]
