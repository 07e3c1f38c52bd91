"""Scoring reconstructions: the resize baseline, PSNR, MS-SSIM and sharpness tables,
paired intervals over seeds and images, the published model beside the trained one,
and what the worst images and the latents have in common."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..metrics import ms_ssim, psnr
from ..models import grey_input
from .trainer import Stage1Trainer, from_model_range, to_model_range


def resize_baseline(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Shrink by ``factor`` per side (area average), then enlarge back (bicubic/trilinear), clipped to [0, 1].

    With one latent channel, the shrunken image holds exactly as many numbers as a MedVAE latent of
    the same factor: the baseline a learned latent has to beat.
    """
    small = F.interpolate(images, scale_factor=1 / factor, mode="area")
    mode = "bicubic" if images.ndim == 4 else "trilinear"
    return F.interpolate(
        small, size=images.shape[2:], mode=mode, align_corners=False
    ).clamp(0, 1)


def fidelity(
    reference: torch.Tensor,
    reconstructions: dict[str, torch.Tensor],
    kernel_size: int = 7,
    scales: int | None = None,
):
    """PSNR and MS-SSIM of each reconstruction against ``reference``, one row per method and image."""
    import pandas as pd

    rows = []
    for method, rec in reconstructions.items():
        p, m = (
            psnr(rec, reference),
            ms_ssim(rec, reference, kernel_size=kernel_size, scales=scales),
        )
        rows += [
            {"method": method, "image": i, "PSNR (dB)": float(a), "MS-SSIM": float(b)}
            for i, (a, b) in enumerate(zip(p, m, strict=True))
        ]
    return pd.DataFrame(rows)


LOWER_IS_BETTER = ("sharpness error",)


def seed_fidelity(
    runs_by_seed: dict[int, dict[str, Stage1Trainer]],
    reference: torch.Tensor,
    baseline: str,
    factor: int,
    kernel_size: int = 7,
):
    """:func:`fidelity` and :func:`add_sharpness` of every seed's arms and of the resize
    baseline (named ``baseline``; the same for every seed) on ``reference``: one row per seed,
    method and image."""
    import pandas as pd

    resized = resize_baseline(reference, factor)
    frames = []
    for s, runs in runs_by_seed.items():
        recs = {name: run.reconstruct(reference) for name, run in runs.items()}
        recs[baseline] = resized
        scores = fidelity(reference, recs, kernel_size=kernel_size)
        frames.append(add_sharpness(scores, reference, recs).assign(seed=int(s)))
    return pd.concat(frames, ignore_index=True)


def seed_paired_table(
    scores, pairs, metrics=("PSNR (dB)", "MS-SSIM", "sharpness error")
):
    """Paired differences (first minus second method of each pair) over seeds and test images
    (:func:`seed_fidelity`'s table), with the 95% interval of :func:`medvae_lib.stats.paired_difference`:
    a random-effects interval over seeds and images, never over images alone.

    Columns: the mean difference, the interval, the share of seeds on which the first method is
    better (higher, or lower for the metrics in ``LOWER_IS_BETTER``) and each seed's mean
    difference (``seed <s>``)."""
    import numpy as np
    import pandas as pd

    from ..stats import paired_difference

    rows = []
    for a, b in pairs:
        for m in metrics:
            first = scores[scores.method == a].pivot(
                index="seed", columns="image", values=m
            )
            second = scores[scores.method == b].pivot(
                index="seed", columns="image", values=m
            )
            second = second.loc[first.index, first.columns]
            d = paired_difference(first.to_numpy(), second.to_numpy())
            per_seed = np.asarray(d["per_seed"])
            if len(per_seed) == 1:  # one seed: the share of images instead
                per_seed = (first.to_numpy() - second.to_numpy())[0]
            better = per_seed < 0 if m in LOWER_IS_BETTER else per_seed > 0
            rows.append(
                {
                    "comparison": f"{a} - {b}",
                    "metric": m,
                    "mean difference": d["mean"],
                    "95% CI low": d["low"],
                    "95% CI high": d["high"],
                    "first better on (share)": float(better.mean()),
                    **{
                        f"seed {s}": v
                        for s, v in zip(first.index, d["per_seed"], strict=True)
                    },
                }
            )
    return pd.DataFrame(rows).set_index(["comparison", "metric"])


