"""Devices and processes: the default device, joining the process group ``torchrun`` set
up, this process's rank and world size, and a sum over the ranks."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def init_distributed() -> torch.device:
    """Join the process group ``torchrun`` set up, and return this process's device.

    ``torchrun --nproc_per_node N script.py`` starts ``N`` copies of a script and tells each, in the
    environment variables ``RANK`` (its number among all processes), ``WORLD_SIZE`` (how many there
    are) and ``LOCAL_RANK`` (its number on this machine), who it is. Here the default process group
    is initialised from them (once; a second call only returns the device): with the "nccl" backend
    and the GPU ``cuda:LOCAL_RANK`` when CUDA is available, else "gloo" on the CPU. Run without
    ``torchrun`` (no ``WORLD_SIZE``), nothing is initialised and :func:`default_device` is returned,
    so a notebook and a ``torchrun`` script can share one line: ``device = init_distributed()``.
    """
    if "WORLD_SIZE" not in os.environ:
        return default_device()
    found = {k: os.environ.get(k) for k in TORCHRUN_VARIABLES}
    try:
        rank, world_size, local_rank = (int(found[k]) for k in TORCHRUN_VARIABLES)
    except (TypeError, ValueError):
        raise ValueError(
            f"WORLD_SIZE is set, so this looks like a torchrun process, but {found} are not all integers; "
            "start the script with torchrun, or unset WORLD_SIZE"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(
            f"torchrun variables out of range: {found} (need WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE)"
        )
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo"
        )  # reads MASTER_ADDR/PORT too
    return device


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sum_over_ranks(
    values: list[float], device: torch.device | str = "cpu"
) -> list[float]:
    """Add ``values`` element-wise over all processes (``all_reduce``; float64). A collective: every
    rank must call it, with as many values. Without a process group the values come back unchanged."""
    if world()[1] == 1:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()
