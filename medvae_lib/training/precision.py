"""Mixed precision, one rule for every trainer: the ``amp`` setting.

``"auto"`` (the default) autocasts the forward pass to float16 on a CUDA GPU (a T4,
Colab's free GPU, has fast float16 tensor cores but no fast bfloat16) and not at all
elsewhere, so a CPU run is the float32 run it always was. ``"off"`` keeps float32;
``"float16"`` or ``"bfloat16"`` ask for autocast on any device. The papers' own
settings train in float32 (MedVAE's configurations set ``mixed_precision: "no"`` for
Accelerate, bar a later 3D bottleneck fine-tuning one with ``"bf16"``; PUIR's scripts
pass ``--noamp``): mixed precision is this book's deviation, made so that full mode fits
a T4, and ``amp="off"`` restores their float32. float16 comes with a gradient scaler
(:class:`torch.amp.GradScaler`), which multiplies the loss before the backward pass so
that small gradients do not underflow and skips a step whose gradients overflowed.
"""

from __future__ import annotations

import contextlib

import torch

AMP_CHOICES = {
    "auto": None,
    "off": None,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def amp_dtype(choice: str, device: torch.device | str) -> torch.dtype | None:
    """The dtype a run's forward pass autocasts to under the ``amp`` setting ``choice``
    on ``device``, or None for float32 throughout."""
    if choice not in AMP_CHOICES:
        raise ValueError(
            f"unknown amp setting {choice!r}; expected one of {list(AMP_CHOICES)}"
        )
    if choice == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else None
    return AMP_CHOICES[choice]


def counted_precision(choice: str) -> str:
    """The precision a run with the ``amp`` setting ``choice`` has on a GPU: what
    :mod:`medvae_lib.full_mode_cost` counts its T4 time at."""
    return "float32" if amp_dtype(choice, "cuda") is None else "float16"


def autocast(choice: str, device: torch.device | str):
    """The context an inference or training pass runs in under the ``amp`` setting
    ``choice`` on ``device``: autocast, or nothing (float32) where :func:`amp_dtype` says
    None (a CPU, by default)."""
    dtype = amp_dtype(choice, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
