"""Run-folder locks: :class:`RunLock` (one run per checkpoint folder), its distributed
form :func:`rank_zero_lock`, and the removal of temporary checkpoint files that killed
writers left behind."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path

import torch

from .checkpoints import _HOST
from .distributed import sum_over_ranks, world

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
