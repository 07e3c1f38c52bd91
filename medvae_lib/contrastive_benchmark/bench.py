"""The evaluation bench (:class:`Bench`): the data, the external tasks and the frozen
text features of captions, prompts and questions, built once and shared by all runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .datasets import (
    MedPixData,
    download_pair_set,
    load_external,
    load_medpix2,
    load_pair_table,
    pair_images,
)
from .settings import EXTERNAL_TASKS, ZERO_SHOT_TASKS
from .text_encoder import TextFeatures, cached_text_features
from .training import run_device


@dataclass
class Bench:
    """Everything the evaluation needs, built once and shared by all methods and seeds."""

    data: MedPixData
    captions: TextFeatures
    prompts: dict  # task -> (TextFeatures of classes*templates, n_classes, n_templates, label list)
    questions: TextFeatures
    external: dict  # task -> {"train": (images, labels), "test": (images, labels)}
    settings: dict
    text_init: str = "pretrained"
    extra: dict = field(default_factory=dict)


def prompt_texts(classes: Mapping, templates: Sequence[str]) -> list[str]:
    return [t.format(name) for name in classes.values() for t in templates]


def build_bench(
    settings: Mapping,
    text_init: str = "pretrained",
    cache_dir: str | Path | None = None,
    data=None,
    download: bool = False,
    like: Bench | None = None,
) -> Bench:
    """Load and verify the data, and cache the frozen text encoder's outputs for captions, prompts and
    questions (with the pretrained or the randomly initialised MiniLM). With ``extra_train_sets`` (full
    mode) the public pair sets are downloaded (``download=True``) or read from ``extra_root`` and up to
    ``extra_max_pairs`` of each join the training pairs (``Bench.extra``); evaluation stays on MedPix and
    MedMNIST. ``like``: a bench of the same settings whose images (MedPix, MedMNIST, the extra pairs) are
    reused, so that only the text features are computed again (another ``text_init``)."""
    if like is not None:
        data, external = like.data, like.external
        extra_images = [like.extra["images"]] if like.extra else []
        extra_texts, extra_counts = (
            list(like.extra.get("captions", [])),
            dict(like.extra.get("counts", {})),
        )
    else:
        data = data or load_medpix2(settings["image_size"], settings["mask_fraction"])
        extra_images, extra_texts, extra_counts = [], [], {}
        for name in settings.get("extra_train_sets", ()):
            root = Path(settings["extra_root"]).expanduser() / name
            if download:
                download_pair_set(name, root, settings)
            table = load_pair_table(name, root, "train")
            images, captions = pair_images(
                table, settings["image_size"], settings.get("extra_max_pairs")
            )
            extra_images.append(images)
            extra_texts += captions
            extra_counts[name] = len(captions)
        external = {
            task: load_external(
                task, settings["image_size"], settings.get(spec.train_setting)
            )
            for task, spec in EXTERNAL_TASKS.items()
        }
    texts = list(data.table["caption"])
    prompt_sets = {
        task: (classes, templates)
        for task, (_, classes, templates) in ZERO_SHOT_TASKS.items()
    }
    prompt_sets.update(
        {task: (spec.classes, spec.templates) for task, spec in EXTERNAL_TASKS.items()}
    )
    prompt_lists = {task: prompt_texts(c, t) for task, (c, t) in prompt_sets.items()}
    questions = list(data.vqa["question"].astype(str))
    everything = (
        texts
        + [p for ps in prompt_lists.values() for p in ps]
        + questions
        + extra_texts
    )
    feats = cached_text_features(  # on the GPU where the runs train (settings' device)
        everything, text_init, settings["max_tokens"], cache_dir, run_device(settings)
    )
    n = len(texts)
    captions = feats.take(slice(0, n))
    prompts, pos = {}, n
    for task, ps in prompt_lists.items():
        classes, templates = prompt_sets[task]
        prompts[task] = (
            feats.take(slice(pos, pos + len(ps))),
            len(classes),
            len(templates),
            list(classes),
        )
        pos += len(ps)
    question_feats = feats.take(slice(pos, pos + len(questions)))
    extra = {}
    if extra_texts:
        start = pos + len(questions)
        extra = {
            "images": torch.cat(extra_images),
            "captions": extra_texts,
            "text": feats.take(slice(start, None)),
            "counts": extra_counts,
        }
    return Bench(
        data,
        captions,
        prompts,
        question_feats,
        external,
        dict(settings),
        text_init,
        extra,
    )
