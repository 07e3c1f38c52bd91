"""The chapter's settings and modality names: the simulation's ``MODES``, the real
data's ``REAL_MODES``, and how a modality subset is written, checked and enumerated."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

MODALITIES = ("a", "b", "c", "d")

MODES = {
    "ci": {
        "overlap": 0.3,
        "redundant": {"overlap": 1.0, "noise": 0.2},
        "crossover_sizes": [8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024],
        "crossover_seeds": 200,
        "sample_sizes": [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
        "seeds": 10,
        "eval_samples": 20_000,
        "overlaps": [0.0, 0.2, 0.5, 0.8, 1.0],  # the paper's Table 4 grid
        "overlap_m": 256,
        "rademacher_draws": 100,
        "nonlinear_sizes": [8, 32, 128, 512, 2048],
    },
    "full": {
        "overlap": 0.3,
        "redundant": {"overlap": 1.0, "noise": 0.2},
        "crossover_sizes": [
            8,
            12,
            16,
            20,
            24,
            28,
            32,
            40,
            48,
            56,
            64,
            80,
            96,
            128,
            192,
            256,
            512,
            1024,
            2048,
        ],
        "crossover_seeds": 1000,
        "sample_sizes": [
            4,
            6,
            8,
            12,
            16,
            24,
            32,
            48,
            64,
            96,
            128,
            256,
            512,
            1024,
            2048,
            4096,
            8192,
            16384,
        ],
        "seeds": 50,
        "eval_samples": 200_000,
        "overlaps": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
        "overlap_m": 256,
        "rademacher_draws": 200,
        "nonlinear_sizes": [
            8,
            16,
            32,
            64,
            128,
            256,
            512,
            1024,
            2048,
            4096,
            8192,
            16384,
        ],
    },
}


BRAIN_MODALITIES = ("t1", "t1c", "t2")
BRAIN_TARGET = "flair"


REAL_MODES = {
    "ci": {
        "test_subjects": [
            "BraTS-GLI-00001-000",
            "TCGA-DU-7294",
            "TCGA-FG-6692",
        ],  # leave one person out
        "slices": [50, 110, 3],  # axial slices lo, hi, step
        "patch": 8,
        "quantile": 0.5,
        "fractions": [0.01, 0.1, 1.0],  # of the training patches
        "max_train": 2000,  # the training patches are subsampled to this many (CI time, three folds)
        "seeds": 3,
        "hidden": 16,
        "rep_dim": 4,
        "steps": 150,
        "lr": 0.01,
    },
    "full": {
        "test_subjects": [
            "TCGA-DU-7294",
            "TCGA-FG-6692",
            "BraTS-GLI-00001-000",
        ],  # leave one person out
        "slices": [30, 130, 1],
        "patch": 8,
        "quantile": 0.5,
        "fractions": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        "max_train": None,
        "seeds": 5,
        "hidden": 32,
        "rep_dim": 8,
        "steps": 400,
        "lr": 0.01,
    },
}


def parse_subset(
    subset: str | Iterable[str], modalities: tuple[str, ...] = MODALITIES
) -> tuple[str, ...]:
    """A modality subset, from ``"a+c"`` or ``("a", "c")``, as a sorted tuple of names.

    Raises ``ValueError`` naming the bad entry and the valid modalities."""
    names = subset.split("+") if isinstance(subset, str) else list(subset)
    if not names or names == [""]:
        raise ValueError(
            f"empty modality subset; valid modalities: {', '.join(modalities)}"
        )
    for name in names:
        if name not in modalities:
            raise ValueError(
                f"unknown modality {name!r} in {subset!r}; valid modalities: {', '.join(modalities)}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"modality named twice in {subset!r}")
    return tuple(sorted(names))


def subset_name(subset: str | Iterable[str]) -> str:
    return "+".join(parse_subset(subset))


def all_subsets() -> list[str]:
    """The 15 non-empty subsets of the four modalities, smallest first."""
    return [
        "+".join(c)
        for size in range(1, len(MODALITIES) + 1)
        for c in itertools.combinations(MODALITIES, size)
    ]


def nested_pairs(subsets: Iterable[str]) -> list[tuple[str, str]]:
    """Every pair ``(N, M)`` of the given subsets with ``N`` a strict subset of ``M``."""
    sets = {s: set(parse_subset(s)) for s in subsets}
    return [(n, m) for n in sets for m in sets if sets[n] < sets[m]]
