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
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    if pred.ndim not in (4, 5):
        raise ValueError(f"expected (N, C, H, W) or (N, C, D, H, W) images, got shape {tuple(pred.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per image."""
    _check_pair(pred, target)
    return PSNRMetric(max_val=data_range, reduction="none")(pred, target).reshape(-1)


def ms_ssim_scales(size: int, kernel_size: int = 11, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """How many MS-SSIM scales fit an image whose smallest side is ``size``.

    Each scale halves the image, and the coarsest must stay larger than ``(kernel_size - 1)``
    (the condition ``monai.metrics`` enforces).
    """
    scales = max_scales
    while scales > 1 and size <= (kernel_size - 1) * 2 ** (scales - 1):
        scales -= 1
    if size <= kernel_size - 1:
        raise ValueError(f"images of side {size} are too small for an SSIM window of {kernel_size}")
    return scales


def ms_ssim(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, kernel_size: int = 11, scales: int | None = None
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
        raise ValueError(f"{scales} MS-SSIM scales do not fit images of shape {tuple(pred.shape[2:])}; at most {fit}")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales])
    metric = MultiScaleSSIMMetric(
        spatial_dims=pred.ndim - 2,
        data_range=data_range,
        kernel_size=kernel_size,
        weights=tuple((weights / weights.sum()).tolist()),
        reduction="none",
    )
    return metric(pred, target).reshape(-1)