@torch.no_grad()
def reconstruct_with(autoencoder, images: torch.Tensor, batch_size: int = 32):
    """Reconstructions in [0, 1] of ``images`` in [0, 1] by any MedVAE (decoding the
    posterior mean); a model with three input channels (the published 3- and 4-channel
    ones) gets the grey image on each."""
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    out = []
    for chunk in images.split(batch_size):
        x = grey_input(autoencoder, to_model_range(chunk.to(device)))
        y = autoencoder.decode(autoencoder.encode(x)[0]).mean(1, keepdim=True)
        out.append(from_model_range(y).cpu())
    return torch.cat(out)


def published_beside(published, trained, reference: torch.Tensor, kernel_size: int = 7):
    """MedVAE's published model beside the one trained here, on the same images:
    :func:`seed_paired_table` of "published - trained here" (intervals over images; one
    trained seed) and the resize baseline as the control."""
    factor = 2 ** (len(published.arch.ch_mult) - 1)
    recs = {
        "published": reconstruct_with(published, reference),
        "trained here": trained.reconstruct(reference),
        "resize": resize_baseline(reference, factor),
    }
    scores = fidelity(reference, recs, kernel_size=kernel_size)
    scores = add_sharpness(scores, reference, recs).assign(seed=0)
    pairs = [("published", "trained here"), ("published", "resize")]
    return seed_paired_table(scores, pairs)


def add_sharpness(
    scores, reference: torch.Tensor, reconstructions: dict[str, torch.Tensor]
):
    """Add ``sharpness`` (edge energy relative to the original, :func:`~medvae_lib.metrics.gradient_ratio`;
    1 is right, below 1 blurred, above 1 invented edges) and ``sharpness error`` = |1 - sharpness|
    (lower is better) to a :func:`fidelity` table."""
    from ..metrics import gradient_ratio

    scores = scores.copy()
    for name, rec in reconstructions.items():
        ratio = gradient_ratio(rec, reference).numpy()
        scores.loc[scores.method == name, "sharpness"] = ratio
        scores.loc[scores.method == name, "sharpness error"] = abs(1.0 - ratio)
    return scores


def edge_energy(images: torch.Tensor) -> torch.Tensor:
    """Fine detail of each 2D image: its mean Sobel gradient magnitude (the quantity
    :func:`~medvae_lib.metrics.gradient_ratio` compares), one value per image."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([kx, kx.T])[:, None]
    g = F.conv2d(F.pad(images.float(), (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(1).sqrt().flatten(1).mean(1)


def worst_images(images, labels, psnr_values, train_images, n: int = 4) -> dict:
    """What the ``n`` images with the lowest PSNR have in common: a table of them (class, edge
    energy, and its percentile among the training images), Spearman's rank correlation between
    PSNR and edge energy over all ``images``, and the share of training images with at least the
    edge energy of the least detailed of the ``n``."""
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    psnr_values = np.asarray(psnr_values, dtype=float)
    energy = edge_energy(images).numpy()
    train_energy = np.sort(edge_energy(train_images).numpy())
    order = np.argsort(psnr_values)[:n]
    table = pd.DataFrame(
        {
            "image": order,
            "class": np.asarray(labels).ravel()[order],
            "PSNR (dB)": psnr_values[order],
            "edge energy": energy[order],
            "percentile among training images": 100
            * np.searchsorted(train_energy, energy[order])
            / train_energy.size,
        }
    )
    rho = float(spearmanr(psnr_values, energy).statistic)
    share = float((train_energy >= energy[order].min()).mean())
    return {"table": table, "spearman": rho, "train_share": share}


def latent_table(z_mu: torch.Tensor, z_sigma: torch.Tensor):
    """What the KL term sees: statistics of the posterior means and standard deviations, and the KL per
    latent value, against the N(0, 1) prior (mean 0, std 1, sigma 1, KL 0)."""
    import pandas as pd

    from ..losses import kl_divergence

    per_value = kl_divergence(z_mu, z_sigma) / z_mu[0].numel()
    return pd.DataFrame(
        [
            {
                "mean of mu": z_mu.mean().item(),
                "std of mu": z_mu.std().item(),
                "mean sigma": z_sigma.mean().item(),
                "KL per latent value (nats)": per_value.mean().item(),
                "KL per image (nats)": (per_value * z_mu[0].numel()).mean().item(),
            }
        ]
    )
