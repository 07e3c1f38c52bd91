"""Evaluating a trained model on a bench: its embeddings, every task's per-item scores
(:func:`evaluate`), each scored item's independent unit, and each task's chance
level."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .bench import Bench
from .datasets import normalise_case_uid
from .metrics import (
    class_embeddings,
    linear_probe,
    recall_at_k,
    retrieval_chance,
    vqa_scores,
    zero_shot_predict,
)
from .models import DualEncoder
from .settings import ZERO_SHOT_TASKS
from .text_encoder import TextFeatures


@torch.no_grad()
def embed_images(
    model: DualEncoder, images: torch.Tensor, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """(projected normalised embeddings, encoder features) of images, in batches on the model's device;
    returned on the CPU."""
    device = next(model.parameters()).device
    embs, feats = [], []
    for i in range(0, len(images), batch):
        e, f, _ = model.embed_image(images[i : i + batch].float().to(device))
        embs.append(e.cpu())
        feats.append(f.cpu())
    return torch.cat(embs), torch.cat(feats)


@torch.no_grad()
def embed_texts(model: DualEncoder, text: TextFeatures) -> torch.Tensor:
    device = next(model.parameters()).device
    return model.embed_text(text.tokens.to(device), text.mask.to(device)).cpu()


def evaluate(
    model: DualEncoder, bench: Bench, split: str = "test", seed: int = 0
) -> dict[str, np.ndarray]:
    """Every task's per-item scores on ``split`` (``"test"`` for the final numbers, ``"val"`` to choose)."""
    data, table = bench.data, bench.data.table
    tr, ev = data.indices("train"), data.indices(split)
    img_emb, img_feat = embed_images(model, data.images)
    cap_emb = embed_texts(model, bench.captions)
    out: dict[str, np.ndarray] = {}
    for task, (column, _classes, _) in ZERO_SHOT_TASKS.items():
        feats, n_cls, n_tpl, labels = bench.prompts[task]
        cls_emb = class_embeddings(embed_texts(model, feats).reshape(n_cls, n_tpl, -1))
        keep_ev, keep_tr = (
            _label_rows(table, ev, column, labels),
            _label_rows(table, tr, column, labels),
        )
        y_ev = (
            table[column]
            .iloc[keep_ev]
            .map({lab: i for i, lab in enumerate(labels)})
            .to_numpy()
        )
        y_tr = (
            table[column]
            .iloc[keep_tr]
            .map({lab: i for i, lab in enumerate(labels)})
            .to_numpy()
        )
        out[f"zero_shot.{task}"] = (
            zero_shot_predict(img_emb[keep_ev], cls_emb) == y_ev
        ).astype(float)
        out[f"probe.{task}"] = linear_probe(
            img_feat[keep_tr],
            y_tr,
            img_feat[keep_ev],
            y_ev,
            bench.settings["probe_c"],
            seed,
        )
    # PneumoniaMNIST and BreastMNIST: zero-shot and probe on modalities (chest X-ray, breast ultrasound)
    # that no method saw in training; their own test splits.
    for task, sets in bench.external.items():
        feats, n_cls, n_tpl, _ = bench.prompts[task]
        cls_emb = class_embeddings(embed_texts(model, feats).reshape(n_cls, n_tpl, -1))
        (xtr, ytr), (xte, yte) = sets["train"], sets["test"]
        _, f_tr = embed_images(model, xtr)
        e_te, f_te = embed_images(model, xte)
        out[f"zero_shot.{task}"] = (zero_shot_predict(e_te, cls_emb) == yte).astype(
            float
        )
        out[f"probe.{task}"] = linear_probe(
            f_tr, ytr, f_te, yte, bench.settings["probe_c"], seed
        )
    # Retrieval against the whole split's gallery; identical captions count as the same positive.
    caps = table["caption"].to_numpy()[ev]
    positives = caps[:, None] == caps[None, :]
    sim = (img_emb[ev] @ cap_emb[ev].T).numpy()
    for k, hits in recall_at_k(sim, positives).items():
        out[f"i2t.r{k}"] = hits
    for k, hits in recall_at_k(sim.T, positives.T).items():
        out[f"t2i.r{k}"] = hits
    # VQA: answer classifier on frozen [image embedding, question embedding].
    vqa = data.vqa
    q_emb = embed_texts(model, bench.questions)
    x = torch.cat(
        [img_emb[torch.tensor(vqa["row"].to_numpy(), dtype=torch.long)], q_emb], 1
    ).numpy()
    out.update(vqa_tasks(x, vqa, split))
    return out


