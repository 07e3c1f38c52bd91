"""The six MedVAE KL autoencoders (Varma et al., 2025), layer for layer as MedVAE's code.

A MedVAE name reads ``medvae_<factor>_<latent channels>_<2d|3d>``: ``medvae_4_3_2d`` shrinks a 2D
image 4x per side into a 3-channel latent. The network is the latent-diffusion autoencoder that
MedVAE's ``medvae/utils/vae/diffusionmodels.py`` (2D) and ``diffusionmodels_3d.py`` (3D) define,
written here once for both dimensions, with the same module names, so a state dict moves between
the book's :class:`MedVAE` and MedVAE's ``AutoencoderKL`` with ``strict=True`` (tested against the
official package, ``medvae==0.1.7``, in ``tests/test_models.py``):

* encoder: a 3x3 convolution, then per level ``num_res_blocks`` residual blocks and a stride-2
  down-sampling (zero-padded on the right and bottom only) except at the last level, a middle of
  residual block, self-attention, residual block, then GroupNorm, SiLU and a 3x3 convolution to
  ``2 x z_channels`` maps (``double_z``: a mean and a log-variance per latent value);
* ``quant_conv`` (1x1) to ``2 x embed_dim``, split into mean and log-variance (clamped to
  [-30, 20]); ``post_quant_conv`` (1x1) back to ``z_channels``;
* decoder: a 3x3 convolution, the same middle, then per level ``num_res_blocks + 1`` residual
  blocks and a nearest-neighbour up-sampling with a 3x3 convolution, then GroupNorm, SiLU, 3x3;
* stage 2's head, ``channel_proj(channel_ds(z) + z)``.

The published 3- and 4-channel models are latent diffusion's KL autoencoders (three input
channels) with rank-4 LoRA adapters on every convolution of the residual and attention blocks
(``lora_rank=4``; the adapter keys are MedVAE's ``conv`` / ``lora_down`` / ``lora_up``).

``width`` scales the network: ``"full"`` is the published configuration (:data:`PUBLISHED`); an
integer ``w`` gives a small model (channels ``w, 2w, 4w[, 4w]``, one residual block a level in the
encoder and two in the decoder, GroupNorm with ``w // 2`` groups where MedVAE has 32), fast enough
for CI mode on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


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
                f"{self.name} needs every side divisible by {self.factor}; "
                f"got {tuple(image_shape)}"
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


@dataclass(frozen=True)
class Architecture:
    """MedVAE's ``ddconfig`` and ``embed_dim`` (the fields of its YAML files), plus the
    dimension, the GroupNorm groups and the LoRA rank, which its code fixes elsewhere."""

    spatial_dims: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z_channels: int
    embed_dim: int
    in_channels: int = 1
    out_ch: int = 1
    attn_resolutions: tuple[int, ...] = ()
    resolution: int = 512
    dropout: float = 0.0
    norm_groups: int = 32
    lora_rank: int = 0

    def ddconfig(self) -> dict:
        """The ``ddconfig`` dict MedVAE's ``AutoencoderKL`` takes."""
        return {
            "double_z": True,
            "z_channels": self.z_channels,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "out_ch": self.out_ch,
            "ch": self.ch,
            "ch_mult": list(self.ch_mult),
            "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": list(self.attn_resolutions),
            "dropout": self.dropout,
        }


def _published(dims, ch_mult, z, in_ch, lora, resolution=512):
    return Architecture(
        spatial_dims=dims,
        ch=128,
        ch_mult=ch_mult,
        num_res_blocks=2,
        z_channels=z,
        embed_dim=z,
        in_channels=in_ch,
        out_ch=in_ch,
        resolution=resolution,
        lora_rank=4 if lora else 0,
    )


