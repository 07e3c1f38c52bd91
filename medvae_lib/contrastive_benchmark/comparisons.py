"""Paired comparisons of runs: per-task and overall differences with intervals, the
paper's three questions answered with them, the sentences that set them beside the
paper's answers, and their figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .runs import RunRecord
from .settings import BenchmarkError
from .tables import RunKey, _clusters_for, _key, seed_scores, tasks_above_chance


def _paired_scores(runs, a: RunKey, b: RunKey):
    seeds_a, sa = seed_scores(runs, *_key(a))
    seeds_b, sb = seed_scores(runs, *_key(b))
    if seeds_a != seeds_b:
        raise BenchmarkError(
            f"{a} and {b} were run with different seeds ({seeds_a} and {seeds_b})"
        )
    return sa, sb


def _averaged_scores(runs, keys) -> tuple[list[int], dict[str, np.ndarray]]:
    """Scores of one run key, or the average of several (the same seeds) when ``keys`` is a list."""
    if isinstance(keys, list):
        parts = [seed_scores(runs, *_key(k)) for k in keys]
        if any(p[0] != parts[0][0] for p in parts):
            raise BenchmarkError(f"{keys} were run with different seeds")
        return parts[0][0], {
            t: np.mean([p[1][t] for p in parts], 0) for t in parts[0][1]
        }
    return seed_scores(runs, *_key(keys))


def paired_differences(
    runs: Sequence[RunRecord],
    a: RunKey,
    b: RunKey,
    tasks: Sequence[str] | None = None,
    clusters: Mapping | None = None,
) -> pd.DataFrame:
    """Per task: mean of (run a - run b) over seeds and items, with the interval of
    ``stats.paired_difference`` over seeds crossed with clusters (seed ``s`` of a paired with seed ``s`` of
    b), and the per-seed differences. ``a`` and ``b`` are (method, text init[, image init])."""
    from medvae_lib import stats

    sa, sb = _paired_scores(runs, a, b)
    rows = []
    for task in tasks or list(sa):
        d = stats.paired_difference(
            sa[task], sb[task], _clusters_for(clusters, task, sa[task].shape[1])
        )
        rows.append(
            {
                "task": task,
                "difference": d["mean"],
                "low": d["low"],
                "high": d["high"],
                "per_seed": d["per_seed"],
                "n_items": d["n_items"],
                "n_clusters": d["n_clusters"],
            }
        )
    return pd.DataFrame(rows)


def overall_difference(
    runs: Sequence[RunRecord],
    a: RunKey | list,
    b: RunKey,
    tasks: Sequence[str],
    clusters: Mapping | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Mean over ``tasks`` of the per-task mean differences (a - b), every task weighted equally, with the
    interval of ``stats.statistic_difference``: the training part from the per-seed values, the test-set
    part from a bootstrap over clusters that resamples a MedPix case with all its items in every task at
    once (the tasks share cases) and each MedMNIST test image with its zero-shot and probe items. ``a``
    may be a list of run keys, averaged (e.g. FILIP and GLoRIA). Returns mean, low, high, se, df,
    per_seed, a_better and the number of tasks; ``mean`` is NaN (and no interval) for no task."""
    from medvae_lib import stats

    tasks = list(tasks)
    if not tasks:
        nan = float("nan")
        return {"mean": nan, "low": nan, "high": nan, "per_seed": [], "tasks": 0}
    seeds_a, sa = _averaged_scores(runs, a)
    seeds_b, sb = seed_scores(runs, *_key(b))
    if seeds_a != seeds_b:
        raise BenchmarkError(
            f"{a} and {b} were run with different seeds ({seeds_a} and {seeds_b})"
        )
    task_index = np.concatenate(
        [np.full(sa[t].shape[1], i) for i, t in enumerate(tasks)]
    )
    groups = []
    for t in tasks:
        labels = _clusters_for(clusters, t, sa[t].shape[1])
        groups.append(
            labels.astype(str)
            if labels is not None
            else np.array([f"{t}#{i}" for i in range(sa[t].shape[1])])
        )
    n_tasks = len(tasks)

    def mean_over_tasks(labels: np.ndarray, scores: np.ndarray) -> float:
        with np.errstate(invalid="ignore", divide="ignore"):
            per_task = np.bincount(labels, scores, n_tasks) / np.bincount(
                labels, minlength=n_tasks
            )
        return float(
            per_task.mean()
        )  # NaN when a resample lost a task: skipped by statistic_difference

    res = stats.statistic_difference(
        mean_over_tasks,
        task_index,
        np.concatenate([sa[t] for t in tasks], 1),
        np.concatenate([sb[t] for t in tasks], 1),
        np.concatenate(groups),
        n_resamples=n_resamples,
        seed=seed,
    )
    return {**res, "tasks": n_tasks}


