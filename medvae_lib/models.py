"""The six MedVAE KL autoencoders (Varma et al., 2025), built on ``monai.networks.nets.AutoencoderKL``.

A MedVAE name reads ``medvae_<factor>_<latent channels>_<2d|3d>``: ``medvae_4_3_2d`` shrinks a 2D
image 4x per side into a 3-channel latent. ``AutoencoderKL`` halves the resolution once between two
consecutive entries of ``channels``, so a factor ``f`` needs ``log2(f) + 1`` levels.

``width`` scales the network: ``"full"`` is the LDM-style width MedVAE uses (128-256-512[-512], two
residual blocks a level); an integer ``w`` gives a small model ``(w, 2w, 4w[, 4w])`` with one block a
level, fast enough for CI mode on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from monai.networks.nets import AutoencoderKL


@dataclass(frozen=True)
class MedVAEConfig:
    name: str
    spatial_dims: int
    factor: int  # downsampling per side
    latent_channels: int

    @property
    def levels(self) -> int:
        return int(math.log2(self.factor)) + 1

    @property
    def compression(self) -> float:
        """Image values (one channel) per latent value: factor**dims / latent_channels."""
        return self.factor**self.spatial_dims / self.latent_channels

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Latent shape (C, *spatial) for an image of spatial shape ``image_shape``."""
        if len(image_shape) != self.spatial_dims:
            raise ValueError(f"{self.name} is {self.spatial_dims}D; got image shape {tuple(image_shape)}")
        bad = [s for s in image_shape if s % self.factor]
        if bad:
            raise ValueError(f"{self.name} needs every side divisible by {self.factor}; got {tuple(image_shape)}")
        return (self.latent_channels, *(s // self.factor for s in image_shape))


MEDVAE_CONFIGS: dict[str, MedVAEConfig] = {
    c.name: c
    for c in (
        MedVAEConfig("medvae_4_1_2d", 2, 4, 1),
        MedVAEConfig("medvae_4_3_2d", 2, 4, 3),
        MedVAEConfig("medvae_8_1_2d", 2, 8, 1),
        MedVAEConfig("medvae_8_4_2d", 2, 8, 4),
        MedVAEConfig("medvae_4_1_3d", 3, 4, 1),
        MedVAEConfig("medvae_8_1_3d", 3, 8, 1),
    )
}


def get_config(name: str) -> MedVAEConfig:
    try:
        return MEDVAE_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown MedVAE model {name!r}; choose one of {sorted(MEDVAE_CONFIGS)}") from None


def build_autoencoder(name: str, width: int | str = 32, in_channels: int = 1) -> AutoencoderKL:
    """A MONAI ``AutoencoderKL`` with the layout of MedVAE model ``name`` (see module docstring)."""
    cfg = get_config(name)
    if width == "full":
        channels = (128, 256, 512, 512)[: cfg.levels]
        num_res_blocks = 2
    elif isinstance(width, int) and width >= 8 and width % 8 == 0:
        channels = tuple(width * min(2**i, 4) for i in range(cfg.levels))
        num_res_blocks = 1
    else:
        raise ValueError(f"width must be 'full' or a positive multiple of 8, got {width!r}")
    return AutoencoderKL(
        spatial_dims=cfg.spatial_dims,
        in_channels=in_channels,
        out_channels=in_channels,
        channels=channels,
        num_res_blocks=(num_res_blocks,) * cfg.levels,
        attention_levels=(False,) * cfg.levels,
        latent_channels=cfg.latent_channels,
        norm_num_groups=min(32, channels[0] // 2),
        with_encoder_nonlocal_attn=width == "full",
        with_decoder_nonlocal_attn=width == "full",
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
