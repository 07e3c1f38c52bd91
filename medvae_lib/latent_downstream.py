"""Chapter ``04_latent_downstream``: what the latents are for. Classifiers of one family trained on
pixels, on stage-1 and stage-2 latents and on a resized image of the latent's size; their test AUROC
with bootstrap intervals; their speed on latents against pixels; and the rate-distortion trade of the
four 2D MedVAE configurations.

Every interval comes from :mod:`medvae_lib.stats`: an AUROC or a difference of AUROCs is averaged over
the training seeds, and its interval adds the seed-to-seed variance to a bootstrap over the test images
(:func:`medvae_lib.stats.statistic_difference`), so that another seed of the classifier (or, in the
sweep, of the autoencoder) is inside the uncertainty, not only another draw of test images.

MedVAE's own downstream classifiers are MONAI ResNets (``configs/model/monai_seresnet152.yaml`` in the
MedVAE repository). This chapter uses the same family, a MONAI :class:`~monai.networks.nets.ResNet`
built by :func:`medvae_lib.models.build_classifier`, small enough for a CPU: basic blocks, one per
stage, and a stem without striding or max pooling so that an 8x8 latent and a 32x32 image go through
the very same layers.
"""

from __future__ import annotations

import torch

from .models import build_classifier


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# -- scoring ----------------------------------------------------------------------------------------


