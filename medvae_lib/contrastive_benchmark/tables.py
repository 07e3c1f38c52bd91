"""Tables of runs: scores per seed, the long results table with intervals over seeds and
clusters, the wide table, the chance comparisons, and the per-run CSV frame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .runs import RunRecord, image_init_label
from .settings import BenchmarkError

RunKey = tuple  # (method, text init[, image init])


def _key(key: RunKey) -> tuple[str, str, str]:
    method, text_init, *rest = key
    return method, text_init, rest[0] if rest else "scratch"


def seed_scores(
    runs: Sequence[RunRecord],
    method: str,
    text_init: str = "pretrained",
    image_init: str = "scratch",
) -> tuple[list[int], dict[str, np.ndarray]]:
    """The seeds (sorted) of one method and initialisation, and per task its scores of shape
    ``(seeds, items)``: the shape every interval of :mod:`medvae_lib.stats` takes."""
    chosen = sorted(
        (
            r
            for r in runs
            if (r.method, r.text_init, r.image_init) == (method, text_init, image_init)
        ),
        key=lambda r: r.seed,
    )
    if not chosen:
        raise BenchmarkError(
            f"no runs of {method!r} with text init {text_init!r} and image init {image_init!r}"
        )
    seeds = [r.seed for r in chosen]
    if len(set(seeds)) != len(seeds):
        raise BenchmarkError(f"{method!r} has repeated seeds {seeds}")
    return seeds, {
        task: np.stack([np.asarray(r.scores[task], float) for r in chosen])
        for task in chosen[0].scores
    }


def seed_mean_scores(
    runs: Sequence[RunRecord],
    method: str,
    text_init: str = "pretrained",
    image_init: str = "scratch",
) -> dict[str, np.ndarray]:
    """Per-item scores of one method (and initialisation) averaged over its seeds (for figures)."""
    return {
        task: v.mean(0)
        for task, v in seed_scores(runs, method, text_init, image_init)[1].items()
    }


def _clusters_for(clusters: Mapping | None, task: str, n_items: int):
    if clusters is None or task not in clusters:
        return None
    labels = np.asarray(clusters[task])
    if labels.shape != (n_items,):
        raise BenchmarkError(
            f"{task}: {n_items} scored items but {labels.shape[0]} cluster labels"
        )
    return labels


def results_table(
    runs: Sequence[RunRecord], clusters: Mapping | None = None
) -> pd.DataFrame:
    """Long table: one row per (method, text init, image init, task) with the mean over seeds and items and
    a 95 % interval (cut to [0, 1]) over seeds crossed with clusters (``stats.mean_interval``; ``clusters`` maps a task
    to each item's unit, e.g. :func:`item_clusters`; a task without labels treats items as units)."""
    from medvae_lib import stats

    rows = []
    for key in dict.fromkeys((r.method, r.text_init, r.image_init) for r in runs):
        seeds, scores = seed_scores(runs, *key)
        for task, values in scores.items():
            groups = _clusters_for(clusters, task, values.shape[1])
            res = stats.mean_interval(values, groups)
            # a t interval can leave [0, 1]; a score cannot, so the interval is cut to its range
            res["low"], res["high"] = max(res["low"], 0.0), min(res["high"], 1.0)
            rows.append(
                {
                    "method": key[0],
                    "text_init": key[1],
                    "image_init": key[2],
                    "task": task,
                    "mean": res["mean"],
                    "low": res["low"],
                    "high": res["high"],
                    "per_seed": [float(v) for v in values.mean(1)],
                    "n_items": res["n_items"],
                    "n_clusters": res["n_clusters"],
                    "seeds": len(seeds),
                }
            )
    return pd.DataFrame(rows)


def run_label(method: str, text_init: str, image_init: str = "scratch") -> str:
    """A run's column name: the method, with its text and image initialisation where not the default."""
    label = method + ("" if text_init == "pretrained" else f" ({text_init} text)")
    image = image_init_label(image_init)
    return label + (f" ({image} image)" if image else "")


def wide_table(long: pd.DataFrame, chance: pd.Series | None = None) -> pd.DataFrame:
    """Tasks x runs, each cell 'mean [low, high]' in percent, with a first column ``chance`` (percent)
    where ``chance`` (task -> chance level, :func:`chance_levels`) is given."""
    cell = long.assign(
        cell=[
            f"{100 * m:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"
            for m, lo, hi in zip(long["mean"], long["low"], long["high"], strict=True)
        ],
        label=[
            run_label(*k)
            for k in zip(
                long["method"], long["text_init"], long["image_init"], strict=True
            )
        ],
    )
    wide = cell.pivot(index="task", columns="label", values="cell")
    wide = wide.loc[
        list(dict.fromkeys(long["task"])), list(dict.fromkeys(cell["label"]))
    ]
    if chance is not None:
        wide.insert(0, "chance", [f"{100 * chance[t]:.0f}" for t in wide.index])
    return wide


def tasks_above_chance(
    long: pd.DataFrame, chance: Mapping, keys: Sequence[RunKey], tasks: Sequence[str]
) -> list:
    """The ``tasks`` on which every run of ``keys`` scores above its chance level: the lower end of its
    seeds-and-clusters interval (``long``, from :func:`results_table`) above ``chance[task]``. A task
    where a run sits at or below chance (a constant answer, a collapsed zero-shot classifier) measures
    the degenerate behaviour, not the representation, so comparisons are reported with and without it."""
    keep = []
    for task in tasks:
        ok = True
        for key in keys:
            method, text_init, image_init = _key(key)
            row = long[
                (long.method == method)
                & (long.text_init == text_init)
                & (long.image_init == image_init)
                & (long.task == task)
            ]
            if len(row) != 1:
                raise BenchmarkError(f"no result for {key} on {task}")
            ok &= bool(row["low"].iloc[0] > chance[task])
        if ok:
            keep.append(task)
    return keep


def chance_table(
    long: pd.DataFrame, chance: Mapping, tasks: Sequence[str]
) -> pd.DataFrame:
    """Per task: its chance level, the best run's mean score, and how many runs lie above chance (the
    lower end of their interval above it) out of how many."""
    rows = []
    for task in tasks:
        part = long[long.task == task]
        rows.append(
            {
                "task": task,
                "chance": chance[task],
                "best run": part["mean"].max(),
                "runs above chance": f"{int((part['low'] > chance[task]).sum())} of {len(part)}",
            }
        )
    return pd.DataFrame(rows).set_index("task")


def to_frame(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per (method, seed, text init, task): mean score, plus the run's throughput and loss."""
    return pd.DataFrame(
        [
            {
                "method": r.method,
                "seed": r.seed,
                "text_init": r.text_init,
                "image_init": r.image_init,
                "task": t,
                "score": float(v.mean()),
                "n_items": len(v),
                "pairs_per_second": r.pairs_per_second,
                "final_loss": r.final_loss,
            }
            for r in runs
            for t, v in r.scores.items()
        ]
    )
