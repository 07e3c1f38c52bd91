"""A notebook's settings made into configs (:func:`stage2_config`,
:func:`teacher_config`) and chapter 3's three models loaded or trained together
(:func:`chapter_models`)."""

from __future__ import annotations

from ..medvae_stage1 import export_metadata
from ..teachers import FrozenTeacher
from .contrastive import TeacherConfig
from .exports import (
    _matching_export,
    contrastive_teacher,
    stage1_autoencoder,
    stage2_head,
)
from .latents import weights_fingerprint
from .trainer import Stage2Config


def stage2_config(
    settings: dict, seed: int, autoencoder, teacher: FrozenTeacher
) -> Stage2Config:
    """The Stage2Config for a notebook's settings, naming the stage-1 weights and the teacher it uses."""
    fields = Stage2Config.__dataclass_fields__
    chosen = {
        k: v
        for k, v in settings.items()
        if k in fields and k not in ("teacher", "stage1")
    }
    return Stage2Config(
        seed=seed,
        teacher=teacher.name,
        stage1=weights_fingerprint(autoencoder),
        **chosen,
    )


def teacher_config(settings: dict, seed: int) -> TeacherConfig:
    """The CI teacher's TeacherConfig from a notebook's ``teacher_*`` settings."""
    fields = TeacherConfig.__dataclass_fields__
    chosen = {
        k.removeprefix("teacher_"): v
        for k, v in settings.items()
        if k.startswith("teacher_")
    }
    return TeacherConfig(
        seed=seed,
        image_size=settings["image_size"],
        **{k: v for k, v in chosen.items() if k in fields},
    )


def chapter_models(
    stage1,
    settings: dict,
    mode: str,
    seed: int,
    train_x,
    data: dict,
    device="cpu",
    require_stage1: bool = False,
    **fit_kwargs,
):
    """Chapter 3's three models for chapter 4 and the command line: the stage-1 autoencoder
    (:func:`stage1_autoencoder`), the teacher (BiomedCLIP through open_clip, or the CI teacher of
    :func:`contrastive_teacher`) and the stage-2 trainer (:func:`stage2_head`), each loaded when an
    export matches and trained otherwise. Returns them and a sentence for each saying which happened.
    With ``require_stage1`` a missing stage-1 export is an error instead of a training run."""
    from ..teachers import load_open_clip_teacher
    from ..training import run_dir

    if require_stage1:
        name = f"{stage1.model}.safetensors"
        found, why = _matching_export(
            [
                run_dir("02_medvae_stage1", mode, stage1.model) / name,
                run_dir("03_medvae_stage2", mode, stage1.model) / "stage1" / name,
            ],
            export_metadata(stage1, mode, data),
        )
        if found is None:
            raise FileNotFoundError(
                f"no stage-1 weights to start from ({why}); run chapter 2 (or chapter 3) first"
            )
    notes = {}
    overwrite = fit_kwargs.get("overwrite", False)
    autoencoder, notes["stage 1"] = stage1_autoencoder(
        stage1, mode, train_x, data, device, overwrite=overwrite
    )
    if settings["teacher"] == "contrastive":
        teacher, notes["teacher"] = contrastive_teacher(
            teacher_config(settings, seed), mode, train_x, data, device
        )
    else:
        teacher, notes["teacher"] = (
            load_open_clip_teacher(settings["teacher"], device),
            f"loaded {settings['teacher']}",
        )
    config = stage2_config(settings, seed, autoencoder, teacher)
    trainer, notes["stage 2"] = stage2_head(
        config, mode, autoencoder, teacher, train_x, data, device, **fit_kwargs
    )
    return autoencoder, teacher, trainer, notes
