"""Extracting PMC-OA's ``images.zip`` safely: members that would leave the images
folder refused, extraction under a folder lock, and a marker written only once
every member is out."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .settings import PairDataError, _BadFile


def _zip_targets(
    archive: zipfile.ZipFile, where: Path
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The members to extract and their paths below the images folder, or PairDataError for an unsafe one."""
    members = []
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
        if (
            name.startswith("/")
            or re.match(r"[A-Za-z]:/", name)
            or ".." in parts
            or is_link
        ):
            raise PairDataError(
                f"{where}: member {info.filename!r} would be written outside the images folder "
                "(absolute path, '..' or a link); refusing to extract the archive"
            )
        if not info.is_dir():
            members.append((info, PurePosixPath(*parts)))
    if not members:
        raise PairDataError(f"{where} holds no files")
    tops = {path.parts[0] for _, path in members}
    if len(tops) == 1 and all(
        len(path.parts) > 1 for _, path in members
    ):  # one top folder: drop it
        members = [(info, PurePosixPath(*path.parts[1:])) for info, path in members]
    return members


def _extract_images(zip_path: Path, images: Path, digest: str) -> None:
    """Extract ``zip_path`` into ``images`` (once per archive digest), refusing members that escape it.

    The folder is locked while it is checked and extracted (a second process waits, then finds it
    done), and the marker ``.extracted-sha256`` (the archive's digest and its number of files) is
    written only once every member is out; a folder that holds another number of files than its
    marker says (an interrupted or damaged extraction) is extracted again."""
    marker = images / ".extracted-sha256"
    with _folder_lock(
        images.with_name(f".{images.name}.lock"), f"extracting into {images}"
    ):
        if _extracted(marker, digest):
            return
        if marker.is_file():
            print(
                f"{images} is incomplete or from another archive: extracting {zip_path} again"
            )
        partial = images.with_name(images.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        root = partial.resolve()
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = _zip_targets(
                    archive, zip_path
                )  # checked before anything is written
                for info, relative in members:
                    target = (root / relative).resolve()
                    if not target.is_relative_to(
                        root
                    ):  # belt and braces after the check above
                        raise PairDataError(
                            f"{zip_path}: member {info.filename!r} would be written outside {images}"
                        )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            shutil.rmtree(partial, ignore_errors=True)
            raise _BadFile(
                "images.zip",
                f"{zip_path} could not be extracted (corrupt or truncated archive): {type(err).__name__}: {err}",
            ) from err
        wanted, found = (
            len({str(relative) for _, relative in members}),
            _count_files(partial),
        )
        if found != wanted:
            shutil.rmtree(partial, ignore_errors=True)
            raise PairDataError(
                f"extracting {zip_path} gave {found} files instead of its {wanted} members; "
                "nothing was kept, call again to extract it again"
            )
        (partial / marker.name).write_text(f"{digest}\n{wanted}\n")
        shutil.rmtree(images, ignore_errors=True)
        partial.rename(images)


def _extracted(marker: Path, digest: str) -> bool:
    """Whether the folder of ``marker`` holds a complete extraction of the archive ``digest``."""
    if not marker.is_file():
        return False
    lines = marker.read_text(errors="replace").split()
    if len(lines) != 2 or lines[0] != digest or not lines[1].isdigit():
        return (
            False  # another archive, or a marker written before the count was recorded
        )
    return _count_files(marker.parent) - 1 == int(lines[1])


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


@contextlib.contextmanager
def _folder_lock(path: Path, what: str):
    """An exclusive ``fcntl.flock`` on ``path``, waited for (the lock dies with its process); no lock
    where the platform or file system has none, as :class:`medvae_lib.training.RunLock`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): no lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"another process is {what} ({path}); waiting for it")
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            except OSError as err:  # a file system without locks (some network mounts)
                print(
                    f"cannot lock {path} ({err}); go on without a lock: run no second copy"
                )
        yield  # closing the file releases the lock
