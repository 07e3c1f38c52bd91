"""Checkpoint files: atomic writing, reading and checking with ``weights_only`` loading,
restoring into modules and optimisers, and the safetensors export of finished
weights."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data import temp_file_beside

CHECKPOINT_NAME = "checkpoint.pt"


_HOST = (
    "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in socket.gethostname())[
        :64
    ]
    or "host"
)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permissions...); the previous one is intact."""


def save_checkpoint(
    path: str | Path,
    step: int,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    extra: Mapping | None = None,
) -> Path:
    """Write a checkpoint atomically: to a temporary file of its own in the same folder (so two writers
    never share one), flushed to disk with fsync, then renamed over ``path``. An error mid-write leaves
    the previous checkpoint intact and no temporary file behind. A process killed mid-write cannot
    remove its temporary file; it is named after its writer (process id and host), and
    :class:`RunLock` removes those of writers that are gone when it takes the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": int(step),
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "extra": dict(extra or {}),
    }
    tmp = temp_file_beside(
        path, prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp"
    )
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(
            err, (OSError, RuntimeError)
        ):  # torch reports a full disk as a RuntimeError
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {reason}"
            ) from err
        raise
    with contextlib.suppress(
        OSError
    ):  # make the rename itself durable where the platform allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def non_finite_entries(state_dict: Mapping) -> list[str]:
    """The names of the floating-point tensors of a state dict that hold a NaN or infinite value."""
    return [
        k
        for k, v in state_dict.items()
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
    ]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint without touching any model: ``weights_only`` loading, the book's
    layout, a step >= 0 and finite weights. Compare its settings before :func:`restore_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (
        Exception
    ) as err:  # truncated file, or content that is not plain tensors and containers
        raise ValueError(f"{path} is not a loadable checkpoint: {err}") from err
    if not isinstance(state, dict) or not {
        "step",
        "modules",
        "optimizers",
        "extra",
    } <= set(state):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path} is not a checkpoint of this book (needs step, modules, optimizers, extra; has {found})"
        )
    if (
        not isinstance(state["step"], int)
        or isinstance(state["step"], bool)
        or state["step"] < 0
    ):
        raise ValueError(
            f"checkpoint {path} records step {state['step']!r}; a step must be an integer >= 0"
        )
    for name, module_state in state["modules"].items():
        bad = non_finite_entries(module_state)
        if bad:
            raise ValueError(
                f"checkpoint {path} has non-finite weights in {name}: {bad[:5]}; it cannot be resumed from"
            )
    return state


def restore_checkpoint(
    state: Mapping,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    path: str | Path = "checkpoint",
) -> tuple[int, dict]:
    """Load a state read by :func:`read_checkpoint` into modules and optimizers; return ``(step, extra)``."""
    for group, wanted in (("modules", modules), ("optimizers", optimizers)):
        missing = sorted(set(wanted) - set(state.get(group, {})))
        if missing:
            raise ValueError(
                f"checkpoint {path} has no {group} {missing}; it has {sorted(state.get(group, {}))}"
            )
    for k, m in modules.items():
        m.load_state_dict(state["modules"][k])
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    return int(state["step"]), dict(state["extra"])


def load_checkpoint(
    path: str | Path,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    map_location: str | torch.device = "cpu",
) -> tuple[int, dict]:
    """Read, check and restore a checkpoint in place; return ``(step, extra)``."""
    return restore_checkpoint(
        read_checkpoint(path, map_location), modules, optimizers, path
    )


def export_weights(
    path: str | Path, module: torch.nn.Module, metadata: Mapping[str, str] | None = None
) -> Path:
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
