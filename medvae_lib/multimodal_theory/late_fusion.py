"""Late fusion on the brain patches: the ``LateFusion`` model, its training (one subset
or several batched), scores and refitted heads, and the sweep over held-out people,
training fractions, seeds and subsets."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .settings import BRAIN_MODALITIES, parse_subset


class LateFusion:
    """One small MLP encoder per modality (``patch**2 -> hidden -> rep_dim``), their
    outputs concatenated, and a linear logistic head: the paper's late fusion.
    Modalities outside the subset are zeroed at the input (the paper's ``p_M``), so
    every subset has the same architecture."""

    def __init__(self, n_inputs: int, hidden: int, rep_dim: int, seed: int):
        import torch

        torch.manual_seed(seed)
        self.encoders = torch.nn.ModuleDict(
            {
                c: torch.nn.Sequential(
                    torch.nn.Linear(n_inputs, hidden),
                    torch.nn.ReLU(),
                    torch.nn.Linear(hidden, rep_dim),
                )
                for c in BRAIN_MODALITIES
            }
        )
        self.head = torch.nn.Linear(rep_dim * len(BRAIN_MODALITIES), 1)

    def encode(self, x: dict, subset):
        import torch

        keep = set(parse_subset(subset, BRAIN_MODALITIES))
        parts = [
            self.encoders[c](x[c] if c in keep else torch.zeros_like(x[c]))
            for c in BRAIN_MODALITIES
        ]
        return torch.cat(parts, dim=1)


def _tensors(x: dict, rows=None):
    import torch

    return {c: torch.as_tensor(v if rows is None else v[rows]) for c, v in x.items()}


def train_late_fusion(
    x: dict,
    y: np.ndarray,
    subset,
    hidden: int,
    rep_dim: int,
    steps: int,
    lr: float,
    seed: int,
):
    """ERM of head∘encoders on one training sample (full-batch Adam on the logistic loss)."""
    import torch

    model = LateFusion(next(iter(x.values())).shape[1], hidden, rep_dim, seed)
    params = [*model.encoders.parameters(), *model.head.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    xt, yt = _tensors(x), torch.as_tensor(y, dtype=torch.float32)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model.head(model.encode(xt, subset))[:, 0], yt
        )
        loss.backward()
        opt.step()
    return model


def train_late_fusion_subsets(
    x: dict,
    y: np.ndarray,
    subsets,
    hidden: int,
    rep_dim: int,
    steps: int,
    lr: float,
    seed: int,
) -> dict:
    """:func:`train_late_fusion` for several subsets at once: the same initial weights (``seed``) and
    data, one independent model per subset, stacked into batched matrix products so that small
    samples do not pay the per-step overhead once per subset. Adam acts on each number separately and
    the loss is a sum of the models' losses, so each model follows its own training run (up to float
    rounding). Returns ``{subset: LateFusion}``."""
    import torch

    names = ["+".join(parse_subset(s, BRAIN_MODALITIES)) for s in subsets]
    template = LateFusion(next(iter(x.values())).shape[1], hidden, rep_dim, seed)
    n = len(names)

    def stack(
        t,
    ):  # (out, in) weight or (out,) bias -> (n, in, out) or (n, 1, out), trainable
        t = t.detach()
        t = t.T if t.ndim == 2 else t[None, :]
        return torch.nn.Parameter(t.unsqueeze(0).repeat(n, 1, 1).contiguous())

    enc = {
        c: [stack(layer.weight) for layer in (e[0], e[2])]
        + [stack(e[0].bias), stack(e[2].bias)]
        for c, e in template.encoders.items()
    }
    head_w, head_b = stack(template.head.weight), stack(template.head.bias)
    params = [p for c in BRAIN_MODALITIES for p in enc[c]] + [head_w, head_b]
    keep = torch.tensor(
        [
            [float(c in parse_subset(s, BRAIN_MODALITIES)) for c in BRAIN_MODALITIES]
            for s in names
        ]
    )
    xt, yt = _tensors(x), torch.as_tensor(y, dtype=torch.float32).expand(n, -1)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        parts = []
        for j, c in enumerate(BRAIN_MODALITIES):
            w1, w2, b1, b2 = enc[c]
            h = torch.relu(
                torch.baddbmm(b1, xt[c].unsqueeze(0) * keep[:, j, None, None], w1)
            )
            parts.append(torch.baddbmm(b2, h, w2))
        logits = torch.baddbmm(head_b, torch.cat(parts, dim=2), head_w)[..., 0]
        losses = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, yt, reduction="none"
        ).mean(1)
        losses.sum().backward()
        opt.step()
    models = {}
    with torch.no_grad():
        for k, name in enumerate(names):
            model = LateFusion(next(iter(x.values())).shape[1], hidden, rep_dim, seed)
            for c, e in model.encoders.items():
                w1, w2, b1, b2 = enc[c]
                e[0].weight.copy_(w1[k].T), e[2].weight.copy_(w2[k].T)
                e[0].bias.copy_(b1[k, 0]), e[2].bias.copy_(b2[k, 0])
            model.head.weight.copy_(head_w[k].T), model.head.bias.copy_(head_b[k, 0])
            models[name] = model
    return models


def late_fusion_scores(model: LateFusion, x: dict, subset) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.head(model.encode(_tensors(x), subset))[:, 0].numpy()


def refit_risk(model: LateFusion, subset, fit: tuple, test: tuple) -> float:
    """The eta estimate of the paper on real data: the encoders frozen, the best logistic head refitted on a
    large sample ``fit`` (all training patches), its test error (1 - accuracy) on ``test``. eta itself needs
    r(h*∘g*), unknown on real data, so only differences between subsets (gamma_S) are meaningful."""
    import torch
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        u_fit = model.encode(_tensors(fit[0]), subset).numpy()
        u_test = model.encode(_tensors(test[0]), subset).numpy()
    head = LogisticRegression(C=10.0, max_iter=2000).fit(u_fit, fit[1])
    return float(1.0 - head.score(u_test, test[1]))


def refit_correct(model: LateFusion, subset, fit: tuple, tests: list) -> list:
    """:func:`refit_risk` with one refitted head scored on several test samples: for each, which
    patches the head gets right (1 - mean is the refit error)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        head = LogisticRegression(C=10.0, max_iter=2000).fit(
            model.encode(_tensors(fit[0]), subset).numpy(), fit[1]
        )
        return [
            head.predict(model.encode(_tensors(x), subset).numpy()) == y
            for x, y in tests
        ]


