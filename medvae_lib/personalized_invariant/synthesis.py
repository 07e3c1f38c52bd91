"""Scoring the synthesis: PSNR and SSIM on the brain mask, every source -> target
synthesis of a model, the released evaluation's protocol for comparison, and the
constant-image control."""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..training import autocast
from .model import PUIRNet
from .settings import CONTRASTS


def masked_psnr(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """PSNR (data range 1) over the brain voxels only, one value per image.

    MONAI's ``PSNRMetric`` averages the squared error over the whole image; with both
    images set to 0 outside the mask, that mean is the brain's mean times (brain voxels
    / all voxels), so the brain's PSNR is MONAI's minus 10 log10(all voxels / brain
    voxels). NaN or infinite inputs are refused."""
    from monai.metrics import PSNRMetric

    for what, t in (("prediction", pred), ("target", target), ("mask", mask)):
        bad = int((~torch.isfinite(t.float())).sum())
        if bad:
            raise ValueError(f"the {what} has {bad} NaN or infinite value(s): no PSNR")
    mask = mask.float()
    whole = PSNRMetric(max_val=1.0, reduction="none")(
        pred * mask, target * mask
    ).reshape(-1)
    share = mask.flatten(1).sum(1) * pred.shape[1] / pred[0].numel()
    if (share <= 0).any():
        raise ValueError(
            "an image has an empty brain mask; its brain PSNR is undefined"
        )
    return whole + 10 * torch.log10(share)


def masked_ssim(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kernel_size: int = 11
) -> torch.Tensor:
    """SSIM averaged over the brain voxels only, one value per image: the SSIM map of
    ``monai.metrics.regression.compute_ssim_and_cs`` (Gaussian window, data range 1)
    averaged where the window's centre lies in the mask."""
    from monai.metrics.regression import compute_ssim_and_cs

    dims = pred.ndim - 2
    ssim_map, _ = compute_ssim_and_cs(
        pred.float(),
        target.float(),
        spatial_dims=dims,
        kernel_size=(kernel_size,) * dims,
        kernel_sigma=(1.5,) * dims,
        data_range=1.0,
        kernel_type="gaussian",
        k1=0.01,
        k2=0.03,
    )
    r = kernel_size // 2
    inner = mask[(slice(None), slice(None), *(slice(r, s - r) for s in mask.shape[2:]))]
    inner = inner.expand_as(ssim_map)
    return (ssim_map * inner).flatten(1).sum(1) / inner.flatten(1).sum(1).clamp_min(1)


@torch.no_grad()
def synthesise(
    model: PUIRNet, samples: torch.Tensor, settings: dict, batch: int = 64
) -> torch.Tensor:
    """For each source contrast, the four contrasts the model synthesises: (4 sources, N, 4 targets, ...).
    3D samples larger than a patch go through MONAI's ``sliding_window_inference`` (Gaussian, overlap 0.5).
    On a GPU the model runs under float16 autocast unless ``settings["amp"]`` says otherwise."""
    from monai.inferers import sliding_window_inference

    model.eval()
    device = next(model.parameters()).device
    images = samples[:, : len(CONTRASTS)].float()

    amp = settings.get("amp", "auto")  # float16 autocast on a GPU

    def predictor(x):
        with autocast(amp, device):
            return model(x.to(device))["out"].float().cpu()

    out = []
    for j in range(len(CONTRASTS)):
        x = images[:, j : j + 1].repeat_interleave(len(CONTRASTS), 1)
        if settings["spatial_dims"] == 3:
            y = sliding_window_inference(
                x,
                (settings["image_size"],) * 3,
                1,
                predictor,
                overlap=0.5,
                mode="gaussian",
            )
        else:
            y = torch.cat(
                [predictor(x[i : i + batch]) for i in range(0, len(x), batch)]
            )
        out.append(y.clamp(0, 1) * samples[:, len(CONTRASTS) :].float())
    return torch.stack(out)


def _by_person(score):
    """``score(model, samples, settings)`` over 3D samples one at a time: whole volumes of
    many people at once would not fit in memory (40 BraTS people: about 13 GB a source);
    2D slices all at once. Same numbers either way."""

    @functools.wraps(score)
    def scored(model, samples, settings):
        if settings["spatial_dims"] != 3:
            return score(model, samples, settings)
        parts = [
            score(model, samples[i : i + 1], settings) for i in range(len(samples))
        ]
        return {m: np.concatenate([p[m] for p in parts], -1) for m in parts[0]}

    return scored


@_by_person
def synthesis_scores(
    model: PUIRNet, samples: torch.Tensor, settings: dict
) -> dict[str, np.ndarray]:
    """PSNR and SSIM on the brain mask of every source -> target synthesis: arrays (4, 4, N)."""
    pred = synthesise(model, samples, settings)
    target, mask = (
        samples[:, : len(CONTRASTS)].float(),
        samples[:, len(CONTRASTS) :].float(),
    )
    k = len(CONTRASTS)
    psnr, ssim = np.zeros((k, k, len(samples))), np.zeros((k, k, len(samples)))
    for s in range(k):
        for t in range(k):
            psnr[s, t] = masked_psnr(
                pred[s][:, t : t + 1], target[:, t : t + 1], mask
            ).numpy()
            ssim[s, t] = masked_ssim(
                pred[s][:, t : t + 1],
                target[:, t : t + 1],
                mask,
                settings["ssim_kernel"],
            ).numpy()
    return {"psnr": psnr, "ssim": ssim}


@_by_person
def paper_protocol_scores(
    model: PUIRNet, samples: torch.Tensor, settings: dict
) -> dict[str, np.ndarray]:
    """The released evaluation's way, for comparison only: background voxels of the prediction replaced by
    the ground truth, then PSNR and SSIM over the *whole* image (MONAI ``PSNRMetric`` / ``SSIMMetric``).
    Every background voxel then counts as a perfect prediction."""
    from monai.metrics import PSNRMetric, SSIMMetric

    pred = synthesise(
        model, samples, settings
    )  # prediction inside the brain, target (0) outside
    target = samples[:, : len(CONTRASTS)].float()
    k, dims = len(CONTRASTS), settings["spatial_dims"]
    psnr_m = PSNRMetric(max_val=1.0, reduction="none")
    ssim_m = SSIMMetric(
        spatial_dims=dims,
        data_range=1.0,
        win_size=settings["ssim_kernel"],
        reduction="none",
    )
    psnr, ssim = np.zeros((k, k, len(samples))), np.zeros((k, k, len(samples)))
    for s in range(k):
        for t in range(k):
            p, y = pred[s][:, t : t + 1], target[:, t : t + 1]
            psnr[s, t] = psnr_m(p, y).reshape(-1).numpy()
            ssim[s, t] = ssim_m(p, y).reshape(-1).numpy()
    return {"psnr": psnr, "ssim": ssim}


def scores_of(
    pred: torch.Tensor, samples: torch.Tensor, metric: str = "psnr", kernel: int = 7
) -> np.ndarray:
    """PSNR or SSIM on the brain mask of a (4 sources, N, 4 targets, ...) synthesis: (4, 4, N)."""
    target, mask = (
        samples[:, : len(CONTRASTS)].float(),
        samples[:, len(CONTRASTS) :].float(),
    )
    k = len(CONTRASTS)
    out = np.zeros((k, k, len(samples)))
    for s in range(k):
        for t in range(k):
            p, y = pred[s][:, t : t + 1], target[:, t : t + 1]
            out[s, t] = (
                masked_psnr(p, y, mask)
                if metric == "psnr"
                else masked_ssim(p, y, mask, kernel)
            ).numpy()
    return out


def off_diagonal_mean(scores: np.ndarray) -> np.ndarray:
    """Per sample, the mean over the 12 cross-contrast pairs (source != target) of a (4, 4, N) array."""
    k = scores.shape[0]
    off = ~np.eye(k, dtype=bool)
    return scores[off].mean(0)


def constant_prediction(train: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """The trivial control of the synthesis: every target contrast predicted as its mean brain
    intensity over the training samples, whatever the source (no image is read). The brain mask of
    each sample is applied, as to every model's prediction. (4 sources, N, 4 targets, ...)."""
    k = len(CONTRASTS)
    mask = train[:, k:].float()
    means = (train[:, :k].float() * mask).flatten(2).sum((0, 2)) / mask.sum().clamp_min(
        1
    )
    shape = (1, k) + (1,) * (samples.ndim - 2)
    pred = means.reshape(shape) * samples[:, k:].float()
    return (
        pred.expand(len(samples), k, *samples.shape[2:])
        .unsqueeze(0)
        .repeat(k, *[1] * samples.ndim)
    )
