"""The 3D downstream task: the same linear probe on a MedMNIST 3D set's voxels, on its
3D latents and on an area resize of the latent's size, with the time of its fit and
of its predictions."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..medvae_stage1 import to_model_range
from ..models import get_config
from .volumes import check_volume


@torch.no_grad()
def encode_volumes(
    autoencoder, volumes: torch.Tensor, batch_size: int = 32, device="cpu"
) -> torch.Tensor:
    """Posterior means of (N, 1, X, Y, Z) volumes in [0, 1], batch by batch."""
    check_volume(volumes, None)
    autoencoder.eval()
    return torch.cat(
        [
            autoencoder.encode(to_model_range(b.to(device)))[0].cpu()
            for b in volumes.split(batch_size)
        ]
    )


def timed_probe(train_x, train_y, val_x, val_y, test_x, cs, seed: int = 0):
    """:func:`~medvae_lib.latent_downstream.linear_probe` (C chosen on validation AUROC), then the chosen C
    refitted on the training inputs with a clock around the fit and around the test predictions: returns
    the test scores, the validation table, the fit seconds and the test volumes scored per second."""
    from sklearn.base import clone

    from ..latent_downstream import flatten, linear_probe, probe_scores

    probe, table = linear_probe(train_x, train_y, val_x, val_y, cs=cs, seed=seed)
    xt, yt = flatten(torch.as_tensor(train_x)), torch.as_tensor(train_y).numpy()
    again = clone(probe)
    start = time.perf_counter()
    again.fit(xt, yt)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = probe_scores(again, test_x)
    predict_rate = len(test_x) / max(time.perf_counter() - start, 1e-9)
    return scores, table, fit_seconds, predict_rate


def shrink_volumes(volumes: torch.Tensor, factor: int) -> torch.Tensor:
    """Area-average (N, 1, X, Y, Z) volumes down by ``factor`` per side: a resize holding as many values as
    a one-channel latent."""
    return F.interpolate(volumes, scale_factor=1 / factor, mode="area")


def downstream_comparison(
    autoencoder,
    model: str,
    dataset: str,
    key: str,
    size: int,
    cs,
    n_train=None,
    seed=0,
    device="cpu",
):
    """The same linear probe (:func:`timed_probe`) on a MedMNIST 3D set's voxels, on its 3D latents
    (posterior means of ``autoencoder``) and on an area resize to the latent's size; C chosen on the
    validation split, scored once on the test split. Returns ``{"labels", "scores": {input: test scores},
    "validation": {input: table}, "fit_seconds", "predict_rate", "shapes"}``. Binary sets give decision
    values; for a multi-class set the scores are the probe's class probabilities (N, classes)."""
    from .. import data_prep

    factor = get_config(model).factor
    splits = data_prep.prepare_splits(
        dataset, key, size, n={"train": n_train}, seed=seed
    )
    inputs = {"voxels": {}, "latent": {}, "resize": {}}
    labels = {}
    for split, (x, y) in splits.items():
        check_volume(x, factor)
        inputs["voxels"][split] = x
        inputs["latent"][split] = encode_volumes(autoencoder, x, device=device)
        inputs["resize"][split] = shrink_volumes(x, factor)
        labels[split] = y
    binary = set(torch.unique(labels["train"]).tolist()) <= {0, 1}
    out = {
        "labels": labels["test"].numpy(),
        "scores": {},
        "validation": {},
        "fit_seconds": {},
        "predict_rate": {},
    }
    out["shapes"] = {kind: tuple(v["train"].shape[1:]) for kind, v in inputs.items()}
    for kind, x in inputs.items():
        if binary:
            scores, table, fit_s, rate = timed_probe(
                x["train"],
                labels["train"],
                x["val"],
                labels["val"],
                x["test"],
                cs,
                seed,
            )
        else:
            scores, table, fit_s, rate = multiclass_probe(x, labels, cs, seed)
        out["scores"][kind], out["validation"][kind] = scores, table
        out["fit_seconds"][kind], out["predict_rate"][kind] = fit_s, rate
    return out


def multiclass_probe(x: dict, labels: dict, cs, seed: int = 0):
    """A multinomial logistic-regression probe (standardised inputs, C chosen by validation macro
    one-vs-rest AUROC); returns test class probabilities, the validation table, fit seconds, test rate."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..latent_downstream import flatten

    xt, xv, xs = (flatten(x[s]) for s in ("train", "val", "test"))
    yt, yv = labels["train"].numpy(), labels["val"].numpy()
    table, fits = [], {}
    for c in cs:
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)
        )
        start = time.perf_counter()
        model.fit(xt, yt)
        fits[c] = (model, time.perf_counter() - start)
        auc = roc_auc_score(
            yv, model.predict_proba(xv), multi_class="ovr", labels=model.classes_
        )
        table.append({"C": c, "validation AUROC": auc})
    table = pd.DataFrame(table)
    model, fit_seconds = fits[table.loc[table["validation AUROC"].idxmax(), "C"]]
    start = time.perf_counter()
    probabilities = model.predict_proba(xs)
    return (
        probabilities,
        table,
        fit_seconds,
        len(xs) / max(time.perf_counter() - start, 1e-9),
    )
