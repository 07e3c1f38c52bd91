"""Chapter 8: eight image-text contrastive objectives in one harness, on real medical
pairs (MedPix 2.0).

After Roy et al. (2024), "Benchmarking Vision-Language Contrastive Methods for Medical
Representation Learning" (arXiv 2406.07450; code: VectorInstitute/mmlearn,
projects/med_benchmarking). Every method gets the same image encoder, the same frozen
text encoder (all-MiniLM-L6-v2) with the same trainable text head, the same data,
augmentations, optimiser, steps and batch; only the objective, and the extra heads it
needs, differ. Evaluation: zero-shot classification with prompt templates, linear probes
(scikit-learn), image-to-text and text-to-image recall@k against the whole test gallery,
and VQA with a small answer classifier on frozen embeddings. Every score is kept per
test item, so tables carry bootstrap intervals and comparisons are paired.

Command line (a progress bar over the runs; the CSV has one row per method, seed,
initialisation and task)::

    python -m medvae_lib.contrastive_benchmark --methods clip siglip --seeds 0 1 \\
        --out results.csv
    python -m medvae_lib.contrastive_benchmark --mode full --download \\
        --image-init biomedclip --methods clip --out r.csv

The package re-exports every name below; the files, each importing only those above it:

- ``settings.py``: ``MODES``, ``METHODS``, the zero-shot, external and grouped tasks
  (``ZERO_SHOT_TASKS``, ``EXTERNAL_TASKS``, ``TASK_GROUPS``), the model ids and
  MiniLM's checksum, :class:`BenchmarkError`.
- ``datasets.py``: MedPix 2.0 (:func:`load_medpix2`, masking, resizing, the case-split
  check), the MedMNIST sets (:func:`load_external`), the public pair sets (PMC-OA,
  ROCO).
- ``text_encoder.py``: the verified MiniLM folder, :class:`TextFeatures`,
  :func:`encode_texts` and the safetensors cache (:func:`cached_text_features`).
- ``objectives.py``: :func:`clip_loss`, :func:`siglip_loss`, :func:`cyclip_loss`,
  :func:`dcl_loss`, :func:`nt_xent`, :func:`filip_loss`, GLoRIA's local loss, the
  learnable logit scale.
- ``models.py``: :class:`ImageEncoder`, :class:`PretrainedImageEncoder`,
  :class:`DualEncoder` (whose ``loss`` applies each method's objective).
- ``training.py``: :func:`augment`, :func:`run_device`, :func:`amp_dtype`,
  :func:`train_method`.
- ``metrics.py``: per-item scores: zero-shot prediction, :func:`recall_at_k` and its
  chance level, the linear probe, the VQA classifier.
- ``bench.py``: :class:`Bench` and :func:`build_bench` (data and cached text features).
- ``evaluation.py``: :func:`evaluate`, :func:`vqa_tasks`, :func:`item_clusters`,
  :func:`chance_levels`.
- ``runs.py``: :class:`RunRecord` and :func:`run_benchmark`.
- ``tables.py``: :func:`seed_scores`, :func:`results_table`, :func:`wide_table`, the
  chance tables, :func:`to_frame`.
- ``comparisons.py``: :func:`paired_differences`, :func:`overall_difference`,
  :func:`answer_questions` and its table and sentences, :func:`plot_differences`.
- ``cli.py``: :func:`main`, the command line (``__main__.py`` runs it).
"""

from medvae_lib import data as mdata  # chapter 8 reads manifests as ``cb.mdata``
from medvae_lib.teachers import BIOMEDCLIP

