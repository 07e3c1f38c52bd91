"""Training plumbing shared by the chapters: seeding, step-indexed batches, checkpoint and resume.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(..., weights_only=True)`` (no pickled code runs). Finished weights are exported as
safetensors, the format model hubs use. Batches are drawn from a generator seeded by ``(seed, step)``,
so a run resumed from step ``k`` sees exactly the batches the uninterrupted run would have seen.
On a CPU a resumed run therefore ends bit-identical to the uninterrupted one (a test checks this);
on a GPU, non-deterministic kernels (atomic adds in convolution backward passes, cuDNN algorithm
choice) make it end close to, but not exactly at, the same weights.

:class:`CheckpointedTrainer` is the one training loop of the book: a subclass says what its modules,
optimisers and single step are, and inherits checkpoint/resume, the refusal to resume with other
settings or other data, and the stop on a non-finite loss.

The same trainer runs on several processes under ``torchrun`` with DistributedDataParallel (DDP):
call :func:`init_distributed` first, and use ``self.net(name)`` instead of the plain module in
``train_step``. ``config.batch_size`` stays the *global* batch; each of the ``W`` processes trains
on every ``W``-th sample of it, DDP averages the gradients, and so ``W`` processes take (up to float
rounding) the steps one process would take. A single process runs exactly as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import random
import re
import socket
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .data import temp_file_beside
from .metrics import count_non_finite

CHECKPOINT_NAME = "checkpoint.pt"


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


def _type_ok(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        )
    if kind is type(None):
        return value is None
    return isinstance(value, kind)


def _kind_name(kind) -> str:
    return {
        bool: "True or False",
        int: "an integer",
        float: "a finite number",
        str: "a string",
        type(None): "None",
    }.get(kind, kind.__name__)


def _parse_number(text: str, kinds: set):
    """A numeric string for a numeric setting ("1e-4", "600"); anything else is returned unchanged."""
    for kind in (int, float):
        if kind in kinds:
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def check_types(config) -> None:
    """Check every field of a settings dataclass against its annotation (``int``, ``float``, ``bool``,
    ``str`` and unions of them): ``steps=10.5``, ``lr="1e-4"``, ``resume="no"`` or ``kl_weight=nan``
    fail here, when the settings are made, with the field named, not deep inside a run."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        kinds = typing.get_args(hints[f.name]) or (hints[f.name],)
        value = getattr(config, f.name)
        if not any(_type_ok(value, k) for k in kinds):
            wanted = " or ".join(_kind_name(k) for k in kinds)
            raise TypeError(
                f"{type(config).__name__}.{f.name} must be {wanted}, got {value!r} ({type(value).__name__})"
            )