def auroc(labels, scores) -> float:
    """Area under the ROC curve (scikit-learn's ``roc_auc_score``) with clear errors for input it cannot score."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    labels, scores = np.asarray(labels).ravel(), np.asarray(scores, dtype=float).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if not np.isfinite(scores).all():
        raise ValueError(
            f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite"
        )
    classes = set(np.unique(labels).tolist())
    if not classes <= {0, 1}:
        raise ValueError(
            f"AUROC here is for binary labels 0/1; got classes {sorted(classes)}"
        )
    if len(classes) < 2:
        raise ValueError(
            "AUROC needs both classes among the labels; only one is present"
        )
    return float(roc_auc_score(labels, scores))


def _auroc_by_ranks(labels, scores) -> float:
    """AUROC as the Mann-Whitney statistic (average ranks for ties): what ``roc_auc_score`` computes,
    without its checks, for the thousands of bootstrap resamples (both classes must be present)."""
    import numpy as np
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positives = labels == 1
    n1 = int(positives.sum())
    n0 = labels.size - n1
    return (
        float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
        if n1 and n0
        else np.nan
    )


def bootstrap_auroc(
    labels,
    scores: dict,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
):
    """AUROC of each method in ``scores`` (``{method: (n_seeds, n_images) array}``: one row of test-image
    scores per training seed), with a percentile bootstrap interval over the test images.

    Each resample draws the test images with replacement, the *same* draw for every method and seed,
    and scores the seed-averaged AUROC; the interval therefore covers the uncertainty from which test
    images happen to be in the split, and ``seed std`` (the spread over training seeds) is reported
    beside it. Returns a DataFrame with ``AUROC`` (mean over seeds), ``95% CI low/high``, ``seed std``.
    """
    import numpy as np
    import pandas as pd

    labels = np.asarray(labels).ravel()
    arrays = {m: np.atleast_2d(np.asarray(s, dtype=float)) for m, s in scores.items()}
    for m, s in arrays.items():
        if s.shape[1] != labels.size:
            raise ValueError(
                f"{m}: {s.shape[1]} scores per seed for {labels.size} labels"
            )
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, labels.size, size=(n_resamples, labels.size))
    alpha = (1 - confidence) / 2
    rows = {}
    for m, s in arrays.items():
        per_seed = [auroc(labels, row) for row in s]
        boot = []
        for idx in draws:
            y = labels[idx]
            if y.min() == y.max():
                continue  # a resample with one class cannot be scored; skipped for every method alike
            boot.append(np.mean([_auroc_by_ranks(y, row[idx]) for row in s]))
        low, high = np.quantile(boot, [alpha, 1 - alpha])
        rows[m] = {
            "AUROC": float(np.mean(per_seed)),
            "95% CI low": float(low),
            "95% CI high": float(high),
            "seed std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
            "seeds": len(per_seed),
        }
    return pd.DataFrame(rows).T


def paired_auroc_difference(
    labels, a, b, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """Seed-averaged AUROC of ``a`` minus that of ``b`` (each ``(n_seeds, n_images)``) on the same test
    images, with a paired percentile bootstrap interval: both are rescored on the same resample."""
    import numpy as np

    labels = np.asarray(labels).ravel()
    a, b = (
        np.atleast_2d(np.asarray(a, dtype=float)),
        np.atleast_2d(np.asarray(b, dtype=float)),
    )

    def score(s, idx):
        return np.mean([_auroc_by_ranks(labels[idx], row[idx]) for row in s])

    everything = np.arange(labels.size)
    diff = score(a, everything) - score(b, everything)
    rng = np.random.default_rng(seed)
    boot = []
    for idx in rng.integers(0, labels.size, size=(n_resamples, labels.size)):
        if labels[idx].min() != labels[idx].max():
            boot.append(score(a, idx) - score(b, idx))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return {
        "difference": float(diff),
        "95% CI low": float(low),
        "95% CI high": float(high),
    }


def trivial_controls(labels) -> dict:
    """What knowing nothing scores on ``labels`` (0/1): the share of the larger class (the accuracy of
    always answering it) and the AUROC of a constant score (0.5: every pair is a tie)."""
    import numpy as np

    labels = np.asarray(labels).ravel()
    positives = float((labels == 1).mean())
    return {
        "test images": int(labels.size),
        "share of class 1": positives,
        "majority-class rate": max(positives, 1 - positives),
        "AUROC of a constant score": auroc(labels, np.zeros(labels.size)),
    }


def _reading(result: dict) -> str:
    """The phrase of :func:`medvae_lib.stats.verdict`: above 0, below 0, or not detectable."""
    from .stats import verdict

    return verdict(result).split(":")[0]


def _per_seed(values) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def auroc_table(labels, scores: dict, n_resamples: int = 1000, seed: int = 0):
    """Test AUROC of each method in ``scores`` (``{method: (n_seeds, n_images)}``: one row of scores
    per training seed), averaged over seeds, with a 95% interval over seeds and test images.

    The interval is that of :func:`medvae_lib.stats.statistic_difference` for the method against a
    constant score, whose AUROC is 0.5 (chance) on every resample: the AUROC's distance from chance,
    shifted back by 0.5. Beside it: the per-seed AUROCs and whether the method is above chance."""
    import numpy as np
    import pandas as pd

    from .stats import statistic_difference

    labels = np.asarray(labels).ravel()
    rows = {}
    for method, s in scores.items():
        s = np.atleast_2d(np.asarray(s, dtype=float))
        if s.shape[1] != labels.size:
            raise ValueError(
                f"{method}: {s.shape[1]} scores per seed for {labels.size} labels"
            )
        chance = np.zeros_like(s)
        r = statistic_difference(
            _auroc_by_ranks, labels, s, chance, n_resamples=n_resamples, seed=seed
        )
        rows[method] = {
            "AUROC": r["mean"] + 0.5,
            "95% CI low": r["low"] + 0.5,
            "95% CI high": r["high"] + 0.5,
            "per seed": _per_seed(np.asarray(r["per_seed"]) + 0.5),
            "seeds": r["n_seeds"],
            "vs chance (0.5)": _reading(r),
        }
    return pd.DataFrame(rows).T.infer_objects()


def auroc_difference(labels, a, b, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Seed-averaged AUROC of ``a`` minus that of ``b`` (each ``(n_seeds, n_images)``, seed ``s`` of
    ``a`` paired with seed ``s`` of ``b``), with the interval of
    :func:`medvae_lib.stats.statistic_difference`: test-image bootstrap plus seed variance."""
    from .stats import statistic_difference

    r = statistic_difference(
        _auroc_by_ranks, labels, a, b, n_resamples=n_resamples, seed=seed
    )
    return {
        "difference": r["mean"],
        "95% CI low": r["low"],
        "95% CI high": r["high"],
        "per seed": _per_seed(r["per_seed"]),
        "reading": _reading(r),
    }


# -- the two classifier kinds -----------------------------------------------------------------------


def flatten(x: torch.Tensor):
    """(N, ...) tensor -> (N, features) float64 numpy array for scikit-learn."""
    return x.reshape(len(x), -1).double().numpy()


def linear_probe(
    train_x, train_y, val_x, val_y, cs=(0.001, 0.01, 0.1, 1.0, 10.0), seed: int = 0
):
    """A linear probe: standardised features, L2-regularised logistic regression
    (scikit-learn), its regularisation strength ``C`` chosen by validation AUROC.
    Returns the fitted pipeline and a table of the validation AUROC for each ``C``."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xt, xv = flatten(torch.as_tensor(train_x)), flatten(torch.as_tensor(val_x))
    yt, yv = torch.as_tensor(train_y).numpy(), torch.as_tensor(val_y).numpy()
    fits, table = {}, []
    for c in cs:
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)
        )
        model.fit(xt, yt)
        fits[c] = model
        table.append(
            {"C": c, "validation AUROC": auroc(yv, model.decision_function(xv))}
        )
    table = pd.DataFrame(table)
    best = table.loc[table["validation AUROC"].idxmax(), "C"]
    return fits[best], table


def probe_scores(model, x):
    """The probe's decision values (log-odds) for ``x``."""
    return model.decision_function(flatten(torch.as_tensor(x)))


