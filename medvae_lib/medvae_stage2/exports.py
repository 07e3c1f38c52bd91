"""Where the chapters' models come from: exported weights when present and matching,
else training (:func:`stage1_autoencoder`, :func:`contrastive_teacher`,
:func:`stage2_head`), with the metadata each export is matched on."""

from __future__ import annotations

from pathlib import Path

import torch

from ..medvae_stage1 import export_metadata
from ..models import build_autoencoder
from ..training import world
from .contrastive import ContrastiveTeacherTrainer, TeacherConfig, ci_teacher
from .trainer import Stage2Config, Stage2Trainer


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _matching_export(paths, expected: dict[str, str]) -> tuple[Path | None, str]:
    """The first of ``paths`` whose safetensors metadata hold ``expected``; else None and why not."""
    reasons = []
    for path in map(Path, paths):
        if not path.is_file():
            reasons.append(f"no {path}")
            continue
        meta = _metadata(path)
        differ = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
        if not differ:
            return path, f"loaded {path}"
        reasons.append(f"{path} was made with other settings (saved, wanted): {differ}")
    return None, "; ".join(reasons)


def stage1_autoencoder(
    config,
    mode: str,
    images: torch.Tensor,
    data: dict,
    device="cpu",
    checkpoint_every: int = 0,
    overwrite: bool = False,
):
    """Chapter 2's stage-1 model: loaded from chapter 2's export (``runs/02_medvae_stage1/<mode>/<model>/``)
    or this chapter's own when its metadata match ``config`` and the data, else trained here through
    :class:`~medvae_lib.medvae_stage1.Stage1Trainer` on ``images`` and exported for the next run (a
    checkpoint of other settings in this chapter's folder is replaced only with ``overwrite=True``).
    Returns the autoencoder and a sentence saying which happened."""
    from ..medvae_stage1 import Stage1Trainer
    from ..training import export_weights, load_weights, run_dir

    expected = export_metadata(config, mode, data)
    name = f"{config.model}.safetensors"
    own = run_dir("03_medvae_stage2", mode, config.model) / "stage1"
    path, why = _matching_export(
        [run_dir("02_medvae_stage1", mode, config.model) / name, own / name], expected
    )
    if path is not None:
        return load_weights(
            path, build_autoencoder(config.model, width=config.width)
        ).to(device), why
    trainer = Stage1Trainer(config, device)
    trainer.fit(
        images, own, checkpoint_every, resume=True, data=data, overwrite=overwrite
    )
    if world()[0] == 0:  # under torchrun, one process writes
        export_weights(own / name, trainer.autoencoder, expected)
    return trainer.autoencoder, f"trained stage 1 here ({why})"


def teacher_metadata(
    config: TeacherConfig, mode: str, data: dict, mean: float, std: float
) -> dict[str, str]:
    return {
        "teacher": "contrastive",
        "mode": mode,
        **{k: str(v) for k, v in vars(config).items()},
        "data": str(data.get("checksum")),
        "mean": repr(mean),
        "std": repr(std),
    }


def contrastive_teacher(
    config: TeacherConfig, mode: str, images: torch.Tensor, data: dict, device="cpu"
):
    """CI mode's teacher: loaded from ``runs/03_medvae_stage2/<mode>/teacher.safetensors`` when it was
    trained with ``config`` on the same training images, else trained here on ``images`` (the training
    split only) and exported. Returns the :class:`FrozenTeacher` and a sentence saying which happened."""
    from ..models import build_classifier
    from ..training import export_weights, load_weights, run_dir

    mean, std = float(images.mean()), float(images.std())
    expected = teacher_metadata(config, mode, data, mean, std)
    path = run_dir("03_medvae_stage2", mode) / "teacher.safetensors"
    found, why = _matching_export([path], expected)
    if found is not None:
        encoder = load_weights(
            found,
            build_classifier(
                3,
                width=config.width,
                num_classes=config.embed_dim,
                stem_stride=config.stem_stride,
            ),
        )
        return ci_teacher(encoder, config, mean, std).to(device), why
    if world()[1] > 1:
        raise RuntimeError(
            f"the CI teacher is trained in one process (its contrastive loss needs the whole batch), not under "
            f"torchrun: run chapter 3 once first ({why})"
        )
    trainer = ContrastiveTeacherTrainer(config, device)
    trainer.fit(images, data=data)
    if world()[0] == 0:  # under torchrun, one process writes
        export_weights(path, trainer.encoder, expected)
    return trainer.teacher(), f"trained the teacher here ({why})"


def head_metadata(config: Stage2Config, mode: str, data: dict) -> dict[str, str]:
    return {
        "stage": "2",
        "mode": mode,
        **{k: str(v) for k, v in vars(config).items()},
        "data": str(data.get("checksum")),
    }


def stage2_head(
    config: Stage2Config,
    mode: str,
    autoencoder,
    teacher,
    images,
    data,
    device="cpu",
    **fit_kwargs,
):
    """Chapter 3's head: loaded from ``runs/03_medvae_stage2/<mode>/<model>/head.safetensors`` when it was
    trained with ``config`` (which names the stage-1 weights and the teacher) on the same data, else
    trained here; ``fit_kwargs`` go to :meth:`~medvae_lib.training.CheckpointedTrainer.fit`, so, as for
    every trainer of the book, a checkpoint made with other settings is replaced only with
    ``overwrite=True``. Returns the trainer (its ``history`` is empty when loaded) and a sentence."""
    from ..training import export_weights, load_weights, run_dir

    trainer = Stage2Trainer(config, autoencoder, teacher, device)
    folder = run_dir("03_medvae_stage2", mode, config.model)
    expected = head_metadata(config, mode, data)
    found, why = _matching_export([folder / "head.safetensors"], expected)
    if found is not None:
        load_weights(found, trainer.head)
        return trainer, why
    trainer.fit(images, folder / "head", data=data, **fit_kwargs)
    if world()[0] == 0:  # under torchrun, one process writes
        export_weights(folder / "head.safetensors", trainer.head, expected)
    return trainer, f"trained the head here ({why})"
