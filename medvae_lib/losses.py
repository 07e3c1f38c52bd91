"""The losses of the book's autoencoders, in one place (stage 1, stage 2 and 3D reuse them).

They follow the latent-diffusion ``LPIPSWithDiscriminator`` that MedVAE trains with
(``medvae/losses/vae_losses.py`` in StanfordMIMI/MedVAE):

* :func:`reconstruction_nll`: ``(|x - x_hat| + w_p * perceptual).sum() / batch`` -- the L1 map and the
  per-image perceptual distance are **summed over pixels** and averaged over the batch;
* :func:`kl_loss`: the closed-form Gaussian KL, **summed over latent values**, averaged over the batch;
* :func:`hinge_d_loss` / :func:`hinge_g_loss`: the PatchGAN hinge losses on raw logits;
* :func:`adaptive_adv_weight`: VQGAN's balance of the adversarial against the reconstruction gradient.

Because both the reconstruction and the KL term are sums, their ratio does not depend on the image
size, and ``kl_weight = 1e-6`` means what it means in MedVAE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over every latent value of each sample:
    shape (batch,).

    Closed form per value: ``0.5 * (mu^2 + sigma^2 - log sigma^2 - 1)``.
    """
    if z_mu.shape != z_sigma.shape:
        raise ValueError(
            f"mu has shape {tuple(z_mu.shape)} but sigma has shape {tuple(z_sigma.shape)}"
        )
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2)) - 1)
    return kl.flatten(1).sum(1)


def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """MedVAE's KL term: ``posterior.kl().sum() / batch``, the per-sample KL averaged over the batch."""
    return kl_divergence(z_mu, z_sigma).mean()


def reconstruction_nll(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    perceptual: torch.Tensor | float = 0.0,
    perceptual_weight: float = 1.0,
) -> torch.Tensor:
    """MedVAE's reconstruction term: ``(|x - x_hat| + w_p * p).sum() / batch``.

    ``perceptual`` is the perceptual distance, one value per image or its batch mean
    (LPIPS gives one value per image, broadcast over the pixels before the sum), so it
    enters multiplied by the number of values per image, exactly as in MedVAE. The
    learned log-variance of latent diffusion's ``nll_loss`` stays at its initial 0 in
    MedVAE (it is not in the optimiser), so it is left out."""
    if x.shape != x_hat.shape:
        raise ValueError(
            f"image shape {tuple(x.shape)} differs from reconstruction shape {tuple(x_hat.shape)}"
        )
    batch, values = x.shape[0], math.prod(x.shape[1:])
    l1 = (x - x_hat).abs().sum() / batch
    p = torch.as_tensor(perceptual, dtype=x.dtype, device=x.device).reshape(-1).mean()
    return l1 + perceptual_weight * p * values


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: push real patches' logits above +1 and reconstructed ones below -1."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: raise the discriminator's logits on reconstructions."""
    return -logits_fake.mean()


def adaptive_adv_weight(
    nll: torch.Tensor,
    adv_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VQGAN's balance (Esser et al., 2021), as in latent diffusion and MedVAE:
    ``||grad_last nll|| / (||grad_last adv|| + 1e-4)``, clamped to ``[0, max_weight]``
    and detached, so that the adversarial gradient at the decoder's last layer is as
    large as the reconstruction one.

    Under float16 the trainer passes both losses multiplied by the gradient scaler's
    scale ``s`` and ``eps = 1e-4 s``, which gives the same ratio. A gradient that
    overflowed gives 0 (``max_weight`` if only the reconstruction gradient is infinite),
    never NaN, so the logged loss stays finite; the scaler then skips that step."""
    g_rec = torch.autograd.grad(nll, last_layer, retain_graph=True)[0].float()
    g_adv = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0].float()
    ratio = (g_rec.norm() / (g_adv.norm() + eps)).clamp(0.0, max_weight)
    return torch.nan_to_num(ratio, nan=0.0).detach()


PERCEPTUAL_KINDS = ("ssim", "alex", "vgg", "squeeze")


class SSIMPerceptual(torch.nn.Module):
    """``1 - SSIM`` (MONAI's ``SSIMLoss``) for images in ``[-1, 1]``. SSIM's luminance term assumes
    non-negative intensities (for ``x`` against ``-x`` two negative factors multiply to a high score),
    so the images are mapped to ``[0, 1]`` first."""

    def __init__(self, spatial_dims: int, win_size: int = 7):
        super().__init__()
        from monai.losses import SSIMLoss

        self.ssim = SSIMLoss(
            spatial_dims=spatial_dims, data_range=1.0, win_size=win_size
        )

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.ssim((x_hat + 1) / 2, (x + 1) / 2)


def perceptual_loss(kind: str, spatial_dims: int) -> torch.nn.Module:
    """The perceptual term for images in ``[-1, 1]`` (MedVAE's range).

    ``"alex"`` / ``"vgg"`` / ``"squeeze"``: LPIPS through ``monai.losses.PerceptualLoss`` (needs the
    ``lpips`` package and weights from a hub: full mode; LPIPS expects ``[-1, 1]``). ``"ssim"``:
    :class:`SSIMPerceptual`, a structural loss that needs no pretrained weights (CI mode, offline).
    """
    from monai.losses import PerceptualLoss

    if kind == "ssim":
        return SSIMPerceptual(spatial_dims)
    if kind not in PERCEPTUAL_KINDS:
        raise ValueError(
            f"unknown perceptual loss {kind!r}; choose one of {PERCEPTUAL_KINDS}"
        )
    return PerceptualLoss(
        spatial_dims=spatial_dims, network_type=kind, is_fake_3d=spatial_dims == 3
    )