def settings_for(
    modes: Mapping[str, Mapping], mode: str, overrides: Mapping | None = None
) -> dict:
    """A notebook's settings: the entries of ``modes[mode]``, with single entries replaced by ``overrides``.

    An override must have the type of the entry it replaces (an integer may stand for a float; an entry
    whose default is None, "all", takes None or a count). A numeric string such as ``"1e-4"`` (which
    YAML 1.1, and so papermill's ``-y``, reads as a string) is parsed for a numeric setting; any other
    mismatch, such as ``"no"`` for True/False, is refused with a message that names the setting,
    instead of failing, or being read as true, hundreds of steps later.
    """
    if mode not in modes:
        raise ValueError(f"unknown mode {mode!r}; choose one of {sorted(modes)}")
    if not isinstance(overrides, (Mapping, type(None))):
        raise TypeError(f"overrides must be a dict of settings, got {overrides!r}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(modes[mode]))
    if unknown:
        raise ValueError(
            f"unknown setting(s) {unknown} in overrides; known: {sorted(modes[mode])}"
        )
    for key, value in list(overrides.items()):
        defaults = [
            m[key] for m in modes.values() if key in m
        ]  # a setting may differ in type between modes ("full" or 16)
        kinds = (
            {type(None), int} if any(d is None for d in defaults) else set()
        )  # None stands for "all": a count
        kinds |= {
            float if isinstance(d, float) else type(d)
            for d in defaults
            if d is not None
        }
        if isinstance(value, str) and not any(_type_ok(value, k) for k in kinds):
            value = overrides[key] = _parse_number(
                value, kinds
            )  # YAML 1.1 reads 1e-4 as a string
        if not any(_type_ok(value, k) for k in kinds):
            wanted = " or ".join(sorted(_kind_name(k) for k in kinds))
            raise TypeError(
                f"setting {key!r} must be {wanted} like its default {modes[mode][key]!r}, got {value!r} ({type(value).__name__})"
            )
        if (
            value is not None
            and not isinstance(value, (bool, str))
            and type(None) in kinds
            and value < 0
        ):
            raise ValueError(
                f"setting {key!r} must be None or a count >= 0, got {value!r}"
            )
    return {**modes[mode], **overrides}


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


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch for ``step``: a function of ``(seed, step)`` only, so resuming is exact."""
    if n < 1 or batch_size < 1:
        raise ValueError(
            f"need at least one sample and a positive batch size, got n={n}, batch_size={batch_size}"
        )
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n, (batch_size,), generator=g)


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


_HOST = (
    "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in socket.gethostname())[
        :64
    ]
    or "host"
)
# A temporary checkpoint of save_checkpoint: .<name>.<pid>@<host>.<8 random characters>.tmp
_TEMPORARY = re.compile(
    r"\..+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[a-z0-9_]{8}\.tmp"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary checkpoint files in ``folder`` whose writer (a process on this host) is
    gone, as a kill during :func:`save_checkpoint` leaves them; return them. Files of a living
    process, of another host, or of another name pattern are left alone."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        match = _TEMPORARY.fullmatch(path.name)
        if match is None or match["host"] != _HOST:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


class RunLock:
    """An exclusive lock on a run folder (``<folder>/.lock``, ``fcntl.flock``), held while a run trains
    there, so two runs never write checkpoints into one folder. The lock dies with its process. Taking
    it removes the temporary checkpoint files of writers killed mid-write
    (:func:`remove_stale_temporaries`)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self._file = None

    def __enter__(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): no lock, as before
            return self
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            raise RuntimeError(
                f"another run is training in {self.folder} (it holds {self.path}); wait for it to finish or use another checkpoint_dir"
            ) from None
        except (
            OSError
        ) as err:  # a file system without locks (some network and FUSE mounts)
            self._file.close()
            self._file = None
            warnings.warn(
                f"cannot lock {self.folder} ({err}); continuing without a lock: start no second run there",
                stacklevel=2,
            )
            return self
        removed = remove_stale_temporaries(self.folder)
        if removed:
            print(
                f"removed {len(removed)} temporary checkpoint file(s) of killed runs from {self.folder}"
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None


@contextlib.contextmanager
def rank_zero_lock(folder: str | Path, device: torch.device | str = "cpu"):
    """:class:`RunLock` for a run on several processes: rank 0 alone holds it, for everyone.

    All ranks of one run share its folder, so they cannot each take the exclusive lock (the second
    would be refused as "another run"). Rank 0 takes it; then every rank waits at one collective
    (a barrier that also carries whether the lock was taken), so no rank reads the folder before
    the lock is held, and if rank 0 could not take it (another run trains there) every rank raises,
    instead of the others waiting for rank 0 forever. Rank 0 releases it when the block ends.
    With one process this is :class:`RunLock` itself.
    """
    rank, world_size = world()
    if world_size == 1:
        with RunLock(folder):
            yield
        return
    lock, error = RunLock(folder), None
    if rank == 0:
        try:
            lock.__enter__()
        except Exception as err:
            error = err
    if sum_over_ranks([error is not None], device)[0]:
        raise error or RuntimeError(f"rank 0 could not lock {folder}; see its error")
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


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


class CheckpointedTrainer:
    """The book's generic trainer: checkpoint, resume, data identity and a non-finite guard.

    A subclass sets ``self.config`` (a dataclass with at least ``steps``, ``batch_size``, ``seed`` and
    ``log_every``) and implements :meth:`modules`, :meth:`optimizers` and :meth:`train_step`.
    ``RESUMABLE`` names the settings a resumed run may change (by default only its length and logging).

    **On several processes** (``torchrun``, after :func:`init_distributed`), with world size ``W``:

    * ``train_step`` calls ``self.net(name)`` where it would call ``self.modules()[name]``: that is the
      module's DDP wrapper, whose backward pass averages the gradients over the processes.
      :meth:`distributed_modules` says which modules get one (by default every trainable one).
    * ``config.batch_size`` is the *global* batch and must be divisible by ``W``. The global batch's
      indices are drawn as in one process (:func:`batch_indices`), and rank ``r`` trains on
      ``idx[r::W]``: every ``W``-th sample, starting at its own rank. With a loss averaged over the
      batch, the averaged gradients are those of the global batch.
    * Random noise is drawn for the global batch and sliced the same way: :meth:`global_randn_like`
      (or :meth:`shard_rows` of any global draw). Each step reseeds torch's generator from
      ``(seed, step)`` on every rank, so every rank draws the same global noise.
    * The logged values are averaged over the ranks, so every rank's ``history`` holds the
      global batch's values and the non-finite guard stops every rank at the same step.
    * Rank 0 alone takes the folder's lock and writes checkpoints; every rank reads one to resume.
      The checkpoint holds the plain modules' weights (no ``module.`` prefix), so a run on ``W``
      processes resumes one made on any other number, one included. The folder must be one that
      every rank sees (one machine, or a shared file system).

    With one process, none of this changes a number: ``net`` is the plain module and
    ``global_randn_like`` is ``torch.randn_like``.
    """

    RESUMABLE = ("steps", "log_every")
    name = "training"

    def __init__(self, config, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.step = 0
        self.history: list[dict] = []
        self.data_identity: dict | None = None
        self.shard = (0, 1)  # (rank, world size) of the running step; see shard_rows
        self._ddp: dict[str, DistributedDataParallel] = {}
        self._net_used = False

    # -- what a subclass provides -----------------------------------------------------------------
    def modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(
        self, batch: torch.Tensor, step: int
    ) -> dict[str, torch.Tensor | float]:
        raise NotImplementedError

    def check_images(self, images: torch.Tensor) -> None:
        """Raise a clear error if ``images`` cannot be trained on (a subclass checks shapes)."""

    def distributed_modules(self) -> tuple[str, ...]:
        """The names of the entries of :meth:`modules` that train with DDP on several processes: by
        default each one with a parameter that requires a gradient (a frozen loss network needs none)."""
        return tuple(
            name
            for name, m in self.modules().items()
            if any(p.requires_grad for p in m.parameters())
        )

    # -- several processes -------------------------------------------------------------------------
    def _wrap_distributed(self) -> None:
        """Build the DDP wrappers of :meth:`distributed_modules` once (again only for a module that was
        replaced). A collective: DDP's constructor copies rank 0's weights to every rank, so every rank
        must get here, in the same order. The wrappers are kept beside :meth:`modules`, which stays
        the plain modules: their ``state_dict`` has no ``module.`` prefix."""
        if world()[1] == 1:
            return
        ids = (
            [self.device.index]
            if self.device.type == "cuda" and self.device.index is not None
            else None
        )
        for name in self.distributed_modules():
            module = self.modules()[name]
            if name not in self._ddp or self._ddp[name].module is not module:
                self._ddp[name] = DistributedDataParallel(module, device_ids=ids)

    def net(self, name: str) -> torch.nn.Module:
        """The module to call in ``train_step``: the DDP wrapper of ``modules()[name]`` on several
        processes (so its gradients are averaged over them), else the plain module itself."""
        if world()[1] == 1 or name not in self.distributed_modules():
            return self.modules()[name]
        self._wrap_distributed()  # already built at the start of the run
        self._net_used = True
        return self._ddp[name]

    def shard_rows(self, t: torch.Tensor) -> torch.Tensor:
        """This process's rows of ``t``, a tensor made for the global batch: ``t[rank::W]``, the rows of
        the samples it trains on (see the class docstring); ``t`` itself with one process."""
        rank, world_size = self.shard
        return t if world_size == 1 else t[rank::world_size]

    def global_randn_like(self, local: torch.Tensor) -> torch.Tensor:
        """Standard-normal noise for this process's batch ``local``: drawn (from torch's generator) for
        the global batch, ``W`` times as many rows, and cut to this process's rows, so every sample
        gets the noise it would get in a one-process run. With one process: ``torch.randn_like(local)``."""
        rank, world_size = self.shard
        if world_size == 1:
            return torch.randn_like(local)
        full = torch.randn(
            (local.shape[0] * world_size, *local.shape[1:]),
            dtype=local.dtype,
            device=local.device,
        )
        return self.shard_rows(full).contiguous()

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a checkpoint; raise :class:`NonFiniteLossError` instead if any weight is NaN or infinite
        (a finite loss can still be followed by a NaN update), so a good checkpoint is never replaced.

        On several processes every rank calls this, and rank 0 alone writes; the others wait until it
        has (a collective that also tells them whether it could, so a failed write raises on every
        rank instead of leaving them waiting). The weights are the same on every rank, so every rank
        reaches the same verdict on them."""
        for name, module in self.modules().items():
            bad = non_finite_entries(module.state_dict())
            if bad:
                raise NonFiniteLossError(
                    f"{self.name}: at step {self.step} the {name}'s weights {bad[:3]} are not finite; {path} was not overwritten"
                )
        extra = {
            "config": asdict(self.config),
            "history": self.history,
            "data": self.data_identity or {},
        }
        rank, world_size = world()
        if world_size == 1:
            return save_checkpoint(
                path, self.step, self.modules(), self.optimizers(), extra
            )
        error = None
        if rank == 0:
            try:
                save_checkpoint(
                    path, self.step, self.modules(), self.optimizers(), extra
                )
            except Exception as err:
                error = err
        if sum_over_ranks([error is not None], self.device)[0]:
            raise error or CheckpointWriteError(
                f"rank 0 could not write checkpoint {path}; see its error"
            )
        return Path(path)

    def _mismatch(
        self, state: Mapping, path, data_identity: Mapping | None
    ) -> str | None:
        """Why the checkpoint ``state`` is not a continuation of this run (None if it is)."""
        extra = dict(state.get("extra") or {})
        saved, mine = dict(extra.get("config") or {}), asdict(self.config)
        differ = {
            k: (saved.get(k), v)
            for k, v in mine.items()
            if k not in self.RESUMABLE and saved.get(k) != v
        }
        if differ:
            return (
                f"checkpoint {path} was made with other settings (saved, now): {differ}"
            )
        saved_modules = state.get("modules") or {}
        other_layout = [
            name
            for name, module in self.modules().items()
            if name in saved_modules
            and {k: tuple(v.shape) for k, v in saved_modules[name].items()}
            != {k: tuple(v.shape) for k, v in module.state_dict().items()}
        ]
        if other_layout:
            return (
                f"checkpoint {path} holds another network layout for {other_layout} "
                "(the names or shapes of its weights differ)"
            )
        if data_identity is not None:
            had = dict(extra.get("data") or {})
            other = {
                k: (had.get(k), v) for k, v in data_identity.items() if had.get(k) != v
            }
            if other:
                return (
                    f"checkpoint {path} was trained on other data (saved, now): {other}"
                )
        return None

    def load(self, path: str | Path, data_identity: Mapping | None = None) -> int:
        """Restore a checkpoint; refuse one made with other settings, or (given ``data_identity``) other
        data. The checks run before anything is loaded, so a refused checkpoint leaves this trainer as it was."""
        state = read_checkpoint(path, map_location=self.device)
        problem = self._mismatch(state, path, data_identity)
        if problem:
            raise ValueError(problem)
        return self._restore(state, path)

    def _restore(self, state: Mapping, path) -> int:
        step, extra = restore_checkpoint(state, self.modules(), self.optimizers(), path)
        self.step, self.history = step, list(extra.get("history", []))
        self.data_identity = dict(extra.get("data") or {}) or None
        return step

    # -- the run ----------------------------------------------------------------------------------
    def fit(
        self,
        images: torch.Tensor,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
        resume: bool = True,
        data: Mapping | None = None,
        overwrite: bool = False,
        verbose: bool = True,
    ) -> list[dict]:
        """Train up to ``config.steps`` on ``images``.

        ``data`` describes the images (manifest, file key, image size...); it is stored in the
        checkpoint together with a fingerprint of the tensor, and a checkpoint made on other data is
        not resumed from. With ``checkpoint_dir``, a checkpoint is written every ``checkpoint_every``
        steps and at the end, and the folder is locked against a second run while this one trains;
        with ``resume``, a checkpoint found there is continued. Without ``resume`` the run starts
        afresh, and replaces a checkpoint made with other settings or data only with ``overwrite=True``.

        On several processes every rank calls ``fit`` with the same images and settings; rank 0 locks
        the folder (:func:`rank_zero_lock`) and every rank reads the checkpoint and makes the same
        decision from it. ``verbose=False`` shows no progress bar and prints no summary line (for
        callers that train many small runs and report them together).
        """
        if not isinstance(resume, bool) or not isinstance(overwrite, bool):
            raise TypeError(
                f"resume and overwrite must be True or False, got {resume!r} and {overwrite!r}"
            )
        self.check_images(images)
        bad = count_non_finite(images)
        if bad:
            raise ValueError(
                f"{bad} training image(s) contain NaN or infinite values; clean the data first"
            )
        identity = {
            "fingerprint": tensor_fingerprint(images),
            "shape": list(images.shape),
            **dict(data or {}),
        }
        if (
            self.data_identity is not None
            and self.step > 0
            and self.data_identity.get("fingerprint") != identity["fingerprint"]
        ):
            raise ValueError(
                "this trainer was trained on other data; continue it on the same images or start a new one"
            )
        if checkpoint_dir is None:
            return self._run(images, None, checkpoint_every, identity, verbose)
        ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME
        rank = world()[0]
        with rank_zero_lock(checkpoint_dir, self.device):
            if ckpt.is_file():
                fingerprint = {"fingerprint": identity["fingerprint"]}
                try:
                    state = read_checkpoint(ckpt, map_location=self.device)
                    problem = self._mismatch(state, ckpt, fingerprint)
                    if not problem and not resume and state["step"] > self.config.steps:
                        problem = f"checkpoint {ckpt} holds {state['step']} steps, more than the {self.config.steps} of this run"
                except (
                    ValueError
                ) as err:  # unreadable or diverged: still not ours to delete silently
                    problem = str(err)
                if problem and not overwrite:
                    raise FileExistsError(
                        f"{problem}; pass overwrite=True to start afresh and replace it, or use another checkpoint_dir"
                    )
                if resume and not problem:
                    self._restore(state, ckpt)  # read and checked once, above
                    if rank == 0:
                        print(f"resumed from {ckpt} at step {self.step}")
                elif problem and rank == 0:
                    print(
                        f"starting afresh: overwrite=True replaces {ckpt} ({problem})"
                    )
            return self._run(images, ckpt, checkpoint_every, identity, verbose)

    def _mean_over_ranks(self, logs: Mapping) -> dict[str, float]:
        """A step's logged values averaged over the ranks: with equal shards and losses averaged over
        the batch, the global batch's values. Every rank must log the same names."""
        names = sorted(
            logs
        )  # one order on every rank, whatever order a rank built its dict in
        totals = dict(
            zip(
                names,
                sum_over_ranks([float(logs[k]) for k in names], self.device),
                strict=True,
            )
        )
        world_size = world()[1]
        return {k: totals[k] / world_size for k in logs}

    def _run(
        self,
        images: torch.Tensor,
        ckpt: Path | None,
        checkpoint_every: int,
        identity: dict,
        verbose: bool = True,
    ) -> list[dict]:
        c = self.config
        rank, world_size = world()
        if c.batch_size % world_size:
            raise ValueError(
                f"batch_size {c.batch_size} is the global batch, split over the {world_size} processes; "
                f"it must be divisible by {world_size}"
            )
        self.data_identity = identity
        self._wrap_distributed()
        first = self.step

        def step_fn(step: int):
            torch.manual_seed(
                c.seed * 1_000_003 + step
            )  # sampling noise: a function of the step
            idx = batch_indices(
                len(images), c.batch_size, step, c.seed
            )  # the global batch
            self.shard, self._net_used = (rank, world_size), False
            logs = self.train_step(images[idx[rank::world_size]].to(self.device), step)
            if world_size > 1:
                if step == first and self._ddp and not self._net_used:
                    raise RuntimeError(
                        f"{self.name}: train_step used no DDP wrapper; call self.net(name), not the module itself, "
                        "or the processes' gradients are never averaged and their weights drift apart"
                    )
                logs = self._mean_over_ranks(logs)
            self.step = step + 1
            return logs

        return run_steps(
            step_fn,
            self.step,
            c.steps,
            (lambda done: self.save(ckpt)) if ckpt else None,
            checkpoint_every,
            desc=self.name,
            log_every=c.log_every,
            history=self.history,
            verbose=verbose and rank == 0,
        )


DRIVE_ROOT = Path("/content/drive")


def run_dir(
    chapter: str,
    mode: str,
    model: str | None = None,
    drive: bool = False,
    root: str | Path = "runs",
) -> Path:
    """Where a chapter keeps its checkpoints: ``runs/<chapter>/<mode>[/<model>]``, one folder per mode
    and model, so a CI-mode run never touches a full-mode checkpoint.

    With ``drive=True`` (Colab only) the folder is on the reader's Google Drive
    (``MyDrive/latent-representation-quality/runs/...``), so a full-mode run survives a disconnected
    runtime and resumes from its last checkpoint; Drive is mounted if it is not yet.
    """
    import sys

    if drive:
        if "google.colab" not in sys.modules:
            raise RuntimeError(
                "use_drive=True needs Google Colab (Google Drive is mounted through google.colab)"
            )
        if not (DRIVE_ROOT / "MyDrive").is_dir():
            from google.colab import drive as colab_drive  # type: ignore[import-not-found]

            colab_drive.mount(str(DRIVE_ROOT))
        root = DRIVE_ROOT / "MyDrive" / "latent-representation-quality" / "runs"
    folder = Path(root) / chapter / mode
    return folder / model if model else folder
