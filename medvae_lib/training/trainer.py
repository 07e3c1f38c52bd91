"""The book's one training loop: :class:`CheckpointedTrainer`, with checkpoint and resume,
data identity, the non-finite guard and DistributedDataParallel on several processes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ..metrics import count_non_finite
from .checkpoints import (
    CHECKPOINT_NAME,
    CheckpointWriteError,
    non_finite_entries,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from .distributed import sum_over_ranks, world
from .locks import rank_zero_lock
from .precision import amp_dtype, autocast
from .steps import NonFiniteLossError, batch_indices, run_steps, tensor_fingerprint


class CheckpointedTrainer:
    """The book's generic trainer: checkpoint, resume, data identity and a non-finite guard.

    A subclass sets ``self.config`` (a dataclass with at least ``steps``, ``batch_size``, ``seed`` and
    ``log_every``) and implements :meth:`modules`, :meth:`optimizers` and :meth:`train_step`.
    ``RESUMABLE`` names the settings a resumed run may change (by default its length, logging and
    precision: a checkpoint made before the ``amp`` setting existed is resumed).

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

    **Mixed precision** follows the config's ``amp`` setting (:func:`amp_dtype`; a config
    without one trains in float32): ``train_step`` runs its forward passes and losses
    under :meth:`autocast` and updates through :meth:`backward_step`, which scales the
    loss for float16 (one :class:`torch.amp.GradScaler` per optimiser, saved in the
    checkpoint) and skips a step whose gradients overflowed. On a CPU ``"auto"`` is
    float32, so CPU runs are unchanged.
    """

    RESUMABLE = ("steps", "log_every", "amp")
    name = "training"

    def __init__(self, config, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.step = 0
        self.history: list[dict] = []
        # scores a caller took of this run between its steps (e.g. a validation curve),
        # each a dict with its "step", kept in the checkpoint so that a resumed run has
        # the ones scored before it
        self.evaluations: list[dict] = []
        self.data_identity: dict | None = None
        self.shard = (0, 1)  # (rank, world size) of the running step; see shard_rows
        self._ddp: dict[str, DistributedDataParallel] = {}
        self._net_used = False
        self.amp = amp_dtype(getattr(config, "amp", "off"), self.device)
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.parked = False  # see park

    # -- mixed precision ------------------------------------------------------------------------------
    def autocast(self):
        """The context a step's forward pass and losses run in: autocast to ``self.amp``,
        or nothing (float32) when it is None."""
        return autocast(getattr(self.config, "amp", "off"), self.device)

    def scaler(self, name: str) -> torch.amp.GradScaler:
        """The gradient scaler of optimiser ``name`` (a pass-through unless float16)."""
        if name not in self.scalers:
            self.scalers[name] = torch.amp.GradScaler(
                self.device.type, enabled=self.amp == torch.float16
            )
        return self.scalers[name]

    def backward_step(self, loss: torch.Tensor, name: str) -> dict[str, float]:
        """Backward pass of ``loss`` and a step of optimiser ``name`` through its
        scaler. Under float16 it returns
        ``{"amp_skipped": 1.0}`` for a step the scaler skipped (a gradient overflowed;
        the scale is halved) and 0.0 otherwise, for the step's logs; else nothing."""
        scaler = self.scaler(name)
        scaler.scale(loss).backward()
        if not scaler.is_enabled():
            self.optimizers()[name].step()
            return {}
        before = scaler.get_scale()
        scaler.step(self.optimizers()[name])
        scaler.update()
        return {"amp_skipped": float(scaler.get_scale() < before)}

    # -- finished runs off the GPU -------------------------------------------------------------------
    def park(self, keep: tuple[str, ...] = ()) -> None:
        """Free the accelerator memory of a finished run that a chapter keeps for later:
        the gradients go, the optimisers' moments and the modules not named in ``keep``
        move to the CPU. The kept modules (e.g. the autoencoder a chapter encodes with)
        stay where they are. :meth:`fit` moves everything back before it trains again.
        Nothing changes a number: the same tensors, on another device."""
        cpu = torch.device("cpu")
        for name, module in self.modules().items():
            module.zero_grad(set_to_none=True)
            if name not in keep:
                module.to(cpu)
        self._move_optimizer_states(cpu)
        self.parked = True

    def _unpark(self) -> None:
        if self.parked:
            for module in self.modules().values():
                module.to(self.device)
            self._move_optimizer_states(self.device)
            self.parked = False

    def _move_optimizer_states(self, device: torch.device) -> None:
        for opt in self.optimizers().values():
            for state in opt.state.values():
                for key, value in state.items():
                    # Adam keeps its step count on the CPU unless capturable or fused
                    if torch.is_tensor(value) and key != "step":
                        state[key] = value.to(device)

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
            "evaluations": self.evaluations,
            "data": self.data_identity or {},
            "scalers": {
                k: v.state_dict() for k, v in self.scalers.items() if v.is_enabled()
            },
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
        # the checkpoint's scores, and those this trainer took since it was written (a
        # run that checkpoints, is scored, then resumes from that checkpoint)
        saved = list(extra.get("evaluations", []))
        had = {e["step"] for e in saved}
        since = [
            e for e in self.evaluations if e["step"] not in had and e["step"] <= step
        ]
        self.evaluations = sorted(saved + since, key=lambda e: e["step"])
        self.data_identity = dict(extra.get("data") or {}) or None
        for name, state in (extra.get("scalers") or {}).items():
            self.scaler(name).load_state_dict(state)
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
                    if rank == 0 and verbose:
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
        self._unpark()
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
