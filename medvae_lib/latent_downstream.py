"""Chapter ``04_latent_downstream``: what the latents are for. Classifiers of one family trained on
pixels, on stage-1 and stage-2 latents and on a resized image of the latent's size; their test AUROC
with bootstrap intervals; their speed on latents against pixels; and the rate-distortion trade of the
four 2D MedVAE configurations.

MedVAE's own downstream classifiers are MONAI ResNets (``configs/model/monai_seresnet152.yaml`` in the
MedVAE repository). This chapter uses the same family, a MONAI :class:`~monai.networks.nets.ResNet`,
small enough for a CPU: basic blocks, one per stage, and a stem without striding or max pooling so
that an 8x8 latent and a 32x32 image go through the very same layers.
"""

from __future__ import annotations

import torch
from monai.networks.nets import ResNet


def build_classifier(
    in_channels: int,
    spatial_dims: int = 2,
    width: int = 16,
    layers: tuple[int, ...] = (1, 1, 1, 1),
    num_classes: int = 1,
    stem_stride: int = 1,
) -> ResNet:
    """A MONAI ResNet with basic blocks: ``width``, 2x, 4x, 8x channels in its four stages, ``layers``
    blocks per stage, a 3-wide stem with stride ``stem_stride`` and no max pooling; global average
    pooling makes it accept any input size. ``num_classes=1`` gives one logit (binary tasks)."""
    if in_channels < 1 or width < 1 or num_classes < 1 or stem_stride < 1:
        raise ValueError(
            f"in_channels, width, num_classes and stem_stride must be positive; got {in_channels}, {width}, "
            f"{num_classes}, {stem_stride}"
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


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
