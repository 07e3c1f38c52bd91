import functools
import math

import pytest
import torch

from medvae_lib.losses import (
    adaptive_adv_weight,
    hinge_d_loss,
    hinge_g_loss,
    kl_divergence,
    kl_loss,
    perceptual_loss,
    reconstruction_nll,
)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, sigma = (
        torch.randn(3, 2, 4, 4, generator=g),
        torch.rand(3, 2, 4, 4, generator=g) + 0.1,
    )
    q, p = torch.distributions.Normal(mu, sigma), torch.distributions.Normal(0.0, 1.0)
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    assert torch.allclose(kl_divergence(mu, sigma), expected, atol=1e-5)
    assert kl_loss(mu, sigma).item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert kl_loss(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)).item() == 0.0
    with pytest.raises(ValueError, match="sigma has shape"):
        kl_divergence(mu, sigma[:, :1])


def test_reconstruction_is_summed_over_pixels_like_medvae():
    x = torch.zeros(2, 1, 8, 8)
    x_hat = torch.full_like(x, 0.5)
    # MedVAE: (|x - x_hat| + w_p * p).sum() / batch, with p one value per image broadcast over pixels.
    p = torch.tensor([0.2, 0.4]).view(2, 1, 1, 1)
    medvae = ((x - x_hat).abs() + 0.5 * p).sum() / 2
    assert reconstruction_nll(
        x, x_hat, p, perceptual_weight=0.5
    ).item() == pytest.approx(medvae.item())
    with pytest.raises(ValueError, match="differs from reconstruction shape"):
        reconstruction_nll(x, x_hat[..., :4])


def test_kl_to_reconstruction_ratio_does_not_depend_on_image_size():
    """The reason for summing: with a 4x model, pixels and latent values grow together, so the balance
    that kl_weight sets is the same at 32x32 and at 128x128 (a mean over pixels would make KL 16x
    stronger relative to L1 at 128x128 than at 32x32... and H*W times stronger than MedVAE's)."""
    ratios = []
    for side in (32, 128):
        x, x_hat = torch.zeros(1, 1, side, side), torch.full((1, 1, side, side), 0.1)
        mu, sigma = (
            torch.ones(1, 1, side // 4, side // 4),
            torch.ones(1, 1, side // 4, side // 4),
        )
        ratios.append(kl_loss(mu, sigma).item() / reconstruction_nll(x, x_hat).item())
    assert ratios[0] == pytest.approx(ratios[1])


def test_hinge_losses_on_known_logits():
    assert (
        hinge_d_loss(
            torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -2.0)
        ).item()
        == 0.0
    )
    assert hinge_d_loss(torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)).item() == 1.0
    # only the margin violations count: real at 0.5 (0.5 short of +1), fake at -3 (beyond -1)
    assert hinge_d_loss(
        torch.full((1, 4), 0.5), torch.full((1, 4), -3.0)
    ).item() == pytest.approx(0.25)
    assert hinge_g_loss(torch.tensor([[1.0, 3.0]])).item() == -2.0


def test_adaptive_weight_balances_the_gradients_at_the_last_layer():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(4, 1, 3, padding=1)
    h = torch.randn(2, 4, 8, 8)
    out = layer(h)
    nll = out.abs().sum()
    adv = -(out * 0.5).mean()
    w = adaptive_adv_weight(nll, adv, layer.weight)
    g_nll = torch.autograd.grad(nll, layer.weight, retain_graph=True)[0].norm()
    g_adv = torch.autograd.grad(w * adv, layer.weight, retain_graph=True)[0].norm()
    assert not w.requires_grad
    assert g_adv.item() == pytest.approx(
        g_nll.item(), rel=1e-2
    )  # up to the 1e-4 in the denominator
    capped = adaptive_adv_weight(nll, adv * 1e-6, layer.weight, max_weight=10.0)
    assert capped.item() == 10.0


def test_lpips_wiring_on_an_offline_backbone(monkeypatch):
    """LPIPS needs VGG-16 weights from a hub; with the backbone swapped for an untrained VGG-16 the
    wiring can be checked offline: MONAI's PerceptualLoss on [-1, 1] images, zero for identical ones."""
    import torchvision
    from lpips import pretrained_networks

    untrained_vgg16 = functools.partial(torchvision.models.vgg16, weights=None)
    monkeypatch.setattr(
        pretrained_networks.tv,
        "vgg16",
        lambda pretrained=False, **kw: untrained_vgg16(),
    )
    torch.manual_seed(0)
    lpips = perceptual_loss("vgg", 2)
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    assert lpips(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert lpips(x, x.flip(-1)).item() > 0


def test_perceptual_ssim_is_offline_and_unknown_kinds_are_refused():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=g) * 2 - 1
    ssim = perceptual_loss("ssim", 2)
    assert (
        ssim(x, x).item() == pytest.approx(0.0, abs=1e-5) and ssim(x, -x).item() > 1.5
    )  # anti-correlated: SSIM < 0
    with pytest.raises(ValueError, match="unknown perceptual loss 'lpip'"):
        perceptual_loss("lpip", 2)
    assert math.isfinite(ssim(x, x.flip(-1)).item())