def answer_questions(
    runs: Sequence[RunRecord],
    comparisons: Mapping[str, tuple],
    tasks: Sequence[str],
    clusters: Mapping,
    long: pd.DataFrame,
    chance: Mapping,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """For every comparison ``name -> (a, b)`` (run keys; ``a`` may be a list, averaged), the
    :func:`overall_difference` over all ``tasks`` (``"all"``) and over the tasks where every run involved
    is above chance (``"above_chance"``, :func:`tasks_above_chance`; its ``task_list`` names them)."""
    out = {}
    for name, (a, b) in comparisons.items():
        keys = [*(a if isinstance(a, list) else [a]), b]
        kept = tasks_above_chance(long, chance, keys, tasks)
        out[name] = {
            "all": {
                **overall_difference(runs, a, b, tasks, clusters, n_resamples, seed),
                "task_list": list(tasks),
            },
            "above_chance": {
                **overall_difference(runs, a, b, kept, clusters, n_resamples, seed),
                "task_list": kept,
            },
        }
    return out


def questions_frame(answers: Mapping[str, Mapping[str, Mapping]]) -> pd.DataFrame:
    """:func:`answer_questions` as a table in percentage points: one row per comparison and task set,
    with the mean, the 95 % interval, the number of tasks and the per-seed differences."""
    rows = []
    for name, sets in answers.items():
        for which, d in sets.items():
            rows.append(
                {
                    "comparison": name,
                    "tasks": {"all": "all", "above_chance": "above chance"}[which],
                    "n tasks": d["tasks"],
                    "mean": 100 * d["mean"],
                    "low": 100 * d["low"],
                    "high": 100 * d["high"],
                    "per seed": ", ".join(f"{100 * v:+.1f}" for v in d["per_seed"]),
                }
            )
    return pd.DataFrame(rows).set_index(["comparison", "tasks"]).round(1)


def answer_sentences(
    answer: Mapping[str, Mapping], paper_says_it_helps: bool, what: str
) -> str:
    """The verdicts of one :func:`answer_questions` entry, over all tasks and over the tasks above chance,
    and the tasks the second leaves out."""
    left_out = [
        t
        for t in answer["all"]["task_list"]
        if t not in answer["above_chance"]["task_list"]
    ]
    return "\n".join(
        [
            compare_with_paper(
                answer["all"], paper_says_it_helps, f"{what}, all tasks"
            ),
            compare_with_paper(
                answer["above_chance"],
                paper_says_it_helps,
                f"{what}, tasks above chance",
            ),
            f"  left out as at or below chance: {', '.join(left_out) or 'none'}",
        ]
    )


def compare_with_paper(diff: Mapping, paper_says_it_helps: bool, what: str) -> str:
    """One sentence: how an interval (``mean``, ``low``, ``high``, fractions) reads (``stats.verdict``:
    above zero, below zero, or not detectable at this size), and whether that agrees with the paper's
    answer ("it helps" or "it does not help")."""
    from medvae_lib import stats

    if not np.isfinite(diff.get("mean", float("nan"))):
        return f"{what}: no task to compare."
    reading = stats.verdict(
        {k: 100 * diff[k] for k in ("mean", "low", "high")}, " points"
    )
    if diff["low"] > 0:
        agreement = (
            "agrees with the paper"
            if paper_says_it_helps
            else "disagrees with the paper"
        )
    elif diff["high"] < 0:
        agreement = (
            "disagrees with the paper"
            if paper_says_it_helps
            else "agrees with the paper"
        )
    elif paper_says_it_helps:
        agreement = "does not confirm the paper's gain"
    else:
        agreement = "is consistent with the paper (a gain up to the interval's upper end is not excluded)"
    return f"{what}: {reading}; this {agreement}."


def plot_differences(diffs: Mapping[str, pd.DataFrame], title: str, ax=None):
    """One panel: paired differences with 95 % intervals per task, one colour per
    comparison. Its text is 9-10 pt: drawn at 100 dpi in a figure at most 6.8 in wide
    (the page's column), for instance ``plt.subplots(figsize=(6.8, 4.2))``, it reads at
    9 pt or more."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.8, 4.2), dpi=100)
    tasks = list(next(iter(diffs.values()))["task"])
    width = 0.8 / len(diffs)
    for i, (name, d) in enumerate(diffs.items()):
        x = np.arange(len(tasks)) + (i - (len(diffs) - 1) / 2) * width
        ax.errorbar(
            x,
            100 * d["difference"],
            yerr=[
                100 * (d["difference"] - d["low"]),
                100 * (d["high"] - d["difference"]),
            ],
            fmt="o",
            ms=4,
            capsize=2,
            label=name,
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=60, ha="right")
    ax.tick_params(labelsize=9)
    ax.set_ylabel("difference\n(percentage points)", fontsize=10)
    # the legend in a row between the title and the panel, clear of the points
    ax.set_title(title, fontsize=10, pad=20)
    ax.legend(
        fontsize=9,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=len(diffs),
        frameon=False,
        borderaxespad=0.1,
    )
    if fig is not None:
        fig.tight_layout()
    return ax
