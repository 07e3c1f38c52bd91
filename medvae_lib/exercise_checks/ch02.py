"""Checks for the exercises of chapter 2 (MedVAE stage 1). Each computes the expected answer from the
objects the notebook passes (validation images, their posterior) and names the usual slip."""

from __future__ import annotations

import torch

from ..exercises import answer_check, close, number, numbers, report


def kl_per_image(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over each image's latent values, by torch.distributions."""
    posterior = torch.distributions.Normal(z_mu.double(), z_sigma.double())
    return (
        torch.distributions.kl_divergence(
            posterior, torch.distributions.Normal(0.0, 1.0)
        )
        .flatten(1)
        .sum(1)
    )


@answer_check(number("the ratio"))
def check_02_2(
    value: float,
    z_mu: torch.Tensor,
    z_sigma: torch.Tensor,
    rec_per_image: float,
    kl_weight: float = 1e-2,
) -> bool:
    """``answer``: kl_weight x (KL per image, mean over images) / the summed L1 term per image."""
    kl = kl_per_image(z_mu, z_sigma).mean().item()
    expected = kl_weight * kl / float(rec_per_image)
    if close(value, expected, rtol=1e-2):
        return report(
            True,
            f"at kl_weight = {kl_weight:g} the KL term would no longer be negligible next to the reconstruction term.",
            "",
        )
    n = z_mu[0].numel()
    if close(value, expected / n, rtol=1e-2):
        return report(
            False,
            "",
            "you averaged the KL over latent values; MedVAE's KL term is their sum per image",
        )
    if close(value, expected * 1e-6 / kl_weight, rtol=1e-2):
        return report(
            False,
            "",
            f"that is the ratio at MedVAE's 1e-6; the question is about kl_weight = {kl_weight:g}",
        )
    if close(value, 2 * expected, rtol=1e-2):
        return report(
            False, "", "twice the expected value: the closed-form KL has a factor 1/2"
        )
    return report(
        False,
        "",
        "per latent value 0.5 * (mu^2 + sigma^2 - log sigma^2 - 1), summed over each image's values, averaged over "
        "images, times kl_weight, divided by rec_per_image",
    )


def psnr_per_image(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / MSE) of each image in [0, 1]."""
    mse = (images.double() - reconstructions.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


@answer_check(
    numbers(
        2,
        "each PSNR",
        "give two numbers: (mean of per-image PSNR, PSNR of the pooled MSE)",
    )
)
def check_02_3(
    got: list[float], images: torch.Tensor, reconstructions: torch.Tensor
) -> bool:
    """``answer``: (mean of per-image PSNR, PSNR of the MSE pooled over all images), in dB."""
    per_image = psnr_per_image(images, reconstructions)
    mse = (images.double() - reconstructions.double()).pow(2).mean()
    expected = [per_image.mean().item(), (10 * torch.log10(1 / mse)).item()]
    if close(got, expected, rtol=1e-3):
        return report(
            True,
            "the pooled PSNR is lower: the worst images dominate a pooled MSE, while the per-image mean (what tables "
            "report) weighs every image equally in dB.",
            "",
        )
    if close(got, expected[::-1], rtol=1e-3):
        return report(
            False,
            "",
            "the two numbers are swapped: per-image mean first, pooled second",
        )
    if close(
        got,
        [e - 10 * torch.log10(torch.tensor(4.0)).item() for e in expected],
        rtol=1e-3,
    ):
        return report(
            False,
            "",
            "about 6 dB too low: compute PSNR on the [0, 1] images, not on MedVAE's [-1, 1] scale",
        )
    if close(got[0], expected[0], rtol=1e-3):
        return report(
            False,
            "",
            "the per-image mean is right; for the second, average the squared error over all images first",
        )
    return report(
        False,
        "",
        "PSNR of one image is 10 log10(1 / MSE) with the MSE over its pixels, for images in [0, 1]",
    )
