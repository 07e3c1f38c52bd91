"""Chapter 8's exercise checks accept the right answer and reject plausible wrong ones."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medvae_lib import contrastive_benchmark as cb
from medvae_lib import exercises


def _retrieval_case():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(30, 30))
    sim[np.arange(30), np.arange(30)] += 1.0  # a weakly aligned model
    positives = np.eye(30, dtype=bool)
    positives[0, 1] = positives[1, 0] = True  # two images share a caption
    return sim, positives


def test_check_08_1_accepts_recall_at_5_and_rejects_common_mistakes(capsys):
    sim, pos = _retrieval_case()
    right = cb.recall_at_k(sim, pos, (5,))[5].mean()
    assert exercises.check_08_1(right, sim, pos)
    assert "Right" in capsys.readouterr().out
    recall1 = cb.recall_at_k(sim, pos, (1,))[1].mean()
    assert recall1 != right
    assert not exercises.check_08_1(recall1, sim, pos)
    assert "recall@1" in capsys.readouterr().out
    assert not exercises.check_08_1(100 * right, sim, pos)
    assert "percentage" in capsys.readouterr().out
    t2i = cb.recall_at_k(sim.T, pos.T, (5,))[5].mean()
    if t2i != right:
        assert not exercises.check_08_1(t2i, sim, pos)


def test_check_08_2_accepts_the_first_template_and_rejects_the_ensemble(capsys):
    g = torch.Generator().manual_seed(0)
    prompts = torch.randn(5, 4, 16, generator=g)
    images = F.normalize(
        prompts.mean(1)[torch.arange(40) % 5] + 1.5 * torch.randn(40, 16, generator=g),
        dim=-1,
    )
    labels = np.arange(40) % 5
    single = float(
        (
            cb.zero_shot_predict(images, F.normalize(prompts[:, 0], dim=-1)) == labels
        ).mean()
    )
    ensemble = float(
        (cb.zero_shot_predict(images, cb.class_embeddings(prompts)) == labels).mean()
    )
    assert single != ensemble  # the case distinguishes the two answers
    assert exercises.check_08_2(single, images, prompts, labels)
    assert "Right" in capsys.readouterr().out
    assert not exercises.check_08_2(ensemble, images, prompts, labels)
    assert "ensemble" in capsys.readouterr().out
