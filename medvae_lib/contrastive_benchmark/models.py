"""The shared architecture: the scratch and the pretrained image encoders, and
:class:`DualEncoder`, whose ``loss`` applies a method's objective."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .objectives import (
    LearnableLogitScale,
    clip_loss,
    cyclip_loss,
    dcl_loss,
    filip_loss,
    gloria_local_loss,
    nt_xent,
    siglip_loss,
)
from .settings import GENERAL_CLIP, METHODS, BenchmarkError
from .text_encoder import TextFeatures


def check_method(method: str) -> str:
    if method not in METHODS:
        raise BenchmarkError(f"unknown method {method!r}; known: {list(METHODS)}")
    return method


class ImageEncoder(nn.Module):
    """Four stride-2 stages of MONAI convolution blocks (conv, instance norm, PReLU);
    returns the global feature (mean over positions) and the region features of the last
    stage (B, R, C)."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 96)):
        super().__init__()
        from monai.networks.blocks import Convolution

        chans = [1, *widths]
        self.stages = nn.ModuleList(
            Convolution(
                2,
                chans[i],
                chans[i + 1],
                strides=2,
                kernel_size=3,
                norm="instance",
                act="prelu",
            )
            for i in range(len(widths))
        )
        self.out_dim = self.region_dim = widths[-1]

    def freeze_stages(self, n: int) -> None:
        """Freeze the first ``n`` stages (partial freezing, as the paper does for pretrained encoders)."""
        if not 0 <= n <= len(self.stages):
            raise BenchmarkError(
                f"can freeze 0 to {len(self.stages)} image stages, got {n}"
            )
        for stage in list(self.stages)[:n]:
            stage.requires_grad_(False)

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        regions = x.flatten(2).transpose(1, 2)
        return regions.mean(1), regions


class PretrainedImageEncoder(nn.Module):
    """The image tower of a pretrained open_clip model (general-domain CLIP or BiomedCLIP, loaded by
    :func:`medvae_lib.teachers.load_open_clip_model` from the hub or a local model directory), trainable,
    with the interface of :class:`ImageEncoder`: one-channel images in [0, 1] are resized to the model's
    input side, repeated to three channels and normalised with its own statistics; it returns the pooled,
    projected embedding (global feature) and the patch tokens (regions).

    ``freeze_stages(n)`` freezes the patch embedding and the first ``n`` transformer blocks: the paper's
    partial freezing (mmlearn's ``freeze_layers`` counts the embeddings and the blocks the same way)."""

    def __init__(self, model_id: str):
        super().__init__()
        from medvae_lib.teachers import load_open_clip_model, open_clip_preprocessing

        # OpenAI's CLIP weights need QuickGELU (open_clip's registry: "ViT-B-16", "openai", quick_gelu=True)
        model, self.model_id, self.provenance = load_open_clip_model(
            model_id, force_quick_gelu=model_id == GENERAL_CLIP
        )
        self.size, mean, std = open_clip_preprocessing(model, self.model_id)
        self.visual = (
            model.visual
        )  # the text tower is dropped: chapter 8's text side is MiniLM
        self.register_buffer(
            "mean",
            torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "std",
            torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
            persistent=False,
        )
        trunk = getattr(self.visual, "trunk", None)
        if (
            trunk is not None
        ):  # a timm tower (BiomedCLIP): blocks and tokens come from the timm ViT
            self.kind, self.blocks = "timm", trunk.blocks
            extra = [
                getattr(trunk, name, None)
                for name in ("cls_token", "reg_token", "pos_embed", "norm_pre")
            ]
            self.embedding = [trunk.patch_embed, *(p for p in extra if p is not None)]
            self.region_dim = trunk.num_features
        elif hasattr(self.visual, "transformer"):  # open_clip's own ViT (OpenAI CLIP)
            self.kind, self.blocks = "open_clip", self.visual.transformer.resblocks
            v = self.visual
            self.embedding = [
                v.conv1,
                v.class_embedding,
                v.positional_embedding,
                v.ln_pre,
            ]
            self.region_dim = v.transformer.width
        else:
            raise BenchmarkError(
                f"{model_id}: only ViT image towers (open_clip's own or timm's) are supported"
            )
        declared = getattr(
            self.visual, "output_dim", None
        )  # open_clip's ViT says; a timm tower does not
        if declared is None:
            with torch.no_grad():
                declared = self(torch.zeros(1, 1, self.size, self.size))[0].shape[-1]
        self.out_dim = int(declared)

    def freeze_stages(self, n: int) -> None:
        if not 0 <= n <= len(self.blocks):
            raise BenchmarkError(
                f"can freeze 0 to {len(self.blocks)} transformer blocks of {self.model_id}, got {n}"
            )
        if n == 0:
            return
        for part in [*self.embedding, *list(self.blocks)[:n]]:
            part.requires_grad_(
                False
            )  # a module's parameters, or a bare parameter (class token, positions)

    def forward(self, x):
        x = F.interpolate(
            x, size=(self.size, self.size), mode="bilinear", align_corners=False
        )
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        if self.kind == "timm":
            trunk = self.visual.trunk
            tokens = trunk.forward_features(x)
            pooled = self.visual.head(trunk.forward_head(tokens))
            return pooled, tokens[:, getattr(trunk, "num_prefix_tokens", 1) :]
        self.visual.output_tokens = True
        pooled, tokens = self.visual(x)
        return pooled, tokens