# The published models: hub repository stanfordmimi/MedVAE, folder model_weights/; the
# configuration files medvae_4x1.yaml (4_1 2D and 3D), medvae_8x1.yaml (8_1 2D and 3D),
# medvae_4x3.yaml and medvae_8x4.yaml (latent diffusion's kl-f4 and kl-f8, three input
# channels, LoRA added by medvae.utils.factory.build_model).
PUBLISHED: dict[str, Architecture] = {
    "medvae_4_1_2d": _published(2, (1, 2, 4), 1, 1, False),
    "medvae_4_3_2d": _published(2, (1, 2, 4), 3, 3, True, 256),
    "medvae_8_1_2d": _published(2, (1, 2, 4, 4), 1, 1, False),
    "medvae_8_4_2d": _published(2, (1, 2, 4, 4), 4, 3, True, 256),
    "medvae_4_1_3d": _published(3, (1, 2, 4), 1, 1, False),
    "medvae_8_1_3d": _published(3, (1, 2, 4, 4), 1, 1, False),
}


def architecture(
    name: str, width: int | str = 32, in_channels: int = 1
) -> Architecture:
    """The layout of MedVAE model ``name`` at ``width`` (see the module docstring)."""
    cfg = get_config(name)
    if width == "full":
        return PUBLISHED[name]
    if not (isinstance(width, int) and width >= 8 and width % 8 == 0):
        raise ValueError(
            f"width must be 'full' or a positive multiple of 8, got {width!r}"
        )
    return Architecture(
        spatial_dims=cfg.spatial_dims,
        ch=width,
        ch_mult=(1, 2, 4, 4)[: cfg.levels],
        num_res_blocks=1,
        z_channels=cfg.latent_channels,
        embed_dim=cfg.latent_channels,
        in_channels=in_channels,
        out_ch=in_channels,
        norm_groups=min(32, width // 2),
    )


# ---- building blocks (MedVAE's diffusionmodels.py, for 2D and 3D) ------------------


def _conv(dims: int):
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


class LoRAConv(nn.Module):
    """A convolution with a rank-``r`` adapter, ``conv(x) + lora_up(lora_down(x))``, as
    MedVAE's ``LoraInjectedConv2d`` / ``3d`` (``medvae/utils/lora.py``; its dropout, 0.1,
    acts on the adapter's output in training; its selector is the identity)."""

    def __init__(self, dims, in_ch, out_ch, kernel_size, stride=1, padding=0, r=4):
        super().__init__()
        conv = _conv(dims)
        self.conv = conv(in_ch, out_ch, kernel_size, stride, padding)
        self.lora_down = conv(in_ch, r, kernel_size, stride, padding, bias=False)
        self.dropout = nn.Dropout(0.1)
        self.lora_up = conv(r, out_ch, 1, bias=False)
        nn.init.normal_(self.lora_down.weight, std=1 / r)
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x):
        return self.conv(x) + self.dropout(self.lora_up(self.lora_down(x)))


def _block_conv(dims, in_ch, out_ch, kernel_size, lora_rank, padding):
    if lora_rank:
        return LoRAConv(dims, in_ch, out_ch, kernel_size, 1, padding, lora_rank)
    return _conv(dims)(in_ch, out_ch, kernel_size, 1, padding)


def _norm(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, GroupNorm, SiLU, dropout, 3x3 conv, plus the input
    (through a 1x1 ``nin_shortcut`` when the channel count changes)."""

    def __init__(self, dims, in_ch, out_ch, dropout, groups, lora_rank=0):
        super().__init__()
        self.in_channels, self.out_channels = in_ch, out_ch
        self.norm1 = _norm(groups, in_ch)
        self.conv1 = _block_conv(dims, in_ch, out_ch, 3, lora_rank, 1)
        self.norm2 = _norm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _block_conv(dims, out_ch, out_ch, 3, lora_rank, 1)
        if in_ch != out_ch:
            self.nin_shortcut = _block_conv(dims, in_ch, out_ch, 1, lora_rank, 0)

    def forward(self, x, temb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, with 1x1 convolutions for the
    queries, keys, values and output, added to the input."""

    def __init__(self, dims, channels, groups, lora_rank=0):
        super().__init__()
        self.norm = _norm(groups, channels)
        for name in ("q", "k", "v", "proj_out"):
            setattr(self, name, _block_conv(dims, channels, channels, 1, lora_rank, 0))

    def forward(self, x):
        h = self.norm(x)
        b, c = x.shape[:2]

        def tokens(conv):  # (b, 1 head, positions, c)
            return conv(h).reshape(b, 1, c, -1).transpose(2, 3).contiguous()

        # softmax(q k^T / sqrt(c)) v, as MedVAE's two bmm calls compute it; PyTorch's fused
        # kernel never stores the positions x positions matrix (1 GiB per 512 px image)
        h = F.scaled_dot_product_attention(
            tokens(self.q), tokens(self.k), tokens(self.v)
        )
        return x + self.proj_out(h.transpose(2, 3).reshape(x.shape))


class Downsample(nn.Module):
    """Zero padding of one on the high side of every axis, then a stride-2 3x3 conv."""

    def __init__(self, dims, channels):
        super().__init__()
        self.conv = _conv(dims)(channels, channels, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1) * (x.ndim - 2)))


