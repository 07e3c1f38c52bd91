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
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import random
import tempfile
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

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
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
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


def settings_for(modes: Mapping[str, Mapping], mode: str, overrides: Mapping | None = None) -> dict:
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
        raise ValueError(f"unknown setting(s) {unknown} in overrides; known: {sorted(modes[mode])}")
    for key, value in list(overrides.items()):
        defaults = [
            m[key] for m in modes.values() if key in m
        ]  # a setting may differ in type between modes ("full" or 16)
        kinds = {type(None), int} if any(d is None for d in defaults) else set()  # None stands for "all": a count
        kinds |= {float if isinstance(d, float) else type(d) for d in defaults if d is not None}
        if isinstance(value, str) and not any(_type_ok(value, k) for k in kinds):
            value = overrides[key] = _parse_number(value, kinds)  # YAML 1.1 reads 1e-4 as a string
        if not any(_type_ok(value, k) for k in kinds):
            wanted = " or ".join(sorted(_kind_name(k) for k in kinds))
            raise TypeError(
                f"setting {key!r} must be {wanted} like its default {modes[mode][key]!r}, got {value!r} ({type(value).__name__})"
            )
        if value is not None and not isinstance(value, (bool, str)) and type(None) in kinds and value < 0:
            raise ValueError(f"setting {key!r} must be None or a count >= 0, got {value!r}")
    return {**modes[mode], **overrides}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch for ``step``: a function of ``(seed, step)`` only, so resuming is exact."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need at least one sample and a positive batch size, got n={n}, batch_size={batch_size}")
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
    never share one), flushed to disk with fsync, then renamed over ``path``. A crash or an error
    mid-write leaves the previous checkpoint intact and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": int(step),
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "extra": dict(extra or {}),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a checkpoint gets ordinary permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, (OSError, RuntimeError)):  # torch reports a full disk as a RuntimeError
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointWriteError(f"could not write checkpoint {path}: {reason}") from err
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def non_finite_entries(state_dict: Mapping) -> list[str]:
    """The names of the floating-point tensors of a state dict that hold a NaN or infinite value."""
    return [
        k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
    ]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint without touching any model: ``weights_only`` loading, the book's
    layout, a step >= 0 and finite weights. Compare its settings before :func:`restore_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated file, or content that is not plain tensors and containers
        raise ValueError(f"{path} is not a loadable checkpoint: {err}") from err
    if not isinstance(state, dict) or not {"step", "modules", "optimizers", "extra"} <= set(state):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path} is not a checkpoint of this book (needs step, modules, optimizers, extra; has {found})"
        )
    if not isinstance(state["step"], int) or isinstance(state["step"], bool) or state["step"] < 0:
        raise ValueError(f"checkpoint {path} records step {state['step']!r}; a step must be an integer >= 0")
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
            raise ValueError(f"checkpoint {path} has no {group} {missing}; it has {sorted(state.get(group, {}))}")
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
    return restore_checkpoint(read_checkpoint(path, map_location), modules, optimizers, path)


class RunLock:
    """An exclusive lock on a run folder (``<folder>/.lock``, ``fcntl.flock``), held while a run trains
    there, so two runs never write checkpoints into one folder. The lock dies with its process."""

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
        except OSError as err:  # a file system without locks (some network and FUSE mounts)
            self._file.close()
            self._file = None
            warnings.warn(
                f"cannot lock {self.folder} ({err}); continuing without a lock: start no second run there", stacklevel=2
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None


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
    ``checkpoint_every`` steps and at the end. A step that logs a NaN or infinite value raises
    :class:`NonFiniteLossError` before the next checkpoint, so a good checkpoint is never replaced by a
    diverged one. At the end one summary line is printed (set ``TQDM_DISABLE=1`` to hide the bar, as
    the book's build does, so that executed notebooks keep a short output).
    """
    if total_steps < start_step:
        raise ValueError(f"the run already has {start_step} steps, more than the {total_steps} asked for")
    history = [] if history is None else history
    bar = tqdm(range(start_step, total_steps), desc=desc, initial=start_step, total=total_steps, mininterval=2.0)
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
            bar.set_postfix({k: f"{float(v):.3g}" for k, v in values.items()}, refresh=False)
        done = step + 1
        if checkpoint_fn is not None and checkpoint_every and done % checkpoint_every == 0 and done != total_steps:
            checkpoint_fn(done)
    if checkpoint_fn is not None and total_steps > start_step:
        checkpoint_fn(total_steps)
    if total_steps > start_step and history:
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
    """

    RESUMABLE = ("steps", "log_every")
    name = "training"

    def __init__(self, config, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.step = 0
        self.history: list[dict] = []
        self.data_identity: dict | None = None

    # -- what a subclass provides -----------------------------------------------------------------
    def modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor | float]:
        raise NotImplementedError

    def check_images(self, images: torch.Tensor) -> None:
        """Raise a clear error if ``images`` cannot be trained on (a subclass checks shapes)."""

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a checkpoint; raise :class:`NonFiniteLossError` instead if any weight is NaN or infinite
        (a finite loss can still be followed by a NaN update), so a good checkpoint is never replaced."""
        for name, module in self.modules().items():
            bad = non_finite_entries(module.state_dict())
            if bad:
                raise NonFiniteLossError(
                    f"{self.name}: at step {self.step} the {name}'s weights {bad[:3]} are not finite; {path} was not overwritten"
                )
        extra = {"config": asdict(self.config), "history": self.history, "data": self.data_identity or {}}
        return save_checkpoint(path, self.step, self.modules(), self.optimizers(), extra)

    def _mismatch(self, state: Mapping, path, data_identity: Mapping | None) -> str | None:
        """Why the checkpoint ``state`` is not a continuation of this run (None if it is)."""
        extra = dict(state.get("extra") or {})
        saved, mine = dict(extra.get("config") or {}), asdict(self.config)
        differ = {k: (saved.get(k), v) for k, v in mine.items() if k not in self.RESUMABLE and saved.get(k) != v}
        if differ:
            return f"checkpoint {path} was made with other settings (saved, now): {differ}"
        if data_identity is not None:
            had = dict(extra.get("data") or {})
            other = {k: (had.get(k), v) for k, v in data_identity.items() if had.get(k) != v}
            if other:
                return f"checkpoint {path} was trained on other data (saved, now): {other}"
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
    ) -> list[dict]:
        """Train up to ``config.steps`` on ``images``.

        ``data`` describes the images (manifest, file key, image size...); it is stored in the
        checkpoint together with a fingerprint of the tensor, and a checkpoint made on other data is
        not resumed from. With ``checkpoint_dir``, a checkpoint is written every ``checkpoint_every``
        steps and at the end, and the folder is locked against a second run while this one trains;
        with ``resume``, a checkpoint found there is continued. Without ``resume`` the run starts
        afresh, and replaces a checkpoint made with other settings or data only with ``overwrite=True``.
        """
        if not isinstance(resume, bool) or not isinstance(overwrite, bool):
            raise TypeError(f"resume and overwrite must be True or False, got {resume!r} and {overwrite!r}")
        self.check_images(images)
        bad = count_non_finite(images)
        if bad:
            raise ValueError(f"{bad} training image(s) contain NaN or infinite values; clean the data first")
        identity = {"fingerprint": tensor_fingerprint(images), "shape": list(images.shape), **dict(data or {})}
        if (
            self.data_identity is not None
            and self.step > 0
            and self.data_identity.get("fingerprint") != identity["fingerprint"]
        ):
            raise ValueError(
                "this trainer was trained on other data; continue it on the same images or start a new one"
            )
        if checkpoint_dir is None:
            return self._run(images, None, checkpoint_every, identity)
        ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME
        with RunLock(checkpoint_dir):
            if ckpt.is_file():
                fingerprint = {"fingerprint": identity["fingerprint"]}
                try:
                    state = read_checkpoint(ckpt, map_location=self.device)
                    problem = self._mismatch(state, ckpt, fingerprint)
                    if not problem and not resume and state["step"] > self.config.steps:
                        problem = f"checkpoint {ckpt} holds {state['step']} steps, more than the {self.config.steps} of this run"
                except ValueError as err:  # unreadable or diverged: still not ours to delete silently
                    problem = str(err)
                if problem and not overwrite:
                    raise FileExistsError(
                        f"{problem}; pass overwrite=True to start afresh and replace it, or use another checkpoint_dir"
                    )
                if resume and not problem:
                    self._restore(state, ckpt)  # read and checked once, above
                    print(f"resumed from {ckpt} at step {self.step}")
                elif problem:
                    print(f"starting afresh: overwrite=True replaces {ckpt} ({problem})")
            return self._run(images, ckpt, checkpoint_every, identity)

    def _run(self, images: torch.Tensor, ckpt: Path | None, checkpoint_every: int, identity: dict) -> list[dict]:
        c = self.config
        self.data_identity = identity

        def step_fn(step: int):
            torch.manual_seed(c.seed * 1_000_003 + step)  # sampling noise: a function of the step
            idx = batch_indices(len(images), c.batch_size, step, c.seed)
            logs = self.train_step(images[idx].to(self.device), step)
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
        )


DRIVE_ROOT = Path("/content/drive")


def run_dir(chapter: str, mode: str, model: str | None = None, drive: bool = False, root: str | Path = "runs") -> Path:
    """Where a chapter keeps its checkpoints: ``runs/<chapter>/<mode>[/<model>]``, one folder per mode
    and model, so a CI-mode run never touches a full-mode checkpoint.

    With ``drive=True`` (Colab only) the folder is on the reader's Google Drive
    (``MyDrive/latent-representation-quality/runs/...``), so a full-mode run survives a disconnected
    runtime and resumes from its last checkpoint; Drive is mounted if it is not yet.
    """
    import sys

    if drive:
        if "google.colab" not in sys.modules:
            raise RuntimeError("use_drive=True needs Google Colab (Google Drive is mounted through google.colab)")
        if not (DRIVE_ROOT / "MyDrive").is_dir():
            from google.colab import drive as colab_drive  # type: ignore[import-not-found]

            colab_drive.mount(str(DRIVE_ROOT))
        root = DRIVE_ROOT / "MyDrive" / "latent-representation-quality" / "runs"
    folder = Path(root) / chapter / mode
    return folder / model if model else folder
