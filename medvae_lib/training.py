"""Training plumbing shared by the chapters: seeding, step-indexed batches, checkpoint and resume.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(..., weights_only=True)`` (no pickled code runs). Finished weights are exported as
safetensors, the format model hubs use. Batches are drawn from a generator seeded by ``(seed, step)``,
so a run resumed from step ``k`` sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

CHECKPOINT_NAME = "checkpoint.pt"


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def settings_for(modes: Mapping[str, Mapping], mode: str, overrides: Mapping | None = None) -> dict:
    """A notebook's settings: the entries of ``modes[mode]``, with single entries replaced by ``overrides``."""
    if mode not in modes:
        raise ValueError(f"unknown mode {mode!r}; choose one of {sorted(modes)}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(modes[mode]))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} in overrides; known: {sorted(modes[mode])}")
    return {**modes[mode], **overrides}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch for ``step``: a function of ``(seed, step)`` only, so resuming is exact."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need at least one sample and a positive batch size, got n={n}, batch_size={batch_size}")
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n, (batch_size,), generator=g)


def save_checkpoint(
    path: str | Path,
    step: int,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    extra: Mapping | None = None,
) -> Path:
    """Write a checkpoint atomically (a crash mid-write leaves the previous one intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": int(step),
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "extra": dict(extra or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | Path,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    map_location: str | torch.device = "cpu",
) -> tuple[int, dict]:
    """Restore modules and optimizers in place; return ``(step, extra)``. Loads with ``weights_only``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated file, or content that is not plain tensors and containers
        raise ValueError(f"{path} is not a loadable checkpoint: {err}") from err
    for group, wanted in (("modules", modules), ("optimizers", optimizers)):
        missing = sorted(set(wanted) - set(state.get(group, {})))
        if missing:
            raise ValueError(f"checkpoint {path} has no {group} {missing}; it has {sorted(state.get(group, {}))}")
    for k, m in modules.items():
        m.load_state_dict(state["modules"][k])
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    return int(state["step"]), dict(state["extra"])


def export_weights(path: str | Path, module: torch.nn.Module, metadata: Mapping[str, str] | None = None) -> Path:
    """Save a module's weights as safetensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata=dict(metadata or {}))
    return path


def load_weights(path: str | Path, module: torch.nn.Module) -> torch.nn.Module:
    """Load safetensors weights into ``module``; every key must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    module.load_state_dict(load_file(str(path)), strict=True)
    return module


def run_steps(
    step_fn: Callable[[int], Mapping[str, float]],
    start_step: int,
    total_steps: int,
    checkpoint_fn: Callable[[int], None] | None = None,
    checkpoint_every: int = 0,
    desc: str = "training",
    log_every: int = 1,
    history: list[dict] | None = None,
) -> list[dict]:
    """Call ``step_fn(step)`` for ``step`` in ``[start_step, total_steps)`` with a tqdm bar.

    Appends the logged values (every ``log_every`` steps and the last), each with its ``step``, to
    ``history`` (a new list by default) and returns it, so a checkpoint written mid-run holds the
    history so far. ``checkpoint_fn(done)`` is called with the number of completed steps every
    ``checkpoint_every`` steps and at the end.
    """
    if total_steps < start_step:
        raise ValueError(f"the run already has {start_step} steps, more than the {total_steps} asked for")
    history = [] if history is None else history
    bar = tqdm(range(start_step, total_steps), desc=desc, initial=start_step, total=total_steps, mininterval=2.0)
    for step in bar:
        values = step_fn(step)
        if step % log_every == 0 or step == total_steps - 1:
            history.append({"step": step, **{k: float(v) for k, v in values.items()}})
            bar.set_postfix({k: f"{float(v):.3g}" for k, v in values.items()}, refresh=False)
        done = step + 1
        if checkpoint_fn is not None and checkpoint_every and done % checkpoint_every == 0 and done != total_steps:
            checkpoint_fn(done)
    if checkpoint_fn is not None and total_steps > start_step:
        checkpoint_fn(total_steps)
    return history