class Standardised(torch.nn.Module):
    """``model((x - mean) / std)`` with the per-channel mean and std of the training inputs as buffers:
    latents have no fixed scale, so every input kind is standardised the same way."""

    def __init__(self, model: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def train_classifier(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    width: int = 16,
    seed: int = 0,
    device="cpu",
    verbose: bool = True,
) -> tuple[Standardised, list[dict]]:
    """Train :func:`build_classifier` on ``train_x`` (images or latents, (N, C,
    *spatial)) for a binary label with BCE and AdamW; batches drawn as the book's
    trainers draw them (seeded by step). Returns the classifier (eval mode) and its
    training history; ``verbose=False`` prints nothing."""
    from .training import batch_indices, run_steps

    if train_x.ndim not in (4, 5) or len(train_x) != len(train_y):
        raise ValueError(
            f"need (N, C, *spatial) inputs and N labels; got {tuple(train_x.shape)} and {len(train_y)}"
        )
    if not torch.isfinite(train_x).all():
        raise ValueError("the training inputs contain NaN or infinite values")
    labels = torch.as_tensor(train_y).float()
    if set(labels.unique().tolist()) - {0.0, 1.0}:
        raise ValueError(
            f"train_classifier is for binary 0/1 labels; got {sorted(labels.unique().tolist())}"
        )
    dims = tuple(i for i in range(train_x.ndim) if i != 1)
    mean = train_x.mean(dims, keepdim=True)[0]
    std = train_x.std(dims, keepdim=True)[0].clamp_min(1e-6)
    torch.manual_seed(seed)
    model = Standardised(
        build_classifier(train_x.shape[1], train_x.ndim - 2, width=width), mean, std
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step_fn(step: int):
        model.train()
        idx = batch_indices(len(train_x), batch_size, step, seed)
        loss = loss_fn(model(train_x[idx].to(device))[:, 0], labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"bce": loss.detach()}

    desc = f"classifier on {tuple(train_x.shape[1:])}"
    history = run_steps(step_fn, 0, steps, desc=desc, log_every=10, verbose=verbose)
    return model.eval(), history


@torch.no_grad()
def classifier_scores(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256, device="cpu"
):
    """The classifier's logits for ``x``, as a numpy array."""
    model.eval()
    return torch.cat(
        [model(b.to(device))[:, 0].cpu() for b in x.split(batch_size)]
    ).numpy()


# -- the rate-distortion sweep over MedVAE's 2D configurations ---------------------------------------


def resize_side(image_size: int, model: str) -> int:
    """Side of the square image that holds as many values as ``model``'s latent of an ``image_size`` image
    (rounded: for ``medvae_4_3_2d`` at 32 px, 14x14 = 196 values against the latent's 3x8x8 = 192)."""
    from .models import get_config

    cfg = get_config(model)
    if cfg.spatial_dims != 2:
        raise ValueError(f"the sweep is over 2D models; {model} is 3D")
    return max(1, round(image_size * cfg.latent_channels**0.5 / cfg.factor))


def shrink(images: torch.Tensor, side: int) -> torch.Tensor:
    """Area-average ``images`` down to ``side`` x ``side``: the resize baseline's stored numbers."""
    return torch.nn.functional.interpolate(images, size=(side, side), mode="area")


def enlarge(small: torch.Tensor, side: int) -> torch.Tensor:
    """Bicubic enlargement back to ``side`` x ``side``, clipped to [0, 1]: the resize baseline's reconstruction."""
    return torch.nn.functional.interpolate(
        small, size=(side, side), mode="bicubic", align_corners=False
    ).clamp(0, 1)


def rate_distortion(
    models,
    splits: dict,
    steps: int,
    width: int,
    batch_size: int,
    seeds=(0,),
    kernel_size=7,
    device="cpu",
):
    """For each 2D MedVAE configuration in ``models`` and each seed in ``seeds``: train stage 1 for
    ``steps`` (L1 + 1 - SSIM + KL, no discriminator, the same budget for all), then on the test split
    its PSNR and MS-SSIM and the AUROC of a linear probe on its latents (C chosen on validation), and
    the same three numbers for the resize baseline that stores as many values (which has no seed).
    ``splits`` maps train/val/test to (images, labels).

    Returns two tables: the means over seeds (one row per configuration and method), and the paired
    differences latent minus resize on the same test images with 95% intervals over seeds and test
    images (:func:`medvae_lib.stats.paired_difference` for PSNR and MS-SSIM, :func:`auroc_difference`
    for AUROC), with the per-seed differences."""
    import numpy as np
    import pandas as pd

    from .medvae_stage1 import Stage1Config, Stage1Trainer
    from .metrics import ms_ssim, psnr
    from .models import get_config
    from .stats import paired_difference

    (tx, ty), (vx, vy), (sx, sy) = splits["train"], splits["val"], splits["test"]
    seeds = list(seeds)
    if not seeds:
        raise ValueError("rate_distortion needs at least one seed")
    size = tx.shape[-1]
    metrics = ("PSNR (dB)", "MS-SSIM")

    def score(rec, scores):
        return {
            "PSNR (dB)": psnr(rec, sx).numpy(),
            "MS-SSIM": ms_ssim(rec, sx, kernel_size=kernel_size).numpy(),
            "scores": np.asarray(scores, dtype=float),
        }

    rows, pairs = [], []
    for model in models:
        cfg = get_config(model)
        side = resize_side(size, model)
        small = {
            name: shrink(x, side)
            for name, x in (("train", tx), ("val", vx), ("test", sx))
        }
        resize_probe, _ = linear_probe(
            small["train"], ty, small["val"], vy, seed=seeds[0]
        )
        resized = score(
            enlarge(small["test"], size), probe_scores(resize_probe, small["test"])
        )
        runs = []
        for seed in seeds:
            config = Stage1Config(
                model=model,
                width=width,
                steps=steps,
                batch_size=batch_size,
                adv_weight=0.0,
                seed=seed,
            )
            trainer = Stage1Trainer(config, device)
            trainer.fit(tx)
            feats = {
                name: trainer.encode(x)[0]
                for name, x in (("train", tx), ("val", vx), ("test", sx))
            }
            probe, _ = linear_probe(feats["train"], ty, feats["val"], vy, seed=seed)
            runs.append(
                score(trainer.reconstruct(sx), probe_scores(probe, feats["test"]))
            )
        latent = {key: np.stack([run[key] for run in runs]) for key in runs[0]}
        resize = {
            key: np.repeat(value[None], len(seeds), axis=0)
            for key, value in resized.items()
        }
        for method, values, scored in (
            ("MedVAE latent", cfg.latent_channels * (size // cfg.factor) ** 2, latent),
            ("resize", side * side, resize),
        ):
            rows.append(
                {
                    "configuration": model,
                    "method": method,
                    "stored values": values,
                    "compression": size * size / values,
                    **{metric: float(scored[metric].mean()) for metric in metrics},
                    "probe AUROC": float(
                        np.mean([auroc(sy, row) for row in scored["scores"]])
                    ),
                }
            )
        for metric in metrics:
            d = paired_difference(latent[metric], resize[metric])
            pairs.append(
                {
                    "configuration": model,
                    "metric": metric,
                    "difference": d["mean"],
                    "95% CI low": d["low"],
                    "95% CI high": d["high"],
                    "per seed": _per_seed(d["per_seed"]),
                    "reading": _reading(d),
                }
            )
        d = auroc_difference(sy, latent["scores"], resize["scores"], seed=seeds[0])
        pairs.append({"configuration": model, "metric": "probe AUROC", **d})
    return pd.DataFrame(rows), pd.DataFrame(pairs).set_index(
        ["configuration", "metric"]
    )


def plot_rate_distortion(table):
    """Compression against PSNR, MS-SSIM and probe AUROC, latents and the resize baseline side
    by side; sized for the page's column (text at least 9 pt there)."""
    import matplotlib.pyplot as plt

    metrics = ("PSNR (dB)", "MS-SSIM", "probe AUROC")
    fig, axes = plt.subplots(1, 3, figsize=(6.8, 2.9), dpi=100)
    for ax, metric in zip(axes, metrics, strict=True):
        for method, marker in (("MedVAE latent", "o"), ("resize", "s")):
            part = table[table.method == method]
            ax.scatter(part["compression"], part[metric], marker=marker, label=method)
            if method == "MedVAE latent":
                for _, row in part.iterrows():
                    ax.annotate(
                        row["configuration"]
                        .removeprefix("medvae_")
                        .removesuffix("_2d"),
                        (row["compression"], row[metric]),
                        fontsize=9,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        ax.set_xscale("log", base=2)
        ax.tick_params(labelsize=9)
        ax.set_title(metric, fontsize=10)
    fig.supxlabel("compression (image values per stored value, log scale)", fontsize=10)
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="upper center",
        ncol=2,
        fontsize=9,
        frameon=False,
        bbox_to_anchor=(0.5, 1.08),
    )
    fig.tight_layout()
    return fig


# Settings for the two ways chapter 4 runs; stage 1, the teacher and stage 2 come with chapters 2 and
# 3's settings for the same mode (their exports are reused when they match).
MODES = {
    "ci": {
        "classifier_seeds": [0, 1, 2],
        "classifier_steps": 150,
        "classifier_batch_size": 32,
        "classifier_lr": 1e-3,
        "classifier_width": 16,
        "sweep_models": [
            "medvae_4_1_2d",
            "medvae_4_3_2d",
            "medvae_8_1_2d",
            "medvae_8_4_2d",
        ],
        # three seeds of each autoencoder, so that the sweep's intervals hold the training noise;
        # 100 steps in batches of 8 keep the 12 short trainings within CI's time
        "sweep_seeds": [0, 1, 2],
        "sweep_steps": 100,
        "sweep_width": 16,
        "sweep_batch_size": 8,
        # Throughput: the CI size, and MedVAE's 512x512 (a few timed batches on a CPU).
        "throughput_sizes": [32, 512],
        "throughput_batch_size": 8,
        "throughput_iters": 3,
        # With the encoder counted: 256x256 on a CPU (MedVAE's middle self-attention over
        # the 128x128 latent of a 512 px image takes about 1 s per image on 2 cores).
        "encoder_throughput_size": 256,
    },
    "full": {
        "classifier_seeds": [0, 1, 2, 3, 4],
        "classifier_steps": 3000,
        "classifier_batch_size": 64,
        "classifier_lr": 1e-3,
        "classifier_width": 32,
        "sweep_models": [
            "medvae_4_1_2d",
            "medvae_4_3_2d",
            "medvae_8_1_2d",
            "medvae_8_4_2d",
        ],
        "sweep_seeds": [0, 1, 2],
        "sweep_steps": 5000,
        "sweep_width": 64,
        "sweep_batch_size": 16,
        "throughput_sizes": [128, 512],
        "encoder_throughput_size": 512,
        "throughput_batch_size": 32,
        "throughput_iters": 20,
    },
}


@torch.no_grad()
def published_latents(model, x: torch.Tensor, batch_size: int = 32, device="cpu"):
    """What MedVAE's ``MVAE`` returns for 2D images: the stage-2 latent
    ``channel_proj(channel_ds(mu) + mu)`` of a published model, for images in [0, 1]
    (scaled to [-1, 1]; a three-channel model gets the grey image on each channel)."""
    from .models import grey_input

    model = model.eval().to(device)
    out = []
    for chunk in x.split(batch_size):
        chunk = grey_input(model, chunk.to(device) * 2 - 1)
        out.append(model.project(model.encode(chunk)[0]).cpu())
    return torch.cat(out)


def downstream_inputs(
    autoencoder, head, splits: dict, side: int, device="cpu", published=None
) -> dict:
    """The four inputs of chapter 4 for every split: ``{input: {split: tensor}}`` with pixels, the
    stage-1 latent (posterior mean), the stage-2 latent (the head on the posterior mean) and the image
    shrunk to ``side`` x ``side`` (as many values as a one-channel latent of that side). With
    ``published`` (MedVAE's released model, full mode), a fifth: its stage-2 latent
    (:func:`published_latents`)."""
    from .medvae_stage2 import project, stage1_latents

    out = {
        "pixels": {},
        "stage-1 latent": {},
        "stage-2 latent": {},
        f"resize to {side}x{side}": {},
    }
    for split, (x, _) in splits.items():
        out["pixels"][split] = x
        out["stage-1 latent"][split] = stage1_latents(autoencoder, x, device=device)
        out["stage-2 latent"][split] = project(autoencoder, head, x, device=device)
        out[f"resize to {side}x{side}"][split] = shrink(x, side)
        if published is not None:
            out.setdefault("published MedVAE latent", {})[split] = published_latents(
                published, x, device=device
            )
    return out


def paired_table(labels, scores: dict, pairs, seed: int = 0, n_resamples: int = 1000):
    """:func:`auroc_difference` for each ``(a, b)`` of ``pairs``, one row each."""
    import pandas as pd

    rows = {
        f"{a} - {b}": auroc_difference(
            labels, scores[a], scores[b], n_resamples=n_resamples, seed=seed
        )
        for a, b in pairs
    }
    return pd.DataFrame(rows).T.infer_objects()
