"""Checks for the exercises of chapter 3 (MedVAE stage 2). Each recomputes the expected answer with the
frozen models the notebook passes, on validation images, and names the usual slip."""

from __future__ import annotations

import torch

from ..exercises import answer_check, close, number, numbers, report
from ..medvae_stage2 import LATENT_SCALE, embed, project, render_latent


@answer_check(number("the mean teacher distance"))
def check_03_1(
    value: float, teacher, images: torch.Tensor, latents: torch.Tensor
) -> bool:
    """``answer``: stage 2's loss on these images, by hand: the squared L2 distance between the teacher's
    embeddings of each image and of its rendered latent, summed over the embedding, averaged over images."""
    a, b = (
        embed(teacher, images).double(),
        embed(teacher, render_latent(latents)).double(),
    )
    per_image = (a - b).pow(2).sum(1)
    expected = per_image.mean().item()
    if close(value, expected, rtol=1e-3):
        return report(
            True,
            "that is stage 2's loss, image by image, averaged over the validation images.",
            "",
        )
    if close(value, expected / a.shape[1], rtol=1e-3):
        return report(
            False,
            "",
            "you averaged over the embedding; the loss sums the squared differences over it",
        )
    if close(value, per_image.sqrt().mean().item(), rtol=1e-3):
        return report(False, "", "that is the L2 distance; the loss uses its square")
    unrendered = (
        (a - embed(teacher, latents.mean(1, keepdim=True)).double())
        .pow(2)
        .sum(1)
        .mean()
        .item()
    )
    if close(value, unrendered, rtol=1e-3):
        return report(
            False,
            "",
            f"render the latent first: divide it by {LATENT_SCALE} (medvae_stage2.render_latent)",
        )
    return report(
        False,
        "",
        "embed the images and the rendered latents with the teacher (medvae_stage2.embed), then per image "
        "sum the squared differences, and average over images",
    )


@torch.no_grad()
def decoded_psnr(autoencoder, latents: torch.Tensor, images: torch.Tensor) -> float:
    """Mean PSNR (dB, images in [0, 1]) of the frozen decoder's output for ``latents``."""
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    decoded = (
        ((autoencoder.decode(latents.to(device)) + 1) / 2).clamp(0, 1).double().cpu()
    )
    mse = (decoded - images.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1 / mse)).mean().item()


@answer_check(number("the mean PSNR"))
def check_03_2(value: float, autoencoder, head, images: torch.Tensor) -> bool:
    """``answer``: the mean validation PSNR of the frozen decoder applied to the stage-2 latent P(mu)."""
    device = next(autoencoder.parameters()).device
    stage2 = project(autoencoder, head, images, device=device)
    expected = decoded_psnr(autoencoder, stage2, images)
    if close(value, expected, rtol=1e-3, atol=1e-2):
        return report(
            True,
            "the decoder was trained on stage-1 latents, and P(mu) is not one; MedVAE never decodes it, so it does "
            "not have to be.",
            "",
        )
    from ..medvae_stage2 import stage1_latents

    if close(
        value,
        decoded_psnr(
            autoencoder, stage1_latents(autoencoder, images, device=device), images
        ),
        rtol=1e-3,
        atol=1e-2,
    ):
        return report(
            False,
            "",
            "that is the PSNR of decode(mu), the stage-1 reconstruction; decode the head's output P(mu)",
        )
    return report(
        False,
        "",
        "decode P(mu) (trainer.latents(val_x)) with autoencoder.decode, map it from [-1, 1] to [0, 1] and clamp, then "
        "average the per-image PSNR",
    )


def share_in_unit_range(latents: torch.Tensor, scale: float) -> float:
    """The share of the rendered latents' values (``render_latent`` with ``scale``) that lie in [0, 1]."""
    rendered = render_latent(latents, scale)
    return ((rendered >= 0) & (rendered <= 1)).double().mean().item()


@answer_check(
    numbers(
        2,
        "each share",
        "give two numbers: (share with scale 4.6, share with scale 1.0)",
    )
)
def check_03_3(got: list[float], latents: torch.Tensor) -> bool:
    """``answer``: (share in [0, 1] with MedVAE's scale 4.6, share with scale 1.0) of the rendered latents."""
    expected = [
        share_in_unit_range(latents, LATENT_SCALE),
        share_in_unit_range(latents, 1.0),
    ]
    if close(got, expected, atol=1e-6):
        return report(
            True,
            "the scale decides how much of the rendered latent lands in the range the teacher expects.",
            "",
        )
    if close(got, expected[::-1], atol=1e-6):
        return report(
            False, "", "the two shares are swapped: MedVAE's scale 4.6 first, then 1.0"
        )
    if all(g > 1 for g in got):
        return report(
            False, "", "give shares between 0 and 1, not percentages or counts"
        )
    return report(
        False,
        "",
        "render with medvae_stage2.render_latent(latents, scale) and count the values v with 0 <= v <= 1",
    )
