"""The adversarial ablation: one warm-up, then the arms with and without the
adversarial term on the same batches (:func:`adversarial_ablation`), repeated over
seeds (:func:`seed_ablation`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .settings import Stage1Config
from .trainer import Stage1Trainer


def adversarial_ablation(
    config: Stage1Config,
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = True,
    data: dict | None = None,
    overwrite: bool = False,
    without: bool = True,
) -> dict[str, Stage1Trainer]:
    """Train the warm-up (steps before ``adv_start``) once, then two arms from it on the same batches and
    noise: ``"with adversarial"`` (``config``) and ``"without adversarial"`` (``adv_weight = 0``;
    left out when ``without`` is false, which changes nothing of the first arm).

    The difference between the arms is the effect of the adversarial term alone. Each part writes its
    checkpoints to its own sub-folder of ``checkpoint_dir``; ``resume`` and ``overwrite`` are passed on to
    :meth:`~medvae_lib.training.CheckpointedTrainer.fit`.
    """
    if not 0 < config.adv_start < config.steps or config.adv_weight == 0:
        raise ValueError(
            f"the ablation needs 0 < adv_start < steps and adv_weight > 0; got {config}"
        )
    sub = (
        (lambda name: Path(checkpoint_dir) / name)
        if checkpoint_dir
        else (lambda name: None)
    )
    warm = Stage1Trainer(replace(config, steps=config.adv_start), device)
    warm.name = f"stage 1 {config.model} warm-up"
    warm.fit(
        images,
        sub("warmup"),
        checkpoint_every,
        resume=resume,
        data=data,
        overwrite=overwrite,
    )
    arms = {
        "with adversarial": config,
        "without adversarial": replace(config, adv_weight=0.0),
    }
    if not without:
        del arms["without adversarial"]
    runs = {}
    for name, arm_config in arms.items():
        trainer = warm.branch(arm_config)
        trainer.name = f"stage 1 {config.model} {name}"
        trainer.fit(
            images,
            sub(name.replace(" ", "_")),
            checkpoint_every,
            resume=resume,
            data=data,
            overwrite=overwrite,
        )
        trainer.park(keep=("autoencoder",))  # a GPU keeps the finished arm's encoder
        runs[name] = trainer
    return runs


def seed_ablation(
    config: Stage1Config,
    images: torch.Tensor,
    seeds,
    device: torch.device | str = "cpu",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = True,
    data: dict | None = None,
    overwrite: bool = False,
    reuse: dict[str, Stage1Trainer] | None = None,
) -> dict[int, dict[str, Stage1Trainer]]:
    """:func:`adversarial_ablation` once per seed in ``seeds`` (``config`` with its seed replaced):
    the training runs whose spread an honest interval must include.

    Each seed trains from its own initialisation and batch order; its checkpoints go to
    ``checkpoint_dir/seed_<seed>``. ``reuse``: an ablation already trained (e.g. the chapter's own
    run), taken instead of training a seed again when its settings equal that seed's."""
    out = {}
    for s in seeds:
        cfg = replace(config, seed=int(s))
        if (
            reuse is not None
            and "without adversarial" in reuse
            and reuse["with adversarial"].config == cfg
        ):
            out[int(s)] = reuse
            continue
        folder = Path(checkpoint_dir) / f"seed_{int(s)}" if checkpoint_dir else None
        out[int(s)] = adversarial_ablation(
            cfg,
            images,
            device,
            folder,
            checkpoint_every,
            resume=resume,
            data=data,
            overwrite=overwrite,
        )
    return out