def vqa_tasks(
    x: np.ndarray, vqa: pd.DataFrame, split: str = "test"
) -> dict[str, np.ndarray]:
    """Per-question correctness on ``split`` for closed and for open questions (``x``:
    one feature row per row of ``vqa``). Closed questions are answered by a classifier
    trained on the closed training questions, so from closed answers only (yes, no,
    ...), as the VQA literature scores them; open questions by one trained on the open
    ones."""
    answers = vqa_answers(vqa)
    closed = (vqa["answer_type"] == "CLOSED").to_numpy()
    is_tr = (vqa["medpix2_split"] == "train").to_numpy()
    is_ev = (vqa["medpix2_split"] == split).to_numpy()
    out = {}
    for name, kind in (("vqa.closed", closed), ("vqa.open", ~closed)):
        tr_q, ev_q = is_tr & kind, is_ev & kind
        out[name] = vqa_scores(x[tr_q], answers[tr_q], x[ev_q], answers[ev_q])
    return out


def vqa_answers(vqa: pd.DataFrame) -> np.ndarray:
    """Answers as the VQA tasks compare them: lower case, surrounding spaces removed ("Yes" is "yes")."""
    return vqa["answer"].astype(str).str.lower().str.strip().to_numpy()


def _label_rows(
    table: pd.DataFrame, rows: np.ndarray, column: str, labels: Sequence
) -> np.ndarray:
    """The rows of ``rows`` whose ``column`` is one of a task's class ``labels`` (the items it scores)."""
    return rows[table[column].iloc[rows].isin(labels).to_numpy()]


def item_clusters(bench: Bench, split: str = "test") -> dict[str, np.ndarray]:
    """For every task of :func:`evaluate`, the independent unit of each scored item, in the same order:
    the (normalised) MedPix case of the image for MedPix tasks (images of one case share a patient),
    ``"<task>:<index>"`` for the MedMNIST test images (one image per unit; zero-shot and probe of one
    set share the labels). Interval functions resample these, never the items alone."""
    table = bench.data.table
    case = normalise_case_uid(table["case_uid"]).to_numpy()
    ev = bench.data.indices(split)
    out: dict[str, np.ndarray] = {}
    for task, (column, _classes, _) in ZERO_SHOT_TASKS.items():
        labels = bench.prompts[task][3]
        out[f"zero_shot.{task}"] = out[f"probe.{task}"] = case[
            _label_rows(table, ev, column, labels)
        ]
    for task, sets in bench.external.items():
        ids = np.array([f"{task}:{i}" for i in range(len(sets["test"][1]))])
        out[f"zero_shot.{task}"] = out[f"probe.{task}"] = ids
    for direction in ("i2t", "t2i"):
        for k in (1, 5, 10):
            out[f"{direction}.r{k}"] = case[ev]
    vqa = bench.data.vqa
    closed = (vqa["answer_type"] == "CLOSED").to_numpy()
    is_ev = (vqa["medpix2_split"] == split).to_numpy()
    rows = vqa["row"].to_numpy()
    out["vqa.closed"] = case[rows[is_ev & closed]]
    out["vqa.open"] = case[rows[is_ev & ~closed]]
    return out


def chance_levels(bench: Bench, split: str = "test") -> pd.Series:
    """Every task's score without information, on ``split``: for a classification task (zero-shot,
    probe, VQA) the majority-class rate of its scored items (always answering the most frequent class,
    or answer, of the split itself, an upper bound on what a constant guess can score); for retrieval
    :func:`retrieval_chance` on the split's captions."""
    table = bench.data.table
    ev = bench.data.indices(split)

    def majority(values) -> float:
        return float(pd.Series(values).value_counts(normalize=True).iloc[0])

    out: dict[str, float] = {}
    for task, (column, _classes, _) in ZERO_SHOT_TASKS.items():
        labels = bench.prompts[task][3]
        out[f"zero_shot.{task}"] = out[f"probe.{task}"] = majority(
            table[column].iloc[_label_rows(table, ev, column, labels)]
        )
    for task, sets in bench.external.items():
        out[f"zero_shot.{task}"] = out[f"probe.{task}"] = majority(
            np.asarray(sets["test"][1]).ravel()
        )
    out.update(retrieval_chance(table["caption"].to_numpy()[ev]))
    vqa = bench.data.vqa
    answers, closed = vqa_answers(vqa), (vqa["answer_type"] == "CLOSED").to_numpy()
    is_ev = (vqa["medpix2_split"] == split).to_numpy()
    out["vqa.closed"] = majority(answers[is_ev & closed])
    out["vqa.open"] = majority(answers[is_ev & ~closed])
    return pd.Series(out, name="chance")
