"""The frozen stage-1 model seen from stage 2: the fingerprint of its weights
(:func:`weights_fingerprint`), its posterior-mean latents, its reconstructions and the
head's projection of them (:func:`stage1_latents`, :func:`reconstruct`,
:func:`project`)."""

from __future__ import annotations

import hashlib

import torch

from ..models import ProjectionHead


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, shapes and values): which stage-1 model a head belongs to."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        value = value.detach().cpu().contiguous()
        h.update(f"{name} {tuple(value.shape)} {value.dtype}".encode())
        h.update(
            value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b""
        )
    return h.hexdigest()


@torch.no_grad()
def stage1_latents(
    autoencoder: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 128,
    device="cpu",
):
    """Posterior means of images in [0, 1] (the stage-1 latent)."""
    autoencoder.eval()
    out = [
        autoencoder.encode(x.to(device) * 2.0 - 1.0)[0].cpu()
        for x in images.split(batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def reconstruct(
    autoencoder: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 128,
    device="cpu",
):
    """Reconstructions in [0, 1] from the posterior mean: ``decode(mu)``, as in both stages (stage 2's
    head never feeds the decoder)."""
    mus = stage1_latents(autoencoder, images, batch_size, device)
    return torch.cat(
        [
            ((autoencoder.decode(m.to(device)) + 1) / 2).clamp(0, 1).cpu()
            for m in mus.split(batch_size)
        ]
    )


@torch.no_grad()
def project(
    autoencoder,
    head: ProjectionHead,
    images: torch.Tensor,
    batch_size: int = 128,
    device="cpu",
):
    """Stage-2 latents: ``head(posterior mean)``."""
    head.eval()
    mus = stage1_latents(autoencoder, images, batch_size, device)
    return torch.cat([head(m.to(device)).cpu() for m in mus.split(batch_size)])