from .bench import Bench, build_bench, prompt_texts
from .cli import main
from .comparisons import (
    answer_questions,
    answer_sentences,
    compare_with_paper,
    overall_difference,
    paired_differences,
    plot_differences,
    questions_frame,
)
from .datasets import (
    PLACEHOLDER_CAPTION,
    MedPixData,
    check_case_split,
    confined_path,
    download_pair_set,
    load_external,
    load_medpix2,
    load_pair_table,
    mask_burned_in_text,
    medpix2_folder,
    normalise_case_uid,
    pair_images,
    square_resize,
)
from .evaluation import (
    chance_levels,
    embed_images,
    embed_texts,
    evaluate,
    item_clusters,
    vqa_answers,
    vqa_tasks,
)
from .metrics import (
    class_embeddings,
    linear_probe,
    recall_at_k,
    retrieval_chance,
    vqa_scores,
    zero_shot_predict,
)
from .models import (
    DualEncoder,
    ImageEncoder,
    PretrainedImageEncoder,
    check_method,
    image_encoder,
)
from .objectives import (
    LearnableLogitScale,
    clip_loss,
    cyclip_loss,
    dcl_loss,
    filip_loss,
    gloria_local_loss,
    gloria_scores,
    nt_xent,
    siglip_loss,
)
from .runs import RunRecord, image_init_label, run_benchmark
from .settings import (
    EXTERNAL_TASKS,
    GENERAL_CLIP,
    METHODS,
    MINILM_FILES,
    MINILM_HUB_ID,
    MINILM_SHA256,
    MODES,
    TASK_GROUPS,
    ZERO_SHOT_TASKS,
    BenchmarkError,
    ExternalTask,
)
from .tables import (
    RunKey,
    chance_table,
    results_table,
    run_label,
    seed_mean_scores,
    seed_scores,
    tasks_above_chance,
    to_frame,
    wide_table,
)
from .text_encoder import (
    TextFeatures,
    cached_text_features,
    encode_texts,
    minilm_dir,
    read_text_cache,
    verify_minilm_dir,
    write_text_cache,
)
from .training import TrainResult, amp_dtype, augment, run_device, train_method

__all__ = [
    # medvae_lib.teachers and medvae_lib.data, as the single module had them
    "BIOMEDCLIP",
    "mdata",
    # settings.py
    "EXTERNAL_TASKS",
    "GENERAL_CLIP",
    "METHODS",
    "MINILM_FILES",
    "MINILM_HUB_ID",
    "MINILM_SHA256",
    "MODES",
    "TASK_GROUPS",
    "ZERO_SHOT_TASKS",
    "BenchmarkError",
    "ExternalTask",
    # datasets.py
    "PLACEHOLDER_CAPTION",
    "MedPixData",
    "check_case_split",
    "confined_path",
    "download_pair_set",
    "load_external",
    "load_medpix2",
    "medpix2_folder",
    "load_pair_table",
    "mask_burned_in_text",
    "normalise_case_uid",
    "pair_images",
    "square_resize",
    # text_encoder.py
    "TextFeatures",
    "cached_text_features",
    "encode_texts",
    "minilm_dir",
    "read_text_cache",
    "verify_minilm_dir",
    "write_text_cache",
    # objectives.py
    "LearnableLogitScale",
    "clip_loss",
    "cyclip_loss",
    "dcl_loss",
    "filip_loss",
    "gloria_local_loss",
    "gloria_scores",
    "nt_xent",
    "siglip_loss",
    # models.py
    "DualEncoder",
    "ImageEncoder",
    "PretrainedImageEncoder",
    "check_method",
    "image_encoder",
    # training.py
    "TrainResult",
    "augment",
    "run_device",
    "amp_dtype",
    "train_method",
    # metrics.py
    "class_embeddings",
    "linear_probe",
    "recall_at_k",
    "retrieval_chance",
    "vqa_scores",
    "zero_shot_predict",
    # bench.py
    "Bench",
    "build_bench",
    "prompt_texts",
    # evaluation.py
    "chance_levels",
    "embed_images",
    "embed_texts",
    "evaluate",
    "item_clusters",
    "vqa_answers",
    "vqa_tasks",
    # runs.py
    "RunRecord",
    "image_init_label",
    "run_benchmark",
    # tables.py
    "RunKey",
    "chance_table",
    "results_table",
    "run_label",
    "seed_mean_scores",
    "seed_scores",
    "tasks_above_chance",
    "to_frame",
    "wide_table",
    # comparisons.py
    "answer_questions",
    "answer_sentences",
    "compare_with_paper",
    "overall_difference",
    "paired_differences",
    "plot_differences",
    "questions_frame",
    # cli.py
    "main",
]
