"""Running the chapter's experiment: every variant and seed trained and scored on a
fold (:func:`run_fold`), the folds in parallel processes (:func:`run_folds`), and the
index of the fold the exercises use (:func:`chapter_fold`)."""

from __future__ import annotations

from pathlib import Path

import torch

from .representation import (
    control_embeddings,
    embeddings,
    x_h_dependence,
    xh_agreement,
)
from .splits import SubjectData, central_patch, patient_of, stack_samples
from .synthesis import constant_prediction, scores_of, synthesis_scores
from .trainer import train_variant


def _run_variant(
    settings: dict,
    data: dict,
    variant: str,
    device="cpu",
    score_val: bool = True,
    checkpoint_dir=None,
) -> dict:
    """Train one variant with every seed on one fold and score it (the part of :func:`run_fold` that
    one worker process does); with ``checkpoint_dir``, each run checkpoints into
    ``<dir>/<variant>/seed_<seed>`` and resumes from there."""
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    train, test = stack_samples(data["train"]), stack_samples(data["test"])
    val = stack_samples(data["val"]) if data["val"] and score_val else None
    everyone = {**data["train"], **data["test"]}
    positions = {n: d.position for n, d in everyone.items()}
    crop = settings["image_size"] if settings["spatial_dims"] == 3 else None
    out = {
        "test": {},
        "val": {},
        "agreement": {},
        "models": {},
        "history": {},
        "dependence": {},
    }
    for seed in settings["seeds"]:
        # one line per run would fill the page (folds x variants x seeds); the loss curves are kept
        folder = (
            Path(checkpoint_dir) / variant / f"seed_{seed}" if checkpoint_dir else None
        )
        trainer = train_variant(
            settings, variant, seed, train, device, verbose=False, checkpoint_dir=folder
        )
        model = trainer.model  # scored on the training device, then kept on the CPU
        out["spatial"] = model.spatial
        out["history"][variant, seed] = trainer.history
        out["test"][variant, seed] = synthesis_scores(model, test, settings)
        if val is not None:
            out["val"][variant, seed] = synthesis_scores(model, val, settings)
        if variant in ("baseline", "full", "unet"):
            patches = central_patch(test, crop) if crop else test
            out["dependence"][variant, seed] = x_h_dependence(  # 3D: 2 at a time
                model, patches, chunk=2 if crop else None
            )
        emb = embeddings(model, everyone, settings)
        out["agreement"][variant, seed] = _agreement(emb, positions, data)
        out["models"][variant, seed] = model.cpu()
    return out


def _controls(settings: dict, data: dict, size: tuple[int, ...]) -> dict:
    """The trivial controls of one fold: the constant image's scores and the pooled-pixel and
    brain-mask "encoders" of the agreement."""
    train, test = stack_samples(data["train"]), stack_samples(data["test"])
    everyone = {**data["train"], **data["test"]}
    positions = {n: d.position for n, d in everyone.items()}
    crop = settings["image_size"] if settings["spatial_dims"] == 3 else None
    constant = constant_prediction(train, test)
    out = {
        "constant": {
            "psnr": scores_of(constant, test),
            "ssim": scores_of(constant, test, "ssim", settings["ssim_kernel"]),
        },
        "agreement": {},
    }
    for kind in ("pixels", "mask"):
        people = {
            n: SubjectData(
                n,
                central_patch(d.samples, crop) if crop else d.samples,
                d.position,
                d.clipped,
            )
            for n, d in everyone.items()
        }
        emb = control_embeddings(people, kind, size)
        out["agreement"][kind] = _agreement(emb, positions, data)
    return out


def _agreement(emb: dict, positions: dict, data: dict) -> dict:
    """The X_h agreement of each test person against the training people, as in CI mode's
    folds, which hold one test person: not against the other test people of full mode's
    split, nor against other folders of the same patient (BraTS's repeat scans)."""
    tests = data["split"]["test"]
    return {
        p: xh_agreement(
            emb,
            positions,
            p,
            exclude={
                n
                for n in emb
                if n != p and (n in tests or patient_of(n) == patient_of(p))
            },
        )
        for p in tests
    }


