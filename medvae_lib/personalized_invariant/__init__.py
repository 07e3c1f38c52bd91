"""Chapter 7: a personalised invariant representation X_h learned from co-registered
brain MRI contrasts (Tan et al., ICCV 2025, "PUIR"; code:
github.com/zhaorui-tan/PUIR_ICCV25).

Every contrast of one person (T1, T1 with contrast, T2, FLAIR) is treated as a view of
one representation X_h. A network gets *one* contrast and reconstructs *all four*; its
bottleneck features, fused with a learnable prior they attend to, are X_h. Training
adds, per the released code:

* a foreground-weighted MSE reconstruction of all contrasts (:func:`reconstruction_loss`);
* an individual-level constraint: the X_h of each contrast of a person is pulled towards
  a running mean of the X_h of that person's contrasts seen before it
  (:func:`consistency_loss`);
* a learnable biological prior, an ``nn.Parameter`` the bottleneck features attend to
  (:class:`PriorFusion`);
* rotation prediction and contrastive self-supervision on X_h (:func:`ssl_losses`).

CI mode works on 2D axial slices (4 mm pixels, 48 x 48) with a small MONAI
``BasicUNet``; full mode on 3D 96^3 patches with MONAI's ``SwinUNETR`` at the paper's
size. Scores are MONAI PSNR and SSIM computed on the brain mask only
(:func:`masked_psnr`, :func:`masked_ssim`).

The package re-exports every public name, so ``personalized_invariant.name`` works as
before. Which file holds what (each imports only the files listed above it):

* ``settings.py``: ``CONTRASTS``, ``VARIANTS``, ``VARIANT_LABELS``, ``BRATS_SUFFIXES``
  and the CI / full ``MODES``.
* ``volumes.py``: the subjects of a manifest or a BraTS folder, the BraTS download,
  :func:`load_subject` (one person's four contrasts, checked), :func:`normalise` and
  the axial slices of CI mode.
* ``splits.py``: :class:`SubjectData`, patients and the train / val / test split
  (:func:`prepare_data`), the folds (:func:`leave_one_out`), stacking and cropping
  samples.
* ``model.py``: :class:`PriorFusion`, :class:`PUIRNet` and :func:`build_model`.
* ``objectives.py``: the reconstruction, consistency and self-supervised losses.
* ``trainer.py``: :class:`PUIRConfig`, :class:`PUIRTrainer` and :func:`train_variant`.
* ``synthesis.py``: brain-mask PSNR / SSIM, the synthesis of every source -> target
  pair and its scores, the released protocol's scores, the constant-image control.
* ``representation.py``: X_h zeroed or swapped, embeddings, their agreement within and
  between people, PCA, and the pooled-pixel / brain-mask control "encoders".
* ``runs.py``: training and scoring every variant and seed on the folds
  (:func:`run_fold`, :func:`run_folds`) and :func:`chapter_fold`.
* ``tables.py``: tables of one fold (source -> target matrix, splits, split means).
* ``fold_stats.py``: statistics over the folds (item scores, comparisons with 95%
  intervals) and the comparison, verdict, gap and summary tables.
* ``figures.py``: :func:`plot_synthesis` and :func:`plot_embedding`.
"""

from __future__ import annotations

from .figures import plot_embedding, plot_synthesis
from .fold_stats import (
    compare,
    comparison_table,
    fold_summary,
    gap_table,
    gap_values,
    item_scores,
    test_patients,
    test_people,
    verdict_table,
)
from .model import PriorFusion, PUIRNet, build_model
from .objectives import (
    consistency_loss,
    contrastive_loss,
    patch_drop,
    reconstruction_loss,
    rotate,
)
from .representation import (
    control_embeddings,
    embeddings,
    pca_2d,
    same_height,
    synthesise_with_x_h,
    x_h_dependence,
    xh_agreement,
)
from .runs import chapter_fold, run_fold, run_folds
from .settings import BRATS_SUFFIXES, CONTRASTS, MODES, VARIANT_LABELS, VARIANTS
from .splits import (
    SubjectData,
    by_patient,
    central_patch,
    leave_one_out,
    load_person,
    patient_of,
    prepare_data,
    split_slices,
    split_subjects,
    stack_samples,
)
from .synthesis import (
    constant_prediction,
    masked_psnr,
    masked_ssim,
    off_diagonal_mean,
    paper_protocol_scores,
    scores_of,
    synthesis_scores,
    synthesise,
)
from .tables import matrix_table, split_means, split_table
from .trainer import PUIRConfig, PUIRTrainer, random_patches, train_variant
from .volumes import (
    GRID_TOLERANCE_MM,
    axial_slices,
    brats_subjects,
    clipped_fraction,
    download_brats,
    load_subject,
    manifest_subjects,
    normalise,
    unpack_brats,
)

__all__ = [
    "BRATS_SUFFIXES",
    "CONTRASTS",
    "GRID_TOLERANCE_MM",
    "MODES",
    "VARIANTS",
    "VARIANT_LABELS",
    "PUIRConfig",
    "PUIRNet",
    "PUIRTrainer",
    "PriorFusion",
    "SubjectData",
    "axial_slices",
    "brats_subjects",
    "build_model",
    "by_patient",
    "central_patch",
    "chapter_fold",
    "clipped_fraction",
    "compare",
    "comparison_table",
    "consistency_loss",
    "constant_prediction",
    "contrastive_loss",
    "control_embeddings",
    "download_brats",
    "embeddings",
    "fold_summary",
    "gap_table",
    "gap_values",
    "item_scores",
    "test_patients",
    "test_people",
    "leave_one_out",
    "load_person",
    "load_subject",
    "manifest_subjects",
    "masked_psnr",
    "masked_ssim",
    "matrix_table",
    "normalise",
    "off_diagonal_mean",
    "paper_protocol_scores",
    "patch_drop",
    "patient_of",
    "pca_2d",
    "plot_embedding",
    "plot_synthesis",
    "prepare_data",
    "random_patches",
    "reconstruction_loss",
    "rotate",
    "run_fold",
    "run_folds",
    "same_height",
    "scores_of",
    "split_means",
    "split_slices",
    "split_subjects",
    "split_table",
    "stack_samples",
    "synthesis_scores",
    "synthesise",
    "synthesise_with_x_h",
    "train_variant",
    "unpack_brats",
    "verdict_table",
    "x_h_dependence",
    "xh_agreement",
]
