"""Checks for the exercises of chapter 8 (contrastive benchmark). Each check recomputes the answer from
the same validation-split arrays the student used, with the library's own evaluation functions."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import contrastive_benchmark as cb
from ..exercises import answer_check, close, number, report


@answer_check(number("recall@5"))
def check_08_1(value: float, similarity, positives) -> bool:
    """``answer``: image-to-text recall@5 on the validation gallery, where every caption identical to the
    query's own counts as a hit. ``similarity`` is (images, captions), ``positives`` the boolean matrix."""
    sim, pos = np.asarray(similarity, dtype=float), np.asarray(positives, dtype=bool)
    expected = float(cb.recall_at_k(sim, pos, (5,))[5].mean())
    if close(value, expected, rtol=1e-6, atol=1e-9):
        return report(
            True,
            "that is recall@5, the share of images with a positive caption among their 5 best.",
            "",
        )
    if close(value, 100 * expected, rtol=1e-6):
        return report(
            False, "", "that looks like a percentage; give a fraction between 0 and 1"
        )
    if close(value, float(cb.recall_at_k(sim, pos, (1,))[1].mean()), rtol=1e-6):
        return report(
            False,
            "",
            "that is recall@1; count a hit when a positive is among the 5 best captions",
        )
    diag = np.eye(len(sim), dtype=bool)
    if close(value, float(cb.recall_at_k(sim, diag, (5,))[5].mean()), rtol=1e-6):
        return report(
            False,
            "",
            "that counts only the image's own row as positive; identical captions are positives too",
        )
    if close(value, float(cb.recall_at_k(sim.T, pos.T, (5,))[5].mean()), rtol=1e-6):
        return report(
            False,
            "",
            "that is text-to-image; rank captions (columns) for each image (row)",
        )
    return report(
        False,
        "",
        "rank each row of the similarity matrix and ask whether a positive is among its 5 largest",
    )


def single_template_accuracy(
    image_embeddings, prompt_embeddings, labels, template: int = 0
) -> float:
    """Zero-shot accuracy when each class is described by one template only."""
    p = torch.as_tensor(prompt_embeddings, dtype=torch.float32)
    class_emb = F.normalize(p[:, template], dim=-1)
    pred = cb.zero_shot_predict(
        torch.as_tensor(image_embeddings, dtype=torch.float32), class_emb
    )
    return float((pred == np.asarray(labels)).mean())


@answer_check(number("accuracy"))
def check_08_2(value: float, image_embeddings, prompt_embeddings, labels) -> bool:
    """``answer``: validation zero-shot accuracy of body region with each class described only by its
    first template. ``prompt_embeddings`` is (classes, templates, d)."""
    expected = single_template_accuracy(image_embeddings, prompt_embeddings, labels, 0)
    if close(value, expected, rtol=1e-6, atol=1e-9):
        return report(
            True,
            "that is the first template alone; compare it with the ensemble of all templates.",
            "",
        )
    p = torch.as_tensor(prompt_embeddings, dtype=torch.float32)
    ensemble = cb.zero_shot_predict(
        torch.as_tensor(image_embeddings, dtype=torch.float32), cb.class_embeddings(p)
    )
    if close(value, float((ensemble == np.asarray(labels)).mean()), rtol=1e-6):
        return report(
            False,
            "",
            "that is the ensemble of all templates; keep only template 0 (prompt_embeddings[:, 0])",
        )
    others = [
        single_template_accuracy(image_embeddings, p, labels, t)
        for t in range(1, p.shape[1])
    ]
    if any(close(value, o, rtol=1e-6) for o in others):
        return report(
            False,
            "",
            "that is another template; the exercise asks for the first one (index 0)",
        )
    return report(
        False,
        "",
        "normalise each class's first-template embedding and take the most similar class per image",
    )
