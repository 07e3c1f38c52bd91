"""Reconstruction fidelity: PSNR and MS-SSIM, computed by ``monai.metrics``.

Images are expected in ``[0, data_range]`` with shape (N, C, *spatial). Both functions return one
value per image, so a notebook can report a mean and a spread.
"""

from __future__ import annotations

import torch
from monai.metrics import MultiScaleSSIMMetric, PSNRMetric

# Wang, Simoncelli & Bovik (2003): weights of the five MS-SSIM scales, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}"
        )
    if pred.ndim not in (4, 5):
        raise ValueError(
            f"expected (N, C, H, W) or (N, C, D, H, W) images, got shape {tuple(pred.shape)}"
        )
    for name, x in (("prediction", pred), ("target", target)):
        bad = count_non_finite(x)
        if bad:
            raise ValueError(
                f"{bad} {name} image(s) contain NaN or infinite values; a score of them would be NaN"
            )


def count_non_finite(images: torch.Tensor) -> int:
    """How many images of a batch (N, ...) hold at least one NaN or infinite value."""
    return int((~torch.isfinite(images)).flatten(1).any(1).sum())


def psnr(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per image."""
    _check_pair(pred, target)
    return PSNRMetric(max_val=data_range, reduction="none")(pred, target).reshape(-1)


def ms_ssim_scales(
    size: int, kernel_size: int = 11, max_scales: int = len(MS_SSIM_WEIGHTS)
) -> int:
    """How many MS-SSIM scales ``monai.metrics.MultiScaleSSIMMetric`` can compute on images whose
    smallest side is ``size``.

    Two conditions must hold for ``n`` scales: the one MONAI checks before it starts,
    ``size // max(1, n - 1)**2 > kernel_size - 1``, and the one its SSIM needs at the coarsest scale
    after ``n - 1`` halvings by 2x2 average pooling, ``floor(size / 2**(n - 1)) >= kernel_size``.
    """
    if size < kernel_size:
        raise ValueError(
            f"images of side {size} are too small for an SSIM window of {kernel_size}"
        )

    def fits(n: int) -> bool:
        coarsest = size
        for _ in range(n - 1):
            coarsest //= 2
        return size // max(1, n - 1) ** 2 > kernel_size - 1 and coarsest >= kernel_size

    return max(n for n in range(1, max_scales + 1) if fits(n) or n == 1)


def ms_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    kernel_size: int = 11,
    scales: int | None = None,
) -> torch.Tensor:
    """Multi-scale SSIM, one value per image.

    With ``scales=None`` the largest number of scales the image size allows is used (five for images
    of side > 160 with the standard 11-pixel window); fewer scales use the first standard weights,
    renormalised to sum to one. Pass the same ``scales`` to compare numbers across image sizes.
    """
    _check_pair(pred, target)
    fit = ms_ssim_scales(min(pred.shape[2:]), kernel_size)
    scales = fit if scales is None else scales
    if not 1 <= scales <= fit:
        raise ValueError(
            f"{scales} MS-SSIM scales do not fit images of shape {tuple(pred.shape[2:])}; at most {fit}"
        )
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales])
    metric = MultiScaleSSIMMetric(
        spatial_dims=pred.ndim - 2,
        data_range=data_range,
        kernel_size=kernel_size,
        weights=tuple((weights / weights.sum()).tolist()),
        reduction="none",
    )
    return metric(pred, target).reshape(-1)


def paired_difference(
    a, b, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> dict:
    """Mean of the per-image differences ``a - b`` with a bootstrap interval (``scipy.stats.bootstrap``,
    BCa), for two methods scored on the same images. Pairing removes the spread between images, which
    is much larger than the spread of the difference.
    """
    import numpy as np
    from scipy.stats import bootstrap

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired scores must be two 1D arrays of the same length, got {a.shape} and {b.shape}"
        )
    if len(a) < 2:
        raise ValueError("a bootstrap interval needs at least two paired scores")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(
            "paired scores contain NaN or infinite values (e.g. PSNR of a perfect reconstruction)"
        )
    diff = a - b
    shares = {
        "n": len(diff),
        "a_better": float((diff > 0).mean()),
        "ties": float((diff == 0).mean()),
    }
    if np.ptp(diff) <= 1e-9 * max(
        1.0, float(np.abs(diff).max())
    ):  # all differences the same (up to rounding): nothing to resample
        return {
            "mean": float(diff[0]),
            "low": float(diff[0]),
            "high": float(diff[0]),
            **shares,
        }
    ci = bootstrap(
        (diff,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        random_state=seed,
    ).confidence_interval
    return {
        "mean": float(diff.mean()),
        "low": float(ci.low),
        "high": float(ci.high),
        **shares,
    }


def gradient_ratio(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sharpness of a reconstruction relative to its original, one value per image: the mean Sobel
    gradient magnitude (``monai.transforms.SobelGradients``) of ``pred`` divided by that of ``target``.
    1 means as much edge energy as the original; a blurred reconstruction scores below 1. PSNR and
    MS-SSIM reward a blurry average; this measures what they miss."""
    from monai.transforms import SobelGradients

    _check_pair(pred, target)
    sobel = SobelGradients(kernel_size=3)

    def energy(x: torch.Tensor) -> torch.Tensor:
        out = []
        for image in x.float():
            g = sobel(image)  # (dims * C, *spatial): one gradient per axis and channel
            g = (
                g.as_tensor() if hasattr(g, "as_tensor") else g
            )  # a plain tensor, not a MONAI MetaTensor
            out.append(
                g.reshape(pred.ndim - 2, -1, *g.shape[1:]).pow(2).sum(0).sqrt().mean()
            )
        return torch.stack(out)

    return energy(pred) / energy(target).clamp_min(1e-12)