class Upsample(nn.Module):
    """Nearest-neighbour doubling of every axis, then a 3x3 conv."""

    def __init__(self, dims, channels):
        super().__init__()
        self.conv = _conv(dims)(channels, channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _middle(a: Architecture, channels: int) -> nn.Module:
    mid = nn.Module()
    args = (a.dropout, a.norm_groups, a.lora_rank)
    mid.block_1 = ResnetBlock(a.spatial_dims, channels, channels, *args)
    mid.attn_1 = AttnBlock(a.spatial_dims, channels, a.norm_groups, a.lora_rank)
    mid.block_2 = ResnetBlock(a.spatial_dims, channels, channels, *args)
    return mid


def _run_middle(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, a: Architecture):
        super().__init__()
        dims, conv = a.spatial_dims, _conv(a.spatial_dims)
        self.conv_in = conv(a.in_channels, a.ch, 3, 1, 1)
        self.down = nn.ModuleList()
        block_in, res = a.ch, a.resolution
        for level, mult in enumerate(a.ch_mult):
            down = nn.Module()
            down.block, down.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(a.num_res_blocks):
                down.block.append(
                    ResnetBlock(
                        dims,
                        block_in,
                        a.ch * mult,
                        a.dropout,
                        a.norm_groups,
                        a.lora_rank,
                    )
                )
                block_in = a.ch * mult
                if res in a.attn_resolutions:
                    down.attn.append(
                        AttnBlock(dims, block_in, a.norm_groups, a.lora_rank)
                    )
            if level != len(a.ch_mult) - 1:
                down.downsample = Downsample(dims, block_in)
                res //= 2
            self.down.append(down)
        self.mid = _middle(a, block_in)
        self.norm_out = _norm(a.norm_groups, block_in)
        self.conv_out = conv(block_in, 2 * a.z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for level, down in enumerate(self.down):
            for i, block in enumerate(down.block):
                h = block(h)
                if len(down.attn):
                    h = down.attn[i](h)
            if level != len(self.down) - 1:
                h = down.downsample(h)
        h = _run_middle(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, a: Architecture):
        super().__init__()
        dims, conv = a.spatial_dims, _conv(a.spatial_dims)
        block_in = a.ch * a.ch_mult[-1]
        res = a.resolution // 2 ** (len(a.ch_mult) - 1)
        self.conv_in = conv(a.z_channels, block_in, 3, 1, 1)
        self.mid = _middle(a, block_in)
        ups = []
        for level in reversed(range(len(a.ch_mult))):
            up = nn.Module()
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(a.num_res_blocks + 1):
                block_out = a.ch * a.ch_mult[level]
                up.block.append(
                    ResnetBlock(
                        dims,
                        block_in,
                        block_out,
                        a.dropout,
                        a.norm_groups,
                        a.lora_rank,
                    )
                )
                block_in = block_out
                if res in a.attn_resolutions:
                    up.attn.append(
                        AttnBlock(dims, block_in, a.norm_groups, a.lora_rank)
                    )
            if level != 0:
                up.upsample = Upsample(dims, block_in)
                res *= 2
            ups.insert(0, up)  # up[0] is the full-resolution level, as in MedVAE
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(a.norm_groups, block_in)
        self.conv_out = conv(block_in, a.out_ch, 3, 1, 1)

    def forward(self, z):
        h = _run_middle(self.mid, self.conv_in(z))
        for level in reversed(range(len(self.up))):
            up = self.up[level]
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if level != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class ProjectionHead(nn.Module):
    """MedVAE's stage-2 head: ``channel_proj(channel_ds(z) + z)``, a residual block on
    the latent that keeps its shape. Its state-dict keys are the ``channel_ds.*`` and
    ``channel_proj.*`` keys of MedVAE's ``AutoencoderKL``."""

    def __init__(self, latent_channels: int, spatial_dims: int = 2, hidden: int = 64):
        super().__init__()
        if latent_channels < 1 or hidden < 1:
            raise ValueError(
                "latent_channels and hidden must be positive, "
                f"got {latent_channels}, {hidden}"
            )
        conv = {2: nn.Conv2d, 3: nn.Conv3d}.get(spatial_dims)
        if conv is None:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.latent_channels = latent_channels
        self.channel_ds = nn.Sequential(
            conv(latent_channels, hidden, 1),
            nn.ReLU(),
            conv(hidden, hidden, 3, padding="same"),
            nn.ReLU(),
            conv(hidden, latent_channels, 1),
        )
        self.channel_proj = conv(latent_channels, latent_channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim < 4 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"the head takes (N, {self.latent_channels}, *spatial) latents; "
                f"got {tuple(z.shape)}"
            )
        return self.channel_proj(self.channel_ds(z) + z)


class MedVAE(nn.Module):
    """MedVAE's ``AutoencoderKL`` (2D or 3D) with the interface the book's trainers use:
    ``encode(x) -> (mu, sigma)``, ``decode(z)``, ``forward(x) -> (x_hat, mu, sigma)`` with
    ``z`` sampled from the posterior, and ``project(z)``, stage 2's head. Its state dict
    is MedVAE's, key for key."""

    def __init__(self, arch: Architecture):
        super().__init__()
        if arch.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {arch.spatial_dims}")
        self.arch = arch
        conv = _conv(arch.spatial_dims)
        self.encoder = Encoder(arch)
        self.decoder = Decoder(arch)
        self.quant_conv = conv(2 * arch.z_channels, 2 * arch.embed_dim, 1)
        self.post_quant_conv = conv(arch.embed_dim, arch.z_channels, 1)
        head = ProjectionHead(arch.embed_dim, arch.spatial_dims)
        self.channel_ds, self.channel_proj = head.channel_ds, head.channel_proj

    @property
    def latent_channels(self) -> int:
        return self.arch.embed_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean and standard deviation (MedVAE's
        ``DiagonalGaussianDistribution``: log-variance clamped to [-30, 20])."""
        if x.ndim != self.arch.spatial_dims + 2 or x.shape[1] != self.arch.in_channels:
            raise ValueError(
                f"this MedVAE takes (N, {self.arch.in_channels}, "
                f"{self.arch.spatial_dims} sides) images; got {tuple(x.shape)}"
            )
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

    def sampling(self, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return mu + sigma * torch.randn_like(sigma)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Stage 2's latent: ``channel_proj(channel_ds(z) + z)``."""
        return self.channel_proj(self.channel_ds(z) + z)

    def forward(self, x: torch.Tensor):
        mu, sigma = self.encode(x)
        return self.decode(self.sampling(mu, sigma)), mu, sigma


def grey_input(model: MedVAE, x: torch.Tensor) -> torch.Tensor:
    """A one-channel image ``x`` as ``model``'s input: the grey image on each of its input
    channels (three for the published 3- and 4-channel models, which read RGB)."""
    return x.expand(-1, model.arch.in_channels, *x.shape[2:])


def decoder_output_layer(autoencoder: MedVAE) -> torch.Tensor:
    """The weight of the decoder's last convolution (the ``last_layer`` of VQGAN's
    adaptive weight; MedVAE's ``get_last_layer``)."""
    return autoencoder.decoder.conv_out.weight


def build_autoencoder(name: str, width: int | str = 32, in_channels: int = 1) -> MedVAE:
    """A :class:`MedVAE` with the layout of MedVAE model ``name`` (see module docstring).
    ``width="full"`` is the published model's configuration, whatever ``in_channels``."""
    return MedVAE(architecture(name, width, in_channels))


def layout_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weight names and shapes: two models share it exactly
    when one's state dict loads into the other."""
    import hashlib

    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def published_ddconfig(name: str) -> tuple[dict, int]:
    """``(ddconfig, embed_dim)`` of the published model ``name``, for MedVAE's class."""
    arch = PUBLISHED[get_config(name).name]
    return arch.ddconfig(), arch.embed_dim


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


# ---- the published weights -------------------------------------------------------------

HUB_REPO = "stanfordmimi/MedVAE"
HUB_REVISION = "041f23d40d9890a3ee0cc1ee56e750e4b81acbe0"  # pinned: files cannot change
CHECKPOINTS = {
    "medvae_4_1_2d": "model_weights/vae_4x_1c_2D.ckpt",
    "medvae_4_3_2d": "model_weights/vae_4x_3c_2D.ckpt",
    "medvae_8_1_2d": "model_weights/vae_8x_1c_2D.ckpt",
    "medvae_8_4_2d": "model_weights/vae_8x_4c_2D.ckpt",
    "medvae_4_1_3d": "model_weights/vae_4x_1c_3D.ckpt",
    "medvae_8_1_3d": "model_weights/vae_8x_1c_3D.ckpt",
}


def _sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_published(name: str, path, sha256: str) -> MedVAE:
    """The published model ``name`` from its checkpoint file at ``path``, after checking
    the file's sha256 against ``sha256``; read with ``weights_only=True`` (tensors and
    containers only, no code). MedVAE's files hold ``{"state_dict": ...}`` (a bare state
    dict is accepted too). Every weight of the model must be in the file; weights the
    model does not have are named in ``model.ignored_keys``."""
    from collections.abc import Mapping

    got = _sha256(path)
    if got != sha256.lower():
        raise ValueError(
            f"{path}: sha256 {got} is not the {sha256} stated for {name}'s checkpoint; "
            "the download is incomplete or not the published file"
        )
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = saved.get("state_dict", saved) if isinstance(saved, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds no state dict (found {type(saved).__name__})")
    model = build_autoencoder(name, width="full")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise ValueError(
            f"{path} is not a {name} checkpoint: {len(missing)} weights missing "
            f"(e.g. {missing[:3]}), {len(wrong)} of another shape (e.g. {wrong[:3]})"
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    model.ignored_keys = sorted(set(state) - set(own))
    return model.eval()


def download_published(name: str, cache_dir=None, revision: str = HUB_REVISION):
    """Download the checkpoint of ``name`` from the hub at the pinned revision; returns
    its path and the sha256 the hub states for it (the Git LFS object id, which the hub
    sends as the file's ETag). ``HF_ENDPOINT`` points ``huggingface_hub`` at a mirror."""
    import re

    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    get_config(name)
    filename = CHECKPOINTS[name]
    meta = get_hf_file_metadata(hf_hub_url(HUB_REPO, filename, revision=revision))
    sha256 = (meta.etag or "").strip('"')
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(
            f"the hub states no sha256 for {HUB_REPO}/{filename} (ETag {meta.etag!r})"
        )
    path = hf_hub_download(HUB_REPO, filename, revision=revision, cache_dir=cache_dir)
    return path, sha256


def published_model(name: str, cache_dir=None) -> MedVAE:
    """MedVAE's published model ``name``, downloaded, verified and loaded (full mode)."""
    return load_published(name, *download_published(name, cache_dir))
