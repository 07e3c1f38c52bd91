"""Reproducible steps: seeding, the batch of a step as a function of ``(seed, step)``,
the fingerprint of the training data, and :func:`run_steps`, the step loop that stops
on a non-finite loss (:class:`NonFiniteLossError`)."""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Callable, Mapping

import numpy as np
import torch
from tqdm import tqdm


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the run stopped before writing a checkpoint."""


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch for ``step``: a function of ``(seed, step)`` only, so resuming is exact."""
    if n < 1 or batch_size < 1:
        raise ValueError(
            f"need at least one sample and a positive batch size, got n={n}, batch_size={batch_size}"
        )
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n, (batch_size,), generator=g)


def run_steps(
    step_fn: Callable[[int], Mapping[str, float]],
    start_step: int,
    total_steps: int,
    checkpoint_fn: Callable[[int], None] | None = None,
    checkpoint_every: int = 0,
    desc: str = "training",
    log_every: int = 1,
    history: list[dict] | None = None,
    verbose: bool = True,
) -> list[dict]:
    """Call ``step_fn(step)`` for ``step`` in ``[start_step, total_steps)`` with a tqdm bar.

    Appends the logged values (every ``log_every`` steps and the last), each with its ``step``, to
    ``history`` (a new list by default) and returns it, so a checkpoint written mid-run holds the
    history so far. ``checkpoint_fn(done)`` is called with the number of completed steps every
    ``checkpoint_every`` steps and at the end. A step that logs a NaN or infinite value raises
    :class:`NonFiniteLossError` before the next checkpoint, so a good checkpoint is never replaced by a
    diverged one. At the end one summary line is printed (set ``TQDM_DISABLE=1`` to hide the bar, as
    the book's build does, so that executed notebooks keep a short output). ``verbose=False`` shows
    neither (the processes of a distributed run other than rank 0).
    """
    if total_steps < start_step:
        raise ValueError(
            f"the run already has {start_step} steps, more than the {total_steps} asked for"
        )
    history = [] if history is None else history
    quiet = (
        {} if verbose else {"disable": True}
    )  # an explicit disable=False would override TQDM_DISABLE
    bar = tqdm(
        range(start_step, total_steps),
        desc=desc,
        initial=start_step,
        total=total_steps,
        mininterval=2.0,
        **quiet,
    )
    for step in bar:
        values = step_fn(step)
        bad = {k: float(v) for k, v in values.items() if not math.isfinite(float(v))}
        if bad:
            bar.close()
            raise NonFiniteLossError(
                f"{desc}: step {step} gave non-finite values {bad}; stopped before any checkpoint was written "
                "(lower the learning rate, or check the data for NaN or infinite values)"
            )
        if step % log_every == 0 or step == total_steps - 1:
            history.append({"step": step, **{k: float(v) for k, v in values.items()}})
            bar.set_postfix(
                {k: f"{float(v):.3g}" for k, v in values.items()}, refresh=False
            )
        done = step + 1
        if (
            checkpoint_fn is not None
            and checkpoint_every
            and done % checkpoint_every == 0
            and done != total_steps
        ):
            checkpoint_fn(done)
    if checkpoint_fn is not None and total_steps > start_step:
        checkpoint_fn(total_steps)
    if verbose and total_steps > start_step and history:
        last = ", ".join(f"{k}={v:.3g}" for k, v in history[-1].items() if k != "step")
        # No run time here: it changes on every run, and the line ends up in committed notebook outputs.
        print(f"{desc}: steps {start_step}-{total_steps}; last logged {last}")
    return history


def tensor_fingerprint(x: torch.Tensor) -> str:
    """sha256 of a tensor's shape, dtype and values: identifies the data a run was trained on."""
    x = x.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(x.shape)} {x.dtype}".encode())
    h.update(x.view(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return h.hexdigest()
