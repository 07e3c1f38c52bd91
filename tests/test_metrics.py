import math

import pytest
import torch
from monai.metrics import MultiScaleSSIMMetric, SSIMMetric

from medvae_lib.metrics import (
    MS_SSIM_WEIGHTS,
    ms_ssim,
    ms_ssim_scales,
    paired_difference,
    psnr,
)


def test_psnr_on_known_inputs():
    target = torch.zeros(2, 1, 16, 16)
    pred = torch.full_like(target, 0.1)  # MSE 0.01 -> 10 * log10(1 / 0.01) = 20 dB
    assert torch.allclose(psnr(pred, target), torch.tensor([20.0, 20.0]), atol=1e-4)
    # data_range scales the peak: MSE 0.01 on a range of 255 -> 10 * log10(255^2 / 0.01)
    assert psnr(pred, target, data_range=255)[0].item() == pytest.approx(
        10 * math.log10(255**2 / 0.01), abs=1e-3
    )
    assert torch.isinf(psnr(target, target)).all()


def test_ms_ssim_on_known_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 64, 64, generator=g)
    assert torch.allclose(ms_ssim(x, x), torch.ones(3), atol=1e-5)
    slightly = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    badly = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (ms_ssim(badly, x) < ms_ssim(slightly, x)).all() and (
        ms_ssim(slightly, x) < 1
    ).all()
    # With a single scale, MS-SSIM is SSIM.
    single = ms_ssim(slightly, x, kernel_size=7, scales=1)
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=7, reduction="none")(
        slightly, x
    ).reshape(-1)
    assert torch.allclose(single, ssim, atol=1e-5)


def test_ms_ssim_scales_fit_the_image():
    assert ms_ssim_scales(176) == len(MS_SSIM_WEIGHTS)  # MONAI: 176 // 16 = 11 > 10
    assert ms_ssim_scales(175) == 4
    assert ms_ssim_scales(32, kernel_size=7) == 3
    with pytest.raises(ValueError, match="too small for an SSIM window of 11"):
        ms_ssim_scales(10)
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="4 MS-SSIM scales do not fit images of shape"):
        ms_ssim(x, x, kernel_size=7, scales=4)


def _monai_runs(size, kernel, scales):
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(size))
    weights = tuple(w / sum(MS_SSIM_WEIGHTS[:scales]) for w in MS_SSIM_WEIGHTS[:scales])
    try:
        MultiScaleSSIMMetric(
            spatial_dims=2, kernel_size=kernel, weights=weights, reduction="none"
        )(x, x)
    except (ValueError, RuntimeError):
        return False
    return True


@pytest.mark.parametrize("kernel", [7, 11])
def test_scales_agree_with_what_monai_can_compute(kernel):
    """A sweep over sizes: n scales are said to fit exactly when MONAI computes n scales without error
    (the sizes 49-62 for a 7-pixel window and 81-98 for an 11-pixel one used to crash)."""
    for size in range(kernel, 200):
        fit = ms_ssim_scales(size, kernel)
        for scales in range(1, len(MS_SSIM_WEIGHTS) + 1):
            assert _monai_runs(size, kernel, scales) == (scales <= fit), (
                size,
                kernel,
                scales,
                fit,
            )
    for size in (kernel, 3 * kernel, 63, 99, 150, 199):
        fit = ms_ssim_scales(size, kernel)
        g = torch.Generator().manual_seed(size)
        x = torch.rand(
            2, 1, size, size + 5, generator=g
        )  # not square: the smaller side decides
        noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        weights = tuple(w / sum(MS_SSIM_WEIGHTS[:fit]) for w in MS_SSIM_WEIGHTS[:fit])
        reference = MultiScaleSSIMMetric(
            spatial_dims=2, kernel_size=kernel, weights=weights, reduction="none"
        )(noisy, x).reshape(-1)
        assert torch.allclose(ms_ssim(noisy, x, kernel_size=kernel), reference)
        assert torch.allclose(
            ms_ssim(x, x, kernel_size=kernel), torch.ones(2), atol=1e-5
        )


def test_paired_difference_interval():
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.normal(25, 3, 300)  # images differ a lot ...
    better = (
        base + 0.5 + rng.normal(0, 0.1, 300)
    )  # ... the paired difference hardly at all
    d = paired_difference(better, base)
    assert d["low"] < 0.5 < d["high"] and d["high"] - d["low"] < 0.05
    assert d["a_better"] == 1.0 and d["n"] == 300
    same = paired_difference(
        base + 1.0, base
    )  # a constant difference: no spread, no NaN interval
    assert same["low"] == same["high"] == pytest.approx(1.0) and same["ties"] == 0.0
    assert paired_difference(base, base)["ties"] == 1.0
    with pytest.raises(ValueError, match="same length"):
        paired_difference(better, base[:-1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        paired_difference(np.array([1.0, np.inf]), np.array([1.0, 2.0]))


def test_ms_ssim_3d_and_shape_errors():
    v = torch.rand(2, 1, 24, 24, 24)
    assert torch.allclose(ms_ssim(v, v, kernel_size=5), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="differs from target shape"):
        psnr(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\)"):
        ms_ssim(torch.rand(8, 8), torch.rand(8, 8))
