"""Every person held out once: leave-one-person-out folds with validation slabs
inside the training side, each fold trained, reconstructed and scored, and the
search of settings on validation slabs only."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models import get_config
from .downstream import shrink_volumes
from .evaluation import tile_scores, volume_fidelity
from .inference import reconstruct_volume
from .trainer import Stage1Trainer3D, stage1_3d_config, train_with_evaluation
from .volumes import BRAIN_MANIFEST, random_patches, tile_boxes


def person_folds(people) -> list[tuple[str, list[str]]]:
    """Leave-one-person-out folds: ``(test person, training people)`` for every person, in order."""
    people = list(people)
    if len(set(people)) != len(people) or len(people) < 2:
        raise ValueError(
            f"leave-one-person-out needs at least two distinct people, got {people}"
        )
    return [(p, [q for q in people if q != p]) for p in people]


def hold_out_slab(volumes: dict[str, torch.Tensor], width: int, axis: int = 1):
    """Split every (1, X, Y, Z) volume along spatial ``axis`` into its last ``width`` voxels, held out
    for validation, and the rest, for training (axis 1 of an RAS volume: the anterior slab, frontal
    brain). Returns ``(train, validation)``, two dicts with the volumes' names. The slab shares no voxel
    with the rest, so validation patches share none with training patches; it is the same people's
    anatomy, so it is *not* a held-out person: it chooses settings, it does not report results."""
    train, val = {}, {}
    for name, v in volumes.items():
        side = v.shape[1 + axis]
        if not 0 < width < side:
            raise ValueError(
                f"{name}: a slab of {width} voxels does not fit a side of {side}"
            )
        train[name] = v.narrow(1 + axis, 0, side - width).contiguous()
        val[name] = v.narrow(1 + axis, side - width, width).contiguous()
    return train, val


def fold_data(volumes: dict, test_person: str, settings: dict, seed: int) -> dict:
    """One fold's inputs from ``volumes`` (``"<person>/<contrast>"``): training patches
    from the other people's volumes outside the validation slab (:func:`hold_out_slab`),
    validation patches from the slab, and the test person's whole volumes of
    ``settings["test_contrasts"]``. The test person is used for nothing else."""
    people = {name.split("/")[0] for name in volumes}
    if test_person not in people:
        raise ValueError(f"{test_person} is not among the people {sorted(people)}")
    training = {}
    for name, v in volumes.items():
        person, contrast = name.split("/")
        if person != test_person and contrast in settings["train_contrasts"]:
            training[name] = v
    pieces, slabs = hold_out_slab(training, settings["val_slab"])
    size, n_val = settings["patch"], settings["n_val_patches"]
    test = [f"{test_person}/{c}" for c in settings["test_contrasts"]]
    return {
        "patches": random_patches(pieces, settings["n_patches"], size, seed=seed),
        "val_patches": random_patches(slabs, n_val, size, seed=seed + 1000),
        "val_volumes": slabs,
        "test_volumes": {name: volumes[name] for name in test},
    }


def train_fold(
    data: dict,
    settings: dict,
    seed: int,
    autoencoder_2d,
    device="cpu",
    label: str = "",
    checkpoint_dir=None,
):
    """Train the inflated and the scratch run of one fold and seed on ``data["patches"]`` (same batches
    and noise for both), scoring ``data["val_patches"]`` at ``settings["eval_steps"]``; returns the
    trainers and the validation table (columns ``run``, ``step``, ``PSNR (dB)``, ``MS-SSIM``)."""
    trainers = {
        init: Stage1Trainer3D(
            stage1_3d_config(settings, seed, init, autoencoder_2d),
            autoencoder_2d,
            device,
        )
        for init in ("inflated", "scratch")
    }
    for t in trainers.values():
        t.name = f"{label} {t.name}".strip()
    identity = {
        "manifest": BRAIN_MANIFEST,
        "fold": label,
        "spacing": settings["spacing"],
    }
    curve = train_with_evaluation(
        trainers,
        data["patches"],
        data["val_patches"],
        settings["eval_steps"],
        data=identity,
        kernel_size=settings["ms_ssim_kernel"],
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=settings["checkpoint_every"],
    )
    return trainers, curve


def resize_reconstruction(volume: torch.Tensor, factor: int) -> torch.Tensor:
    """The resize baseline of a (1, X, Y, Z) volume: area-average ``factor`` per side, trilinear back up."""
    small = shrink_volumes(volume[None], factor)
    return F.interpolate(
        small, size=volume.shape[1:], mode="trilinear", align_corners=False
    ).clamp(0, 1)[0]


def score_fold(trainers: dict, test_volumes: dict, settings: dict, device="cpu"):
    """Whole-volume reconstructions of the test person's volumes by each trained run and by the resize,
    scored per volume (:func:`volume_fidelity`) and per ``settings["tile"]``^3 tile at least half brain
    (:func:`tile_scores`, with a ``volume`` column). Returns ``(per_volume, per_tile, reconstructions)``."""
    factor = get_config(settings["model"]).factor
    recs = {
        name: {
            v: reconstruct_volume(
                t.autoencoder, x[None], factor, "whole", device=device, amp=t.config.amp
            )[0]
            for v, x in test_volumes.items()
        }
        for name, t in trainers.items()
    }
    recs["resize"] = {
        v: resize_reconstruction(x, factor) for v, x in test_volumes.items()
    }
    boxes = {v: tile_boxes(x, settings["tile"]) for v, x in test_volumes.items()}
    per_tile = tile_scores(
        test_volumes, recs, boxes, kernel_size=settings["ms_ssim_kernel"]
    )
    names = [v for v in test_volumes for _ in boxes[v]]
    per_tile["volume"] = [names[i] for i in per_tile["image"]]
    return volume_fidelity(test_volumes, recs), per_tile, recs


def run_folds(
    volumes, settings, seeds, autoencoder, device="cpu", keep=None, checkpoint_dir=None
):
    """Every leave-one-person-out fold of ``settings["people"]`` with every seed, the 3D
    runs inflated from the 2D ``autoencoder``: :func:`fold_data`, :func:`train_fold`,
    :func:`score_fold`. Returns tables ``"curves"``, ``"volumes"`` and ``"tiles"`` with
    ``fold`` (the test person) and ``seed`` columns, and ``"kept"``: ``{seed: {"data",
    "trainers"}}`` of the fold whose test person is ``keep`` (default: the first
    person), for the sections that reuse its models. ``settings["fold_settings"]``
    (optional, ``{test person: overrides}``) gives a fold the settings its own
    validation chose. With ``checkpoint_dir`` every run checkpoints every
    ``settings["checkpoint_every"]`` steps into ``<dir>/<test person>/seed_<seed>/<run>``
    and resumes from there (full mode: hours of training survive a disconnect)."""
    import pandas as pd

    from ..scorecard import slug

    keep = keep or settings["people"][0]
    curves, per_volume, per_tile, kept = [], [], [], {}
    for test_person, _ in person_folds(settings["people"]):
        # where folds chose differently, each fold's own validation choice
        s = {**settings, **settings.get("fold_settings", {}).get(test_person, {})}
        for seed in seeds:
            data = fold_data(volumes, test_person, s, seed)
            label = f"{test_person} held out, seed {seed}"
            with contextlib.redirect_stdout(io.StringIO()):  # a line per run otherwise
                folder = (
                    Path(checkpoint_dir) / slug(test_person) / f"seed_{seed}"
                    if checkpoint_dir
                    else None
                )
                trainers, curve = train_fold(
                    data, s, seed, autoencoder, device, label, folder
                )
            vol, tile, _ = score_fold(trainers, data["test_volumes"], s, device)
            for table, into in ((curve, curves), (vol, per_volume), (tile, per_tile)):
                into.append(table.assign(fold=test_person, seed=seed))
            if test_person == keep:
                for trainer in trainers.values():  # its autoencoders stay on the GPU
                    trainer.park(keep=("autoencoder",))
                kept[seed] = {"data": data, "trainers": trainers}
            del trainers  # a GPU frees the others before the next run trains
    return {
        "curves": pd.concat(curves, ignore_index=True),
        "volumes": pd.concat(per_volume, ignore_index=True),
        "tiles": pd.concat(per_tile, ignore_index=True),
        "kept": kept,
    }


def settings_search(
    volumes: dict,
    settings: dict,
    candidates: dict,
    seed: int,
    autoencoder_2d,
    device="cpu",
):
    """Choose CI settings without any test person: for every fold and every candidate (``{name:
    overrides}``), train both runs on the fold's training side and score its validation slab
    (:func:`fold_data`, :func:`train_fold`); the test person's volumes are not touched. Returns the
    validation table (``fold``, ``candidate``, ``run``, ``step``, ``PSNR (dB)``, ``MS-SSIM``) and, per
    fold, the candidate with the highest validation PSNR at the last step, averaged over both runs."""
    import pandas as pd

    rows = []
    for test_person, _ in person_folds(settings["people"]):
        for name, changes in candidates.items():
            s = {**settings, **changes}
            data = fold_data(volumes, test_person, s, seed)
            data.pop("test_volumes")
            with contextlib.redirect_stdout(io.StringIO()):
                _, curve = train_fold(
                    data,
                    s,
                    seed,
                    autoencoder_2d,
                    device,
                    f"{test_person} held out, {name}",
                )
            rows.append(curve.assign(fold=test_person, candidate=name))
    table = pd.concat(rows, ignore_index=True)
    last = table[table["step"] == table["step"].max()]
    score = last.groupby(["fold", "candidate"])["PSNR (dB)"].mean().unstack()
    return table, score.idxmax(axis=1).to_dict()
