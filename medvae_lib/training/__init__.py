"""Training plumbing shared by the chapters: seeding, step-indexed batches, checkpoint
and resume.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(..., weights_only=True)`` (no pickled code runs). Finished weights are
exported as safetensors, the format model hubs use. Batches are drawn from a generator
seeded by ``(seed, step)``, so a run resumed from step ``k`` sees exactly the batches
the uninterrupted run would have seen. On a CPU a resumed run therefore ends
bit-identical to the uninterrupted one (a test checks this); on a GPU, non-deterministic
kernels (atomic adds in convolution backward passes, cuDNN algorithm choice) make it end
close to, but not exactly at, the same weights.

:class:`CheckpointedTrainer` is the one training loop of the book: a subclass says what
its modules, optimisers and single step are, and inherits checkpoint/resume, the refusal
to resume with other settings or other data, and the stop on a non-finite loss.

The same trainer runs on several processes under ``torchrun`` with
DistributedDataParallel (DDP): call :func:`init_distributed` first, and use
``self.net(name)`` instead of the plain module in ``train_step``. ``config.batch_size``
stays the *global* batch; each of the ``W`` processes trains on every ``W``-th sample of
it, DDP averages the gradients, and so ``W`` processes take (up to float rounding) the
steps one process would take. A single process runs exactly as before.

The package re-exports every public name, so ``training.name`` works as before. Which
file holds what (each imports only the files listed above it):

* ``settings.py``: :func:`settings_for` (a mode's settings with checked overrides),
  :func:`check_types` (a settings dataclass against its annotations), ``DRIVE_ROOT`` and
  :func:`run_dir` (the checkpoint folder of a chapter, mode and model).
* ``distributed.py``: :func:`default_device`, ``TORCHRUN_VARIABLES``,
  :func:`init_distributed`, :func:`world` and :func:`sum_over_ranks`.
* ``steps.py``: :class:`NonFiniteLossError`, :func:`seed_everything`,
  :func:`batch_indices`, :func:`run_steps` (the step loop) and
  :func:`tensor_fingerprint`.
* ``checkpoints.py``: ``CHECKPOINT_NAME``, :class:`CheckpointWriteError`,
  :func:`save_checkpoint`, :func:`non_finite_entries`, :func:`read_checkpoint`,
  :func:`restore_checkpoint`, :func:`load_checkpoint`, and the safetensors
  :func:`export_weights` / :func:`load_weights`.
* ``locks.py``: :func:`remove_stale_temporaries`, :class:`RunLock` and
  :func:`rank_zero_lock`.
* ``precision.py``: ``AMP_CHOICES``, :func:`amp_dtype` (the ``amp`` setting: float16
  autocast on a GPU by default), :func:`autocast` (its context) and
  :func:`counted_precision`.
* ``trainer.py``: :class:`CheckpointedTrainer`.
"""

from __future__ import annotations

from .checkpoints import (
    CHECKPOINT_NAME,
    CheckpointWriteError,
    export_weights,
    load_checkpoint,
    load_weights,
    non_finite_entries,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from .distributed import (
    TORCHRUN_VARIABLES,
    default_device,
    init_distributed,
    sum_over_ranks,
    world,
)
from .locks import RunLock, rank_zero_lock, remove_stale_temporaries
from .precision import AMP_CHOICES, amp_dtype, autocast, counted_precision
from .settings import DRIVE_ROOT, check_types, run_dir, settings_for
from .steps import (
    NonFiniteLossError,
    batch_indices,
    run_steps,
    seed_everything,
    tensor_fingerprint,
)
from .trainer import CheckpointedTrainer

__all__ = [
    "AMP_CHOICES",
    "CHECKPOINT_NAME",
    "DRIVE_ROOT",
    "TORCHRUN_VARIABLES",
    "CheckpointWriteError",
    "CheckpointedTrainer",
    "NonFiniteLossError",
    "RunLock",
    "amp_dtype",
    "autocast",
    "batch_indices",
    "check_types",
    "counted_precision",
    "default_device",
    "export_weights",
    "init_distributed",
    "load_checkpoint",
    "load_weights",
    "non_finite_entries",
    "rank_zero_lock",
    "read_checkpoint",
    "remove_stale_temporaries",
    "restore_checkpoint",
    "run_dir",
    "run_steps",
    "save_checkpoint",
    "seed_everything",
    "settings_for",
    "sum_over_ranks",
    "tensor_fingerprint",
    "world",
]
