"""Checks for the exercises of chapter 7 (personalised invariant representation). Each check recomputes the
answer from the model and the validation samples it is given."""

from __future__ import annotations

import numpy as np

from .. import personalized_invariant as pi
from ..exercises import answer_check, choice, graded, number, report


def protocol_gap(model, samples, settings) -> float:
    """Cross-contrast PSNR of the released evaluation (background pasted from the truth, whole image) minus
    the brain-mask PSNR, averaged over the 12 source != target pairs and the samples."""
    paper = pi.off_diagonal_mean(
        pi.paper_protocol_scores(model, samples, settings)["psnr"]
    ).mean()
    brain = pi.off_diagonal_mean(
        pi.synthesis_scores(model, samples, settings)["psnr"]
    ).mean()
    return float(paper - brain)


@answer_check(number("the PSNR gap in dB"))
def check_07_1(value: float, model, samples, settings) -> bool:
    """``answer``: how many dB the paper's protocol adds to the cross-contrast PSNR on these samples."""
    expected = protocol_gap(model, samples, settings)
    right = (
        "every background voxel counts as perfect under the paper's protocol, so the smaller the brain's share "
        "of the image, the more dB it adds, whatever the model learned."
    )
    return graded(
        value,
        [
            (expected, True, right),
            (
                -expected,
                False,
                "the sign is the other way round: paper's protocol minus brain mask",
            ),
        ],
        "score the same model on the same validation samples with pi.paper_protocol_scores and pi.synthesis_scores, "
        "take the mean of pi.off_diagonal_mean of each 'psnr' and subtract",
        atol=1e-3,
    )


def hardest_target(psnr: np.ndarray) -> str:
    """The target contrast with the lowest PSNR when synthesised from the other three contrasts."""
    k = len(pi.CONTRASTS)
    means = [np.mean([psnr[s, t].mean() for s in range(k) if s != t]) for t in range(k)]
    return pi.CONTRASTS[int(np.argmin(means))]


@answer_check(choice(pi.CONTRASTS, f"answer with one of {list(pi.CONTRASTS)}"))
def check_07_2(answer: str, psnr: np.ndarray) -> bool:
    """``answer``: the contrast ('t1', 't1c', 't2' or 'flair') that is hardest to synthesise from the others,
    given validation PSNR scores (4 sources, 4 targets, samples)."""
    expected = hardest_target(psnr)
    if answer == expected:
        return report(
            True,
            "that is the contrast the other three predict worst on these slices.",
            "",
        )
    k = len(pi.CONTRASTS)
    worst_source = pi.CONTRASTS[
        int(
            np.argmin(
                [
                    np.mean([psnr[s, t].mean() for t in range(k) if t != s])
                    for s in range(k)
                ]
            )
        )
    ]
    if answer == worst_source:
        return report(
            False,
            "",
            "that is the worst *source* (a row); the question asks for the worst *target* (a column)",
        )
    return report(
        False,
        "",
        "average each column of the PSNR matrix without its diagonal and take the lowest",
    )


def swap_loss(model, samples, donors) -> float:
    """Cross-contrast PSNR (mean of the 12 pairs and the samples) of the model as it is, minus that with
    each sample's X_h replaced by the X_h of the donor sample (the skips of the sample kept)."""
    kept = pi.synthesise_with_x_h(model, samples)
    swapped = pi.synthesise_with_x_h(model, samples, "swap", donors)
    kept, swapped = (
        pi.off_diagonal_mean(pi.scores_of(p, samples)).mean() for p in (kept, swapped)
    )
    return float(kept - swapped)


@answer_check(number("the PSNR lost in dB"))
def check_07_4(value: float, model, samples, donors) -> bool:
    """``answer``: the dB of cross-contrast PSNR lost when each sample gets the donor's X_h."""
    expected = swap_loss(model, samples, donors)
    right = (
        "that is what this decoder loses when a slice gets another person's X_h; compare it with the "
        "within-person swap of section 7.8 before calling X_h personal."
    )
    return graded(
        value,
        [
            (expected, True, right),
            (
                -expected,
                False,
                "the sign is the other way round: as it is minus swapped",
            ),
        ],
        "score pi.synthesise_with_x_h(model, samples) and the same with 'swap' and the donors with "
        "pi.scores_of, take the mean of pi.off_diagonal_mean of each and subtract",
        atol=1e-3,
    )