def late_fusion_sweep(
    people: dict, settings: dict, seed: int = 0, progress: bool = True
) -> pd.DataFrame:
    """For every held-out person, fraction of the training patches, seed and modality subset: train late
    fusion on that many patches of the other people, and record the test accuracy on the held-out person
    with the per-patch correctness (``correct``, for paired comparisons) and each patch's cluster
    (``groups``: its slice), and the refitted-head error (the eta estimate) on the held-out person and,
    as a control, on patches of the *training* people that no model trained on (``refit error, same
    people``). ``people`` maps a person to ``brain_patches`` output, ``(x, y)`` or ``(x, y, slices)``."""
    from tqdm import (
        tqdm,
    )  # plain tqdm honours TQDM_DISABLE in notebooks (tqdm.auto printed a bar)

    subsets = [
        "+".join(s)
        for r in (1, 2, 3)
        for s in itertools.combinations(BRAIN_MODALITIES, r)
    ]
    unknown = [p for p in settings["test_subjects"] if p not in people]
    if unknown:
        raise ValueError(
            f"held-out people {unknown} are not among the loaded people {sorted(people)}"
        )
    rows = []
    jobs = [
        (t, f, s)
        for t in settings["test_subjects"]
        for f in settings["fractions"]
        for s in range(settings["seeds"])
    ]
    quiet = (
        {} if progress else {"disable": True}
    )  # an explicit disable=False would override TQDM_DISABLE
    for test_person, fraction, s in tqdm(jobs, desc="late fusion", **quiet):
        train_people = [p for p in people if p != test_person]
        x_all = {
            c: np.concatenate([people[p][0][c] for p in train_people])
            for c in BRAIN_MODALITIES
        }
        y_all = np.concatenate([people[p][1] for p in train_people])
        rng = np.random.default_rng([seed, s])
        order = rng.permutation(len(y_all))
        n_same = min(
            1000, len(order) // 5
        )  # unseen patches of the training people (the control)
        same, pool = order[:n_same], order[n_same:]
        if settings.get("max_train"):
            pool = pool[: settings["max_train"]]
        m = max(8, int(round(fraction * len(pool))))
        rows_m = pool[:m]
        x_m, y_m = {c: v[rows_m] for c, v in x_all.items()}, y_all[rows_m]
        x_test, y_test = people[test_person][0], people[test_person][1]
        groups = (
            people[test_person][2]
            if len(people[test_person]) > 2
            else np.arange(len(y_test))
        )
        fit = ({c: v[pool] for c, v in x_all.items()}, y_all[pool])
        same_set = ({c: v[same] for c, v in x_all.items()}, y_all[same])
        models = train_late_fusion_subsets(
            x_m,
            y_m,
            subsets,
            settings["hidden"],
            settings["rep_dim"],
            settings["steps"],
            settings["lr"],
            seed + s,
        )
        for subset, model in models.items():
            correct = (late_fusion_scores(model, x_test, subset) > 0).astype(
                int
            ) == y_test
            refit_test, refit_same = refit_correct(
                model, subset, fit, [(x_test, y_test), same_set]
            )
            rows.append(
                {
                    "test person": test_person,
                    "fraction": fraction,
                    "m": m,
                    "seed": s,
                    "subset": subset,
                    "size": len(parse_subset(subset, BRAIN_MODALITIES)),
                    "accuracy": float(correct.mean()),
                    "refit error": float(1.0 - refit_test.mean()),
                    "refit error, same people": float(1.0 - refit_same.mean()),
                    "correct": correct,
                    "refit correct": refit_test,
                    "groups": np.asarray(groups),
                }
            )
    return pd.DataFrame(rows)
