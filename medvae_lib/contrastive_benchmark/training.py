"""Training one method: the augmentation every method gets, the device, mixed
precision, and :func:`train_method` (AdamW, linear warm-up, cosine decay)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medvae_lib.training import amp_dtype as shared_amp_dtype
from medvae_lib.training import batch_indices, run_steps, seed_everything

from .models import DualEncoder, check_method, image_encoder
from .settings import BenchmarkError
from .text_encoder import TextFeatures


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The one augmentation every method gets: a random resized crop (scale 0.75-1, shift up to 10 %)
    through an affine grid, and a random contrast/brightness change."""
    b = len(
        x
    )  # the random numbers come from the CPU generator, so a GPU run draws the same ones
    s = 0.75 + 0.25 * torch.rand(b, generator=generator)
    t = (torch.rand(b, 2, generator=generator) - 0.5) * 0.2
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = s
    theta[:, 1, 1] = s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    gain = 0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=generator)
    bias = (torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 0.1
    return (out * gain.to(x.device) + bias.to(x.device)).clamp(0, 1)


def run_device(settings: Mapping) -> torch.device:
    """The device a run trains on: the settings' ``device``, where ``"auto"`` (the default) is the GPU when
    there is one (``training.default_device``), else the CPU."""
    from medvae_lib.training import default_device

    choice = settings.get("device", "auto")
    return default_device() if choice == "auto" else torch.device(choice)


_SCHEDULE_WARNING = "Detected call of `lr_scheduler.step"  # after a skipped step


def amp_dtype(settings: Mapping, device: torch.device) -> torch.dtype | None:
    """The dtype a run's forward pass autocasts to, from the settings' ``amp``
    (:func:`medvae_lib.training.amp_dtype`, the rule every trainer follows): ``"auto"``
    (the default) is float16 on a CUDA GPU and none elsewhere; ``"off"``, ``"float16"``
    or ``"bfloat16"`` ask for it on any device. float16 comes with a gradient scaler."""
    try:
        return shared_amp_dtype(settings.get("amp", "auto"), device)
    except ValueError as err:
        raise BenchmarkError(str(err)) from None


@dataclass
class TrainResult:
    model: DualEncoder
    history: list[dict]
    pairs_per_second: float
    seconds: float


def train_method(
    method: str,
    images: torch.Tensor,
    text: TextFeatures,
    settings: Mapping,
    seed: int,
    progress: bool = False,
) -> TrainResult:
    """Train one method on the training pairs; everything but the objective is shared."""
    check_method(method)
    if len(images) != len(text.tokens):
        raise BenchmarkError(f"{len(images)} images but {len(text.tokens)} texts")
    seed_everything(seed)
    device = run_device(settings)
    model = DualEncoder(
        method,
        settings["widths"],
        text.tokens.shape[-1],
        settings["embed_dim"],
        image=image_encoder(settings),
    )
    pretrained = settings.get("image_init", "scratch") != "scratch"
    model.image.freeze_stages(
        settings["pretrained_freeze_blocks"]
        if pretrained
        else settings["freeze_image_stages"]
    )
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings["weight_decay"]},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=settings["lr"],
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    steps = settings["steps"]
    warmup = max(
        1, steps // 10
    )  # linear warm-up, then cosine decay (mmlearn: CosineAnnealingLR)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(s, steps) / steps))
        ),
    )
    gen = torch.Generator().manual_seed(seed)
    n_views = 3 if method == "slip" else 1
    dtype = amp_dtype(settings, device)  # mixed precision: float16 on a GPU by default
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    model.train()

    def step_fn(step: int) -> dict:
        idx = batch_indices(len(images), settings["batch_size"], step, seed)
        x = images[idx].float().to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            views = [augment(x, gen) for _ in range(n_views)]
            loss = model.loss(views, text.take(idx).to(device), gen)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)  # skipped (and the scale lowered) if a gradient overflowed
        scaler.update()
        with warnings.catch_warnings():  # a step the scaler skipped moves it too
            warnings.filterwarnings("ignore", _SCHEDULE_WARNING, UserWarning)
            sched.step()
        return {"loss": loss.item()}

    start = time.perf_counter()
    history = run_steps(
        step_fn, 0, steps, desc=f"{method} seed {seed}", log_every=10, verbose=progress
    )
    seconds = time.perf_counter() - start
    model.eval()
    return TrainResult(
        model, history, steps * settings["batch_size"] / seconds, seconds
    )
