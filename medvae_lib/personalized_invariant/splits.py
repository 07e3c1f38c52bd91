"""People into samples and splits: :class:`SubjectData`, the split of whole patients
into train / val / test, the folds of the chapter (:func:`leave_one_out`), and helpers
that stack or crop the samples of a split."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai import transforms as mt

from .volumes import (
    axial_slices,
    brats_subjects,
    clipped_fraction,
    load_subject,
    manifest_subjects,
    normalise,
)


def split_subjects(subjects, test_subjects) -> tuple[list[str], list[str]]:
    """Whole people go to test: (train, test) lists with no person in both."""
    subjects, test = list(subjects), list(test_subjects)
    unknown = sorted(set(test) - set(subjects))
    if unknown:
        raise ValueError(
            f"test subject(s) {unknown} are not among the subjects {subjects}"
        )
    train = [s for s in subjects if s not in test]
    if not train or not test:
        raise ValueError(
            f"need at least one training and one test subject, got train {train}, test {test}"
        )
    return train, test


def split_slices(
    n: int, val_fraction: float, gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validation slices of a training person: the top (most superior) ``val_fraction`` of its ``n``
    slices, with ``gap`` slices left out between them and the training slices (neighbouring slices are
    almost the same image). Returns (train indices, validation indices)."""
    n_val = max(1, round(n * val_fraction))
    if n_val + gap >= n:
        raise ValueError(
            f"{n} slices are too few for {n_val} validation slices and a gap of {gap}"
        )
    return np.arange(0, n - n_val - gap), np.arange(n - n_val, n)


@dataclass
class SubjectData:
    name: str
    samples: (
        torch.Tensor
    )  # (N, 5, *spatial): four contrasts in [0, 1] and the brain mask
    position: np.ndarray  # relative axial position of each sample in [0, 1]
    clipped: float


def patient_of(name: str) -> str:
    """The patient a subject folder belongs to: BraTS names a patient's timepoints or repeat scans
    ``BraTS-GLI-00001-000``, ``BraTS-GLI-00001-001``; both are patient ``BraTS-GLI-00001``. Other
    names are their own patient."""
    found = re.fullmatch(r"(BraTS-[A-Za-z]+-\d+)-\d+", name)
    return found.group(1) if found else name