def image_encoder(settings: Mapping) -> nn.Module:
    """The image encoder a run's settings ask for: ``image_init="scratch"`` gives :class:`ImageEncoder`
    of ``widths``; any other value is an open_clip model id (``"hf-hub:..."``, ``"local-dir:..."``) for
    :class:`PretrainedImageEncoder`."""
    init = settings.get("image_init", "scratch")
    if init == "scratch":
        return ImageEncoder(settings["widths"])
    return PretrainedImageEncoder(init)


class DualEncoder(nn.Module):
    """The shared architecture: image encoder with global and region projections; a trainable text head
    on frozen token states (global: MLP on the masked mean; local: linear per token); a learnable
    logit scale; plus only the extra parameters the method needs."""

    def __init__(
        self,
        method: str,
        widths: Sequence[int],
        text_dim: int = 384,
        embed_dim: int = 64,
        image: nn.Module | None = None,
    ):
        super().__init__()
        self.method = check_method(method)
        self.image = image if image is not None else ImageEncoder(widths)
        c = self.image.out_dim
        self.img_proj = nn.Linear(c, embed_dim)
        self.txt_proj = nn.Sequential(
            nn.Linear(text_dim, 2 * embed_dim),
            nn.GELU(),
            nn.Linear(2 * embed_dim, embed_dim),
        )
        self.logit_scale = LearnableLogitScale()
        if method == "siglip":  # SigLIP's initialisation: t' = log 10, b = -10
            self.logit_scale = LearnableLogitScale(init=10.0, max_scale=100.0)
            self.sig_bias = nn.Parameter(torch.tensor(-10.0))
        if method in ("filip", "gloria"):
            self.img_local = nn.Linear(self.image.region_dim, embed_dim)
            self.txt_local = nn.Linear(text_dim, embed_dim)
        if method == "slip":  # SimCLR's projection MLP on the image feature
            self.ssl_head = nn.Sequential(
                nn.Linear(c, 2 * embed_dim),
                nn.GELU(),
                nn.Linear(2 * embed_dim, embed_dim),
            )
        if method == "clip_textssl":
            self.text_ssl_head = nn.Sequential(
                nn.Linear(embed_dim, 2 * embed_dim),
                nn.GELU(),
                nn.Linear(2 * embed_dim, embed_dim),
            )

    def embed_image(self, x):
        g, regions = self.image(x)
        return F.normalize(self.img_proj(g), dim=-1), g, regions

    def embed_text(self, tokens, mask):
        m = mask.unsqueeze(-1).float()
        pooled = (tokens.float() * m).sum(1) / m.sum(1).clamp(min=1)
        return F.normalize(self.txt_proj(pooled), dim=-1)

    def loss(
        self,
        views: Sequence[torch.Tensor],
        text: TextFeatures,
        generator: torch.Generator,
    ) -> torch.Tensor:
        img, feat, regions = self.embed_image(views[0])
        txt = self.embed_text(text.tokens, text.mask)
        scale = self.logit_scale()
        m = self.method
        if m == "siglip":
            return siglip_loss(img, txt, scale, self.sig_bias)
        if m == "cyclip":
            return cyclip_loss(img, txt, scale)
        if m == "dcl":
            return dcl_loss(img, txt, scale)
        loss = clip_loss(img, txt, scale)
        if m == "slip":
            a = F.normalize(self.ssl_head(self.image(views[1])[0]), dim=-1)
            b = F.normalize(self.ssl_head(self.image(views[2])[0]), dim=-1)
            loss = loss + nt_xent(a, b)
        elif m == "clip_textssl":
            keep1 = text.mask & (
                torch.rand(text.mask.shape, generator=generator) > 0.3
            ).to(text.mask.device)
            keep2 = text.mask & (
                torch.rand(text.mask.shape, generator=generator) > 0.3
            ).to(text.mask.device)
            a = F.normalize(
                self.text_ssl_head(
                    self.embed_text(text.tokens, keep1 | _first(text.mask))
                ),
                dim=-1,
            )
            b = F.normalize(
                self.text_ssl_head(
                    self.embed_text(text.tokens, keep2 | _first(text.mask))
                ),
                dim=-1,
            )
            loss = loss + nt_xent(a, b)
        elif m in ("filip", "gloria"):
            it = F.normalize(self.img_local(regions), dim=-1)
            tt = F.normalize(self.txt_local(text.tokens.float()), dim=-1)
            if m == "filip":
                loss = loss + filip_loss(it, tt, text.words | _first(text.mask), scale)
            else:
                loss = loss + gloria_local_loss(it, tt, text.words | _first(text.mask))
        return loss


def _first(mask: torch.Tensor) -> torch.Tensor:
    """The first token of each text ([CLS]) as a mask, so a text never ends up with no token at all."""
    out = torch.zeros_like(mask)
    out[:, 0] = True
    return out
