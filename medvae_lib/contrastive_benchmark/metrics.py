"""Per-item scores on frozen embeddings: zero-shot prediction, recall@k and its chance
level, the linear probe and the VQA answer classifier."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .settings import BenchmarkError


def class_embeddings(prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """Zero-shot class embeddings as mmlearn computes them: normalise each prompt's
    embedding, average over a class's templates, normalise again. ``prompt_embeddings``
    is (classes, templates, d)."""
    if prompt_embeddings.ndim != 3:
        raise BenchmarkError(
            f"prompt embeddings must be (classes, templates, dim), got {tuple(prompt_embeddings.shape)}"
        )
    return F.normalize(F.normalize(prompt_embeddings, dim=-1).mean(1), dim=-1)


def zero_shot_predict(
    image_embeddings: torch.Tensor, class_emb: torch.Tensor
) -> np.ndarray:
    """The class whose embedding has the highest cosine similarity with each image."""
    return (F.normalize(image_embeddings, dim=-1) @ class_emb.T).argmax(1).numpy()


def recall_at_k(
    similarity: np.ndarray, positives: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, np.ndarray]:
    """Per query (row): 1.0 if any of its positives (boolean matrix, same shape) is
    among the ``k`` highest-scoring gallery items (columns), else 0.0; ties are broken
    against the query."""
    similarity, positives = (
        np.asarray(similarity, dtype=float),
        np.asarray(positives, dtype=bool),
    )
    if not np.isfinite(similarity).all():
        raise BenchmarkError("similarities contain NaN or infinite values: no ranking")
    if similarity.shape != positives.shape:
        raise BenchmarkError(
            f"similarity {similarity.shape} and positives {positives.shape} differ in shape"
        )
    if not positives.any(1).all():
        raise BenchmarkError("every query needs at least one positive in the gallery")
    best_pos = np.where(positives, similarity, -np.inf).max(1)
    rank = (np.where(positives, -np.inf, similarity) >= best_pos[:, None]).sum(
        1
    )  # negatives at or above it
    return {k: (rank < k).astype(float) for k in ks}


def retrieval_chance(
    captions: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
    n_draws: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """The recall@k that embeddings knowing nothing would score on this gallery, in both directions, as
    :func:`evaluate` scores them: i.i.d. random similarities between every image and every *distinct*
    caption (identical captions have identical embeddings, so their scores tie), identical captions as
    positives, :func:`recall_at_k`; the mean over ``n_draws`` draws. With every caption distinct this is
    k / n; shared captions change it, and differently for image -> text (a shared caption is one gallery
    score) and text -> image (each of its images is a gallery item of its own)."""
    caps = np.asarray([str(c) for c in captions])
    _, group = np.unique(caps, return_inverse=True)
    positives = caps[:, None] == caps[None, :]
    rng = np.random.default_rng(seed)
    total = {f"{d}.r{k}": 0.0 for d in ("i2t", "t2i") for k in ks}
    for _ in range(n_draws):
        sim = rng.random((len(caps), group.max() + 1))[:, group]
        for direction, (s, p) in {
            "i2t": (sim, positives),
            "t2i": (sim.T, positives.T),
        }.items():
            for k, hits in recall_at_k(s, p, ks).items():
                total[f"{direction}.r{k}"] += float(hits.mean()) / n_draws
    return total


def linear_probe(
    train_x, train_y, test_x, test_y, c: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Per-test-item correctness of a logistic-regression probe (standardised features) on frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=500, random_state=seed)
    )
    probe.fit(np.asarray(train_x), np.asarray(train_y))
    return (probe.predict(np.asarray(test_x)) == np.asarray(test_y)).astype(float)


def vqa_scores(
    train_x, train_answers, test_x, test_answers, alpha: float = 1.0
) -> np.ndarray:
    """Per-test-question correctness of an answer classifier (a ridge classifier, one-vs-rest over the
    answers seen in training: closed form, fast with hundreds of answers) on frozen [image, question]
    embeddings; an answer never seen in training counts as wrong."""
    from sklearn.linear_model import RidgeClassifier

    clf = RidgeClassifier(alpha=alpha)
    clf.fit(np.asarray(train_x), np.asarray(train_answers))
    return (clf.predict(np.asarray(test_x)) == np.asarray(test_answers)).astype(float)