def by_patient(names) -> dict[str, list[str]]:
    """Subject folders grouped by :func:`patient_of`, patients sorted."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(patient_of(name), []).append(name)
    return dict(sorted(groups.items()))


def _default_subjects(settings: dict) -> dict[str, dict[str, Path]]:
    if settings["brats_folder"]:
        return brats_subjects(settings["brats_folder"])
    return manifest_subjects(settings["manifest"])


def load_person(name: str, paths: dict[str, Path], settings: dict) -> SubjectData:
    """One person, normalised and cut into samples: every 2D slice (CI mode) or the brain-cropped
    volume in one box (full mode), in float32."""
    images, mask = normalise(load_subject(paths), tuple(settings["window"]))
    clipped = clipped_fraction(images, mask)
    if settings["spatial_dims"] == 2:
        samples, index = axial_slices(images, mask, settings)
        return SubjectData(name, samples, index / (images.shape[-1] - 1), clipped)
    box = mt.Compose(
        [
            mt.CropForeground(select_fn=lambda x: x > 0, margin=0),
            mt.ResizeWithPadOrCrop(spatial_size=tuple(settings["volume_size"])),
        ]
    )
    stack = box(torch.cat([images, mask]))
    samples = torch.as_tensor(
        stack.as_tensor() if hasattr(stack, "as_tensor") else stack
    )[None]
    return SubjectData(name, samples, np.array([0.5]), clipped)


def prepare_data(
    settings: dict,
    subjects: dict[str, dict[str, Path]] | None = None,
    cache: dict | None = None,
) -> dict:
    """Load every subject, normalise it and cut it into samples (2D slices in CI mode; in full mode the
    brain-cropped volume, from which training draws random patches). Returns train / val / test
    dictionaries of :class:`SubjectData` and the split. People are split by *patient*
    (:func:`patient_of`): all folders of one patient go to the same part. ``cache`` (a dict, filled
    here) keeps loaded people between calls, so that the folds of :func:`leave_one_out` read each
    person once."""
    if subjects is None:
        subjects = _default_subjects(settings)
    cache = {} if cache is None else cache
    patients = by_patient(subjects)
    test_names = list(settings["test_subjects"])
    if not test_names:
        order = np.random.default_rng(0).permutation(list(patients))
        n_test = max(1, round(len(order) * settings.get("test_fraction", 0.2)))
        test_names = sorted(n for p in order[:n_test] for n in patients[p])
    else:  # a named test subject takes the other folders of its patient with it
        test_names = sorted(
            {n for t in test_names if t in subjects for n in patients[patient_of(t)]}
            | set(test_names)
        )
    train_names, test_names = split_subjects(subjects, test_names)
    if settings["n_train_subjects"]:
        train_names = train_names[: settings["n_train_subjects"]]
    if settings["n_test_subjects"]:
        test_names = test_names[: settings["n_test_subjects"]]
    val_names = []
    train_patients = by_patient(train_names)
    if (
        settings["spatial_dims"] == 3
        and len(train_patients) >= 3
        and settings["val_fraction"] > 0
    ):
        # 3D: whole patients for validation, taken from the training patients
        n_val = max(1, round(len(train_patients) * settings["val_fraction"]))
        val_names = [
            n for p in list(train_patients)[-n_val:] for n in train_patients[p]
        ]
        train_names = [n for n in train_names if n not in val_names]
    out = {
        "train": {},
        "val": {},
        "test": {},
        "split": {"train": train_names, "val": val_names, "test": test_names},
    }
    for name in train_names + val_names + test_names:
        if name not in cache:
            cache[name] = load_person(name, subjects[name], settings)
        person = cache[name]
        if name in test_names:
            out["test"][name] = person
        elif name in val_names:
            out["val"][name] = person
        elif settings["spatial_dims"] == 2:
            tr, va = split_slices(
                len(person.samples), settings["val_fraction"], settings["val_gap"]
            )
            out["train"][name] = SubjectData(
                name, person.samples[tr], person.position[tr], person.clipped
            )
            out["val"][name] = SubjectData(
                name, person.samples[va], person.position[va], person.clipped
            )
        else:
            out["train"][name] = SubjectData(
                name, person.samples.half(), person.position, person.clipped
            )
    return out


def leave_one_out(
    settings: dict, subjects: dict[str, dict[str, Path]] | None = None
) -> list[dict]:
    """The folds of the chapter. ``folds="leave_one_out"``: every patient is the test set once (the
    others train), each person read once; ``"holdout"``: the one split of :func:`prepare_data`."""
    if subjects is None:
        subjects = _default_subjects(settings)
    if settings["folds"] == "holdout":
        return [prepare_data(settings, subjects)]
    if settings["folds"] != "leave_one_out":
        raise ValueError(
            f"folds must be 'leave_one_out' or 'holdout', got {settings['folds']!r}"
        )
    cache: dict = {}
    return [
        prepare_data(dict(settings, test_subjects=tuple(names)), subjects, cache)
        for names in by_patient(subjects).values()
    ]


def stack_samples(subjects: dict[str, SubjectData]) -> torch.Tensor:
    return torch.cat([d.samples for d in subjects.values()])


def central_patch(samples: torch.Tensor, size: int) -> torch.Tensor:
    """The central cube (or square) of side ``size`` of samples larger than that; others unchanged."""
    if all(s <= size for s in samples.shape[2:]):
        return samples
    lo = [(s - size) // 2 for s in samples.shape[2:]]
    return samples[(slice(None), slice(None), *(slice(a, a + size) for a in lo))]
