import math

import pytest
import torch
from monai.metrics import SSIMMetric

from medvae_lib.metrics import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_scales, psnr


def test_psnr_on_known_inputs():
    target = torch.zeros(2, 1, 16, 16)
    pred = torch.full_like(target, 0.1)  # MSE 0.01 -> 10 * log10(1 / 0.01) = 20 dB
    assert torch.allclose(psnr(pred, target), torch.tensor([20.0, 20.0]), atol=1e-4)
    # data_range scales the peak: MSE 0.01 on a range of 255 -> 10 * log10(255^2 / 0.01)
    assert psnr(pred, target, data_range=255)[0].item() == pytest.approx(10 * math.log10(255**2 / 0.01), abs=1e-3)
    assert torch.isinf(psnr(target, target)).all()


def test_ms_ssim_on_known_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 64, 64, generator=g)
    assert torch.allclose(ms_ssim(x, x), torch.ones(3), atol=1e-5)
    slightly = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    badly = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (ms_ssim(badly, x) < ms_ssim(slightly, x)).all() and (ms_ssim(slightly, x) < 1).all()
    # With a single scale, MS-SSIM is SSIM.
    single = ms_ssim(slightly, x, kernel_size=7, scales=1)
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=7, reduction="none")(slightly, x).reshape(-1)
    assert torch.allclose(single, ssim, atol=1e-5)


def test_ms_ssim_scales_fit_the_image():
    assert ms_ssim_scales(161) == len(MS_SSIM_WEIGHTS)  # 160 = (11 - 1) * 2**4
    assert ms_ssim_scales(160) == 4
    assert ms_ssim_scales(32, kernel_size=7) == 3
    with pytest.raises(ValueError, match="too small for an SSIM window of 11"):
        ms_ssim_scales(10)
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="4 MS-SSIM scales do not fit images of shape"):
        ms_ssim(x, x, kernel_size=7, scales=4)


def test_ms_ssim_3d_and_shape_errors():
    v = torch.rand(2, 1, 24, 24, 24)
    assert torch.allclose(ms_ssim(v, v, kernel_size=5), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="differs from target shape"):
        psnr(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\)"):
        ms_ssim(torch.rand(8, 8), torch.rand(8, 8))
