"""Running the benchmark: :func:`run_benchmark` trains and evaluates every method with
every seed, one :class:`RunRecord` per run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medvae_lib.teachers import BIOMEDCLIP

from .bench import Bench
from .evaluation import evaluate
from .models import DualEncoder, check_method
from .settings import GENERAL_CLIP
from .training import train_method


@dataclass
class RunRecord:
    method: str
    seed: int
    text_init: str
    scores: dict[str, np.ndarray]
    pairs_per_second: float
    final_loss: float
    model: DualEncoder | None = None
    image_init: str = "scratch"


def image_init_label(image_init: str) -> str:
    """A short name for an image initialisation: "" for scratch, "CLIP", "BiomedCLIP" or the model id."""
    return {"scratch": "", GENERAL_CLIP: "CLIP", BIOMEDCLIP: "BiomedCLIP"}.get(
        image_init, image_init
    )


def run_benchmark(
    methods: Sequence[str],
    bench: Bench,
    seeds: Sequence[int],
    split: str = "test",
    progress: bool = True,
    image_init: str | None = None,
) -> list[RunRecord]:
    """Train and evaluate every method with every seed, with a progress bar over the runs. ``image_init``
    (an open_clip model id) starts the image encoder from a pretrained tower, with its patch embedding and
    first ``pretrained_freeze_blocks`` blocks frozen (the paper's partial freezing); default: the settings'."""
    from tqdm import tqdm  # not tqdm.auto: its notebook bar ignores TQDM_DISABLE

    for m in methods:
        check_method(m)
    settings = dict(bench.settings)
    if image_init is not None:
        settings["image_init"] = image_init
    train = bench.data.indices("train")
    images, text = bench.data.images[train], bench.captions.take(train)
    if bench.extra:  # full mode: the public pair sets join MedPix's training pairs (float16; cast per batch)
        images, text = (
            torch.cat([images.half(), bench.extra["images"]]),
            text.cat(bench.extra["text"]),
        )
    runs = []
    quiet = (
        {} if progress else {"disable": True}
    )  # with progress, tqdm's own default (TQDM_DISABLE) decides
    for method, seed in tqdm(
        [(m, s) for m in methods for s in seeds], desc="runs", **quiet
    ):
        res = train_method(method, images, text, settings, seed)
        runs.append(
            RunRecord(
                method,
                seed,
                bench.text_init,
                evaluate(res.model, bench, split, seed),
                res.pairs_per_second,
                res.history[-1]["loss"],
                res.model.cpu(),  # kept for the exercises; off the GPU, which the next run needs
                settings.get("image_init", "scratch"),
            )
        )
    return runs
