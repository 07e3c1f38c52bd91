"""The contrastive objectives: CLIP, SigLIP, CyCLIP, DCL, SimCLR's NT-Xent, FILIP's
token-wise loss and GLoRIA's local loss, with CLIP's learnable logit scale."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LearnableLogitScale(nn.Module):
    """mmlearn's ``LearnableLogitScaling``: a log-parametrised scale, initialised at 1/0.07 and clamped at 100."""

    def __init__(self, init: float = 1 / 0.07, max_scale: float = 100.0):
        super().__init__()
        self.max_scale = max_scale
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)))

    def forward(self) -> torch.Tensor:
        return torch.clamp(self.log_scale.exp(), max=self.max_scale)


def clip_loss(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of L2-normalised pairs: the mean of the
    image-to-text and text-to-image cross-entropies of the scaled cosine-similarity
    matrix, positives on the diagonal."""
    logits = scale * img @ txt.T
    labels = torch.arange(len(img), device=img.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def siglip_loss(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """SigLIP: every image-text pair is a binary problem (+1 on the diagonal, -1
    elsewhere); ``-sum log sigmoid(z * (scale * cos + bias)) / batch``."""
    logits = scale * img @ txt.T + bias
    z = 2 * torch.eye(len(img), device=img.device) - 1
    return -F.logsigmoid(z * logits).sum() / len(img)


def cyclip_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    scale,
    in_modal: float = 0.25,
    cross_modal: float = 0.25,
) -> torch.Tensor:
    """CyCLIP: CLIP plus the in-modal term ``n * mean((I I^T - T T^T)^2)`` and the
    cross-modal term ``n * mean((I T^T - T I^T)^2)`` on cosine similarities (weights
    0.25 each, as in the paper)."""
    n = len(img)
    sim = img @ txt.T
    cyc_in = (img @ img.T - txt @ txt.T).square().mean() * n
    cyc_cross = (sim - sim.T).square().mean() * n
    return clip_loss(img, txt, scale) + in_modal * cyc_in + cross_modal * cyc_cross


def dcl_loss(img: torch.Tensor, txt: torch.Tensor, scale) -> torch.Tensor:
    """Decoupled contrastive loss, both directions: ``-s_ii + logsumexp_{j != i} s_ij``
    with ``s`` the scaled cosine similarities (InfoNCE with the positive removed from
    the denominator)."""
    logits = scale * img @ txt.T
    eye = torch.eye(len(img), dtype=torch.bool, device=img.device)
    pos = logits.diagonal()
    neg = logits.masked_fill(eye, float("-inf"))
    return (
        (-pos + torch.logsumexp(neg, 1)).mean()
        + (-pos + torch.logsumexp(neg.T, 1)).mean()
    ) / 2


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent on two L2-normalised views: each of the 2n embeddings must find
    its other view among the 2n - 1 others."""
    z = torch.cat([a, b])
    n = len(a)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(
        torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf")
    )
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)


def filip_loss(
    img_tok: torch.Tensor, txt_tok: torch.Tensor, txt_mask: torch.Tensor, scale
) -> torch.Tensor:
    """FILIP's token-wise late interaction: image i to text j scores the mean over image
    tokens of the best matching word; text j to image i the mean over words of the best
    matching image token; InfoNCE on each score matrix, averaged. Tokens L2-normalised;
    ``txt_mask`` marks real words."""
    sim = torch.einsum("ird,jld->ijrl", img_tok, txt_tok)  # (B_img, B_txt, R, L)
    m = txt_mask[None, :, None, :]
    i2t = sim.masked_fill(~m, float("-inf")).amax(3).mean(2)  # (B_img, B_txt)
    t2i_tok = sim.amax(2)  # (B_img, B_txt, L): best region per word
    t2i = (t2i_tok * txt_mask[None]).sum(2) / txt_mask.sum(1).clamp(min=1)[
        None
    ]  # (B_img, B_txt)
    labels = torch.arange(len(img_tok), device=img_tok.device)
    return (
        F.cross_entropy(scale * i2t, labels) + F.cross_entropy(scale * t2i.T, labels)
    ) / 2


def gloria_scores(
    img_tok: torch.Tensor,
    txt_tok: torch.Tensor,
    word_mask: torch.Tensor,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
) -> torch.Tensor:
    """GLoRIA's local image-text score (B_img, B_txt): each word attends over image
    regions (softmax of ``gamma1 *`` cosine), the cosine between each word and its
    attended region context is aggregated over words by ``log(sum exp(gamma2 * R)) /
    gamma2``."""
    attn = torch.softmax(
        gamma1 * torch.einsum("ird,jld->ijlr", img_tok, txt_tok), dim=-1
    )
    context = F.normalize(torch.einsum("ijlr,ird->ijld", attn, img_tok), dim=-1)
    r = (context * txt_tok[None]).sum(-1)  # (B_img, B_txt, L)
    r = r.masked_fill(~word_mask[None], float("-inf"))
    return torch.logsumexp(gamma2 * r, dim=-1) / gamma2


def gloria_local_loss(
    img_tok, txt_tok, word_mask, gamma3: float = 10.0, **kw
) -> torch.Tensor:
    """InfoNCE in both directions on ``gamma3 *`` :func:`gloria_scores` (GLoRIA's local loss)."""
    s = gamma3 * gloria_scores(img_tok, txt_tok, word_mask, **kw)
    labels = torch.arange(len(img_tok), device=img_tok.device)
    return (F.cross_entropy(s, labels) + F.cross_entropy(s.T, labels)) / 2