def _merge(settings: dict, data: dict, parts: list[dict]) -> dict:
    """One fold's results. ``person`` labels the fold (its test person, or "N held-out
    people" for full mode's one split); ``people`` are its test people and
    ``item_people`` the person (patient: a BraTS patient's repeat scans are one) of each
    test item, by which intervals are clustered."""
    tests = list(data["split"]["test"])
    results = {
        "person": tests[0] if len(tests) == 1 else f"{len(tests)} held-out people",
        "people": tests,
        "item_people": [
            patient_of(n) for n, d in data["test"].items() for _ in d.samples
        ],
        "n_test": sum(len(d.samples) for d in data["test"].values()),
    }
    for key in ("test", "val", "agreement", "models", "history", "dependence"):
        results[key] = {k: v for part in parts for k, v in part[key].items()}
    results["control"] = _controls(settings, data, parts[0]["spatial"])
    return results


def run_fold(
    settings: dict, data: dict, device="cpu", progress=None, score_val: bool = True
) -> dict:
    """One fold: train every variant with every seed on the training people; score the synthesis of
    the test person (and the validation slices if ``score_val``), the X_h agreement, the swap and zero
    tests of X_h (for ``baseline``, ``full`` and ``unet``), and the trivial controls. Returns the
    scores and the trained models (by (variant, seed))."""
    parts = []
    for variant in settings["variants"]:
        parts.append(_run_variant(settings, data, variant, device, score_val))
        if progress:
            progress(variant)
    return _merge(settings, data, parts)


def run_folds(
    settings: dict,
    folds: list[dict],
    device="cpu",
    workers: int = 1,
    checkpoint_dir=None,
) -> list[dict]:
    """:func:`run_fold` for every fold; validation slices are scored in the fold whose test person is
    the first of ``settings["test_subjects"]`` (the fold the exercises use). With ``workers`` > 1 the
    (fold, variant) jobs run in that many processes (CPU only); every run is seeded on its own, so the
    results are those of one process. With ``checkpoint_dir`` every run checkpoints into
    ``<dir>/fold_<i>/<variant>/seed_<seed>`` and a rerun resumes from there."""
    for f in folds:
        tested = data_fold_test_people(f)
        if settings["spatial_dims"] == 3 and len(tested) < 2:
            # checked before hours of training: the X_h swap needs two test volumes
            raise ValueError(
                f"3D (full mode) tests on whole people and its X_h swap needs at least "
                f"two; this split tests {tested}. Train on a BraTS 2023 folder: "
                'overrides={"brats_folder": ...} (see download_brats)'
            )
    chapter = chapter_fold(settings, folds)
    jobs = [(i, v) for i in range(len(folds)) for v in settings["variants"]]
    args = [
        (
            settings,
            folds[i],
            v,
            device,
            i == chapter,
            Path(checkpoint_dir) / f"fold_{i}" if checkpoint_dir else None,
        )
        for i, v in jobs
    ]
    if workers > 1 and str(device) == "cpu":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            done = list(pool.map(_run_variant, *zip(*args, strict=True)))
    else:
        done = [_run_variant(*a) for a in args]
    return [
        _merge(settings, f, [d for (j, _), d in zip(jobs, done, strict=True) if j == i])
        for i, f in enumerate(folds)
    ]


def data_fold_test_people(fold: dict) -> list[str]:
    """The people a data fold tests on: its split's test list (full mode), or its one
    held-out person (CI mode's leave-one-person-out folds)."""
    return list(fold["split"]["test"]) if "split" in fold else [fold["person"]]


def chapter_fold(settings: dict, folds: list) -> int:
    """Index of the fold whose test set holds ``settings["test_subjects"][0]`` (else the first)."""
    wanted = list(settings["test_subjects"])[:1]
    for i, f in enumerate(folds):
        if set(wanted) & set(data_fold_test_people(f)):
            return i
    return 0
