"""The network: the learnable prior fused into X_h (:class:`PriorFusion`), the
one-contrast-in, four-contrasts-out :class:`PUIRNet` on a MONAI backbone, and
:func:`build_model` for a variant of the ablation."""

from __future__ import annotations

import math

import torch
from torch import nn

from .settings import CONTRASTS, VARIANTS


class PriorFusion(nn.Module):
    """The learnable biological prior and the fusion into X_h, as
    ``SSLHead.refine_semantic`` of the released code: a parameter ``static_prior`` of
    the bottleneck's shape is the key and value of a multi-head attention whose queries
    are the bottleneck features. As in the code, the attention's tokens are the C
    channels and each token is the channel's map over the bottleneck's positions (27
    numbers for 3 x 3 x 3). The attended prior goes through two convolutions and is
    fused with the features by a convolution of [features, attended prior, features]."""

    def __init__(self, channels: int, spatial: tuple[int, ...], heads: int):
        super().__init__()
        n = math.prod(spatial)
        if n % heads:
            raise ValueError(
                f"{heads} attention heads do not divide the {n} bottleneck positions {spatial}"
            )
        conv = nn.Conv2d if len(spatial) == 2 else nn.Conv3d
        self.static_prior = nn.Parameter(torch.randn(1, channels, *spatial))
        self.attn = nn.MultiheadAttention(n, heads, batch_first=True)
        self.transfer = nn.Sequential(
            conv(channels, channels, 3, padding=1),
            conv(channels, channels, 3, padding=1),
        )
        self.fuse = conv(3 * channels, channels, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if tuple(features.shape[1:]) != tuple(self.static_prior.shape[1:]):
            raise ValueError(
                f"bottleneck features {tuple(features.shape[1:])} do not match the prior {tuple(self.static_prior.shape[1:])}"
            )
        prior = self.static_prior.expand(
            len(features), *self.static_prior.shape[1:]
        ).flatten(2)
        attended = self.attn(features.flatten(2), prior, prior, need_weights=False)[
            0
        ].reshape(features.shape)
        attended = self.transfer(attended)
        return self.fuse(torch.cat([features, attended, features], 1))


class PUIRNet(nn.Module):
    """One contrast in (repeated to four channels, as the released code), four contrasts out, X_h at the
    bottleneck. ``backbone`` is MONAI's ``SwinUNETR`` (the paper's) or ``BasicUNet`` (a small U-Net for CPU
    runs); their encoder and decoder blocks are reused, with :class:`PriorFusion` between them when
    ``prior`` is on, and rotation / contrastive heads on X_h when ``ssl`` is on."""

    def __init__(
        self,
        spatial_dims: int = 2,
        image_size: int = 64,
        backbone: str = "basicunet",
        features=(8, 16, 32, 48, 64, 8),
        feature_size: int = 12,
        prior: bool = False,
        ssl: bool = False,
        prior_heads: int = 4,
        contrastive_dim: int = 128,
        skips: bool = True,
    ):
        super().__init__()
        self.skips = skips
        from monai.networks.nets import BasicUNet, SwinUNETR

        n = len(CONTRASTS)
        self.backbone_name = backbone
        if backbone == "basicunet":
            self.net = BasicUNet(
                spatial_dims=spatial_dims,
                in_channels=n,
                out_channels=n,
                features=tuple(features),
            )
            channels, factor = features[4], 16
        elif backbone == "swinunetr":
            self.net = SwinUNETR(
                in_channels=n,
                out_channels=n,
                feature_size=feature_size,
                spatial_dims=spatial_dims,
            )
            channels, factor = 16 * feature_size, 32
        else:
            raise ValueError(
                f"backbone must be 'basicunet' or 'swinunetr', got {backbone!r}"
            )
        if image_size % factor:
            raise ValueError(
                f"{backbone} needs an image size divisible by {factor}, got {image_size}"
            )
        self.spatial = (image_size // factor,) * spatial_dims
        self.channels = channels
        self.prior = PriorFusion(channels, self.spatial, prior_heads) if prior else None
        self.rotation_head = nn.Linear(channels, 4) if ssl else None
        self.contrastive_head = nn.Linear(channels, contrastive_dim) if ssl else None

    def encode(self, x: torch.Tensor):
        """Skip features and the bottleneck features of one input."""
        net = self.net
        if self.backbone_name == "basicunet":
            x0 = net.conv_0(x)
            x1 = net.down_1(x0)
            x2 = net.down_2(x1)
            x3 = net.down_3(x2)
            return (x0, x1, x2, x3), net.down_4(x3)
        hidden = net.swinViT(x, net.normalize)
        skips = (
            net.encoder1(x),
            net.encoder2(hidden[0]),
            net.encoder3(hidden[1]),
            net.encoder4(hidden[2]),
            hidden[3],
        )
        return skips, hidden[4]

    def decode(self, skips, x_h: torch.Tensor) -> torch.Tensor:
        """The four contrasts from X_h and the skip features. Without skip connections
        (``skips=False``) the skips are zeros: the image reaches the decoder only
        through X_h."""
        net = self.net
        if not self.skips:
            skips = tuple(torch.zeros_like(s) for s in skips)
        if self.backbone_name == "basicunet":
            x0, x1, x2, x3 = skips
            u = net.upcat_4(x_h, x3)
            u = net.upcat_3(u, x2)
            u = net.upcat_2(u, x1)
            return net.final_conv(net.upcat_1(u, x0))
        enc0, enc1, enc2, enc3, h3 = skips
        d = net.decoder5(net.encoder10(x_h), h3)
        d = net.decoder4(d, enc3)
        d = net.decoder3(d, enc2)
        d = net.decoder2(d, enc1)
        return net.out(net.decoder1(d, enc0))

    def x_h(self, x: torch.Tensor) -> torch.Tensor:
        """The personalised representation of an input: the bottleneck, fused with the prior if there is one."""
        _, bottleneck = self.encode(x)
        return self.prior(bottleneck) if self.prior is not None else bottleneck

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        skips, bottleneck = self.encode(x)
        x_h = self.prior(bottleneck) if self.prior is not None else bottleneck
        out = {"out": self.decode(skips, x_h), "x_h": x_h}
        if self.rotation_head is not None:
            tokens = x_h.flatten(2).transpose(
                1, 2
            )  # (B, positions, C); as the code: token 0 and token 1
            out["rotation"] = self.rotation_head(tokens[:, 0])
            out["contrastive"] = self.contrastive_head(tokens[:, 1])
        return out


def build_model(settings: dict, variant: str) -> PUIRNet:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {list(VARIANTS)}")
    v = VARIANTS[variant]
    return PUIRNet(
        spatial_dims=settings["spatial_dims"],
        image_size=settings["image_size"],
        backbone=settings["backbone"],
        features=settings["features"],
        feature_size=settings["feature_size"],
        prior=v["prior"],
        ssl=v["ssl"],
        prior_heads=settings["prior_heads"],
        contrastive_dim=settings["contrastive_dim"],
        skips=v.get("skips", settings.get("skips", True)),
    )
