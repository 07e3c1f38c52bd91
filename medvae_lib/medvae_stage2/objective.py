"""Stage 2's objective, image by image: the latent rendered as the one-channel image
the teacher sees (:func:`render_latent`), the teacher's distance between image and
rendered latent (:func:`teacher_distance`), and its embeddings (:func:`embed`)."""

from __future__ import annotations

import torch

from ..teachers import FrozenTeacher

LATENT_SCALE = (
    4.6  # MedVAE's BiomedClipLoss divides the latent by 4.6 before rendering it
)


def render_latent(latent: torch.Tensor, scale: float = LATENT_SCALE) -> torch.Tensor:
    """A latent as the one-channel image the teacher sees: divided by ``scale`` and
    averaged over its channels, as MedVAE's ``BiomedClipLoss`` does (the teacher then
    tiles, resizes and normalises it). The values are not clipped to [0, 1]: a latent is
    not an image, and clipping would stop gradients."""
    if latent.ndim != 4:
        raise ValueError(
            f"render_latent takes (N, C, H, W) 2D latents; got {tuple(latent.shape)}"
        )
    return (latent / scale).mean(1, keepdim=True)


def teacher_distance(
    teacher: FrozenTeacher,
    images: torch.Tensor,
    latents: torch.Tensor,
    batch_size: int = 128,
):
    """Per image, the squared L2 distance between the teacher's embedding of the image (in [0, 1]) and of
    the rendered latent: stage 2's loss, image by image."""
    if len(images) != len(latents):
        raise ValueError(f"{len(images)} images but {len(latents)} latents")
    out = []
    device = next(teacher.parameters()).device
    with torch.no_grad():
        for x, z in zip(
            images.split(batch_size), latents.split(batch_size), strict=True
        ):
            x, z = x.to(device), z.to(device)
            out.append(((teacher(x) - teacher(render_latent(z))) ** 2).sum(1).cpu())
    return torch.cat(out)


@torch.no_grad()
def embed(
    teacher: FrozenTeacher, images: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """The teacher's embeddings of ``images`` (in [0, 1]), batch by batch, on the CPU."""
    device = next(teacher.parameters()).device
    return torch.cat([teacher(x.to(device)).cpu() for x in images.split(batch_size)])
