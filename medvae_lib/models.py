"""The six MedVAE KL autoencoders (Varma et al., 2025), built on ``monai.networks.nets.AutoencoderKL``.

A MedVAE name reads ``medvae_<factor>_<latent channels>_<2d|3d>``: ``medvae_4_3_2d`` shrinks a 2D
image 4x per side into a 3-channel latent. ``AutoencoderKL`` halves the resolution once between two
consecutive entries of ``channels``, so a factor ``f`` needs ``log2(f) + 1`` levels.

``width`` scales the network: ``"full"`` is the LDM-style width MedVAE uses (128-256-512[-512], two
residual blocks a level); an integer ``w`` gives a small model ``(w, 2w, 4w[, 4w])`` with one block a
level, fast enough for CI mode on a CPU.

MONAI's ``AutoencoderKL`` derives the posterior mean and log-variance with two 1x1 convolutions from an
encoder output that has only ``latent_channels`` channels. For a one-channel model that output is a
single number per latent position, so the mean and the log-variance are two affine functions of the
same number: the encoder cannot choose its uncertainty independently of its mean. Latent diffusion and
MedVAE (``double_z``) let the encoder output ``2 x latent_channels`` maps and split them into mean and
log-variance. :class:`MedVAEAutoencoder` does the same on top of MONAI's class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import AutoencoderKL
from monai.networks.nets.autoencoderkl import Encoder


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
            raise ValueError(
                f"{self.name} is {self.spatial_dims}D; got image shape {tuple(image_shape)}"
            )
        bad = [s for s in image_shape if s % self.factor]
        if bad:
            raise ValueError(
                f"{self.name} needs every side divisible by {self.factor}; got {tuple(image_shape)}"
            )
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
        raise ValueError(
            f"unknown MedVAE model {name!r}; choose one of {sorted(MEDVAE_CONFIGS)}"
        ) from None


class MedVAEAutoencoder(AutoencoderKL):
    """``monai.networks.nets.AutoencoderKL`` whose encoder outputs ``2 x latent_channels`` feature maps
    (MedVAE's ``double_z``); the 1x1 ``quant_conv_mu`` and ``quant_conv_log_sigma`` read all of them."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: tuple[int, ...],
        num_res_blocks: tuple[int, ...],
        latent_channels: int,
        norm_num_groups: int,
        with_nonlocal_attn: bool,
        norm_eps: float = 1e-6,
    ):
        attention_levels = (False,) * len(channels)
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            num_res_blocks=num_res_blocks,
            attention_levels=attention_levels,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            with_encoder_nonlocal_attn=with_nonlocal_attn,
            with_decoder_nonlocal_attn=with_nonlocal_attn,
        )
        self.encoder = Encoder(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            channels=channels,
            out_channels=2 * latent_channels,
            num_res_blocks=num_res_blocks,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            attention_levels=attention_levels,
            with_nonlocal_attn=with_nonlocal_attn,
        )
        for name in ("quant_conv_mu", "quant_conv_log_sigma"):
            conv = Convolution(
                spatial_dims=spatial_dims,
                in_channels=2 * latent_channels,
                out_channels=latent_channels,
                strides=1,
                kernel_size=1,
                padding=0,
                conv_only=True,
            )
            setattr(self, name, conv)


def decoder_output_layer(autoencoder: AutoencoderKL) -> torch.Tensor:
    """The weight of the decoder's last convolution (the ``last_layer`` of VQGAN's adaptive weight).

    MONAI's ``Decoder`` ends with a ``Convolution`` block (``decoder.blocks[-1]``) that maps to the
    image channels; this checks that layout, so a change in MONAI fails here with a clear message
    instead of silently balancing against the wrong layer.
    """
    last = autoencoder.decoder.blocks[-1]
    conv = getattr(last, "conv", None)
    if (
        not isinstance(conv, torch.nn.modules.conv._ConvNd)
        or conv.out_channels != autoencoder.decoder.out_channels
    ):
        raise TypeError(
            f"the decoder does not end in a convolution to the image channels: {type(last).__name__}"
        )
    return conv.weight


def build_autoencoder(
    name: str, width: int | str = 32, in_channels: int = 1
) -> MedVAEAutoencoder:
    """A :class:`MedVAEAutoencoder` with the layout of MedVAE model ``name`` (see module docstring)."""
    cfg = get_config(name)
    if width == "full":
        channels = (128, 256, 512, 512)[: cfg.levels]
        num_res_blocks = 2
    elif isinstance(width, int) and width >= 8 and width % 8 == 0:
        channels = tuple(width * min(2**i, 4) for i in range(cfg.levels))
        num_res_blocks = 1
    else:
        raise ValueError(
            f"width must be 'full' or a positive multiple of 8, got {width!r}"
        )
    return MedVAEAutoencoder(
        spatial_dims=cfg.spatial_dims,
        in_channels=in_channels,
        out_channels=in_channels,
        channels=channels,
        num_res_blocks=(num_res_blocks,) * cfg.levels,
        latent_channels=cfg.latent_channels,
        norm_num_groups=min(32, channels[0] // 2),
        with_nonlocal_attn=width == "full",
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_classifier(
    in_channels: int,
    spatial_dims: int = 2,
    width: int = 16,
    layers: tuple[int, ...] = (1, 1, 1, 1),
    num_classes: int = 1,
    stem_stride: int = 1,
):
    """The book's classifier family (chapter 4's downstream models, chapter 3's teacher, the
    benchmark): a MONAI ResNet with basic blocks, ``width``, 2x, 4x, 8x channels in its four stages,
    ``layers`` blocks per stage, a 3-wide stem with stride ``stem_stride`` and no max pooling; global
    average pooling makes it accept any input size. ``num_classes=1`` gives one logit (binary tasks).

    MedVAE's own downstream classifiers are MONAI ResNets too (``configs/model/monai_seresnet152.yaml``
    in the MedVAE repository); this one is small enough for a CPU."""
    from monai.networks.nets import ResNet

    if in_channels < 1 or width < 1 or num_classes < 1 or stem_stride < 1:
        raise ValueError(
            f"in_channels, width, num_classes and stem_stride must be positive; got {in_channels}, "
            f"{width}, {num_classes}, {stem_stride}"
        )
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if len(layers) != 4 or min(layers) < 1:
        raise ValueError(f"layers must give four positive block counts, got {layers}")
    return ResNet(
        block="basic",
        layers=list(layers),
        block_inplanes=[width, 2 * width, 4 * width, 8 * width],
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_size=3,
        conv1_t_stride=stem_stride,
        no_max_pool=True,
        num_classes=num_classes,
    )
