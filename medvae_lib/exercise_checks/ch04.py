"""Checks for the exercises of chapter 4 (latents downstream). Each refits what it needs on the training
split and scores on the validation split only, and names the usual slip."""

from __future__ import annotations

import numpy as np

from ..exercises import answer_check, close, number, number_mapping, report
from ..latent_downstream import auroc, linear_probe, probe_scores


def probe_auroc_at(inputs: dict, train_y, val_y, c: float) -> dict[str, float]:
    """Validation AUROC of a linear probe with a fixed ``C`` on each input."""
    return {
        name: float(
            linear_probe(x["train"], train_y, x["val"], val_y, cs=(c,))[1][
                "validation AUROC"
            ].iloc[0]
        )
        for name, x in inputs.items()
    }


@answer_check(number_mapping("the AUROC", "give a dict {input name: validation AUROC}"))
def check_04_1(got: dict[str, float], inputs: dict, train_y, val_y) -> bool:
    """``answer``: {input name: validation AUROC of a linear probe with C = 1.0}."""
    if set(got) != set(inputs):
        return report(
            False,
            "",
            f"give a dict with one validation AUROC per input: keys {sorted(inputs)}",
        )
    expected = probe_auroc_at(inputs, train_y, val_y, 1.0)
    if all(close(got[n], expected[n], rtol=1e-3) for n in expected):
        return report(
            True,
            "compare each with the best C of section 4.2 to see which input needs regularising.",
            "",
        )
    return report(
        False,
        "",
        "fit latent_downstream.linear_probe(train, train_y, val, val_y, cs=(1.0,)) for each input and read "
        "its table's validation AUROC",
    )


def stage1_probe_scores(inputs: dict, train_y, val_y) -> np.ndarray:
    """Validation scores of the stage-1 latent's linear probe, C chosen on validation AUROC."""
    x = inputs["stage-1 latent"]
    probe, _ = linear_probe(x["train"], train_y, x["val"], val_y)
    return probe_scores(probe, x["val"])


@answer_check(number("the share of pairs"))
def check_04_2(value: float, inputs: dict, train_y, val_y) -> bool:
    """``answer``: for the stage-1 latent's probe, the share of (pneumonia, normal) validation pairs in which
    the pneumonia image scores higher (ties count one half)."""
    scores = stage1_probe_scores(inputs, train_y, val_y)
    labels = np.asarray(val_y).ravel()
    expected = auroc(labels, scores)
    if close(value, expected, rtol=1e-6, atol=1e-9):
        return report(
            True,
            "that share is the AUROC: the probability that a random positive outranks a random negative.",
            "",
        )
    accuracy = float(np.mean((scores > 0) == (labels == 1)))
    if close(value, accuracy, rtol=1e-6):
        return report(
            False,
            "",
            "that is the accuracy at score 0; compare every pneumonia score with every normal score",
        )
    if close(value, 1 - expected, rtol=1e-6):
        return report(
            False, "", "you counted the pairs in which the normal image scores higher"
        )
    return report(
        False,
        "",
        "take all pairs (pneumonia image, normal image): count 1 where the pneumonia score is higher, 1/2 for a "
        "tie, and divide by the number of pairs",
    )
