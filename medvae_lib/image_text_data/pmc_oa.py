"""PMC-OA: :func:`download_pmc_oa` (trust-on-first-use checksums, the split files
and archive checked before they are recorded) and :func:`load_pmc_oa`."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import pandas as pd

from medvae_lib.data import (
    ChecksumError,
    file_digest,
    temp_file_beside,
)

from .downloads import _hub_download
from .extraction import _extract_images, _zip_targets
from .pairs import _pair_table, _read_jsonl
from .settings import (
    _HUB_ID,
    CHECKSUMS_FILE,
    PMC_OA_HUB_REPO,
    PMC_OA_SPLITS,
    PairDataError,
    PairFileMissing,
    _BadFile,
    _check_choice,
)


def _sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def download_pmc_oa(
    dest: str | Path,
    source: str | Path = PMC_OA_HUB_REPO,
    revision: str | None = None,
    splits: Iterable[str] = PMC_OA_SPLITS,
) -> Path:
    """Download PMC-OA into ``dest`` in mmlearn's layout (``{split}.jsonl`` and ``images/``); return ``dest``.

    ``source`` is a Hugging Face dataset id (default ``axiong/pmc_oa``), fetched with
    ``huggingface_hub.hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision)`` into
    ``dest``, or a local folder holding the same files as the hub repository, copied as is (how the tests
    run it). The files are ``{split}.jsonl`` for each of ``splits`` and ``images.zip``, which is extracted
    into ``dest/images`` (its single top folder dropped); a member that would land outside ``dest/images``
    (an absolute path, ``..``, a link) is refused with :class:`PairDataError` before anything is written.

    Checksums are trust on first use, because the authors publish none: the first call records every
    file's sha256 in ``dest/checksums.json`` (with the source and revision) and prints them; later calls
    do not download a file that is already in ``dest`` but verify it against that record, and raise
    :class:`~medvae_lib.data.ChecksumError` if it differs (the message says how to recover). A file fetched
    later (say a split not asked for before) is added to the record. Nothing is recorded before it has
    proved to be what the set holds: every split file parses as JSON lines with ``image`` (a path inside
    the images folder) and ``caption``, ``images.zip`` opens, holds every image the split files name and
    extracts with every member's CRC checked. A file that fails (an error page, a truncated download) is
    refused with :class:`PairDataError` naming it; if this call fetched it, it is deleted, so the next call
    fetches it again. Extraction locks ``dest`` against a second process (which waits), and marks the
    folder done only once it holds every member; an incomplete folder is extracted again.
    Hashing ``images.zip`` (tens of GB) takes minutes on every call.
    Network failures raise :class:`~medvae_lib.data.NetworkError`.
    """
    splits = tuple(splits)
    for split in splits:
        _check_choice(split, PMC_OA_SPLITS, "PMC-OA split")
    dest = Path(dest).expanduser().resolve()
    local = Path(source).expanduser()
    if local.is_dir():
        origin = str(local.resolve())
    elif isinstance(source, str) and _HUB_ID.fullmatch(source):
        origin = source
    else:
        raise PairDataError(
            f"PMC-OA source {str(source)!r} is neither a folder nor a Hugging Face dataset id"
        )
    dest.mkdir(parents=True, exist_ok=True)
    record_path = dest / CHECKSUMS_FILE
    record = _read_record(record_path)
    if record and (record.get("source"), record.get("revision")) != (origin, revision):
        raise PairDataError(
            f"{dest} was downloaded from {record.get('source')!r} at revision {record.get('revision')!r}, "
            f"not {origin!r} at {revision!r}; use another folder (or delete it) for a different source"
        )
    recorded: dict[str, str] = dict(record.get("files", {}))
    added: dict[str, str] = {}
    fetched: set[str] = set()  # fetched by this call: deleted again if they prove bad
    for name in [f"{split}.jsonl" for split in splits] + ["images.zip"]:
        target = dest / name
        if not target.is_file():
            if local.is_dir():
                if not (local / name).is_file():
                    raise PairFileMissing(
                        f"{local} has no {name}; a PMC-OA folder holds the hub repository's files"
                    )
                copying = temp_file_beside(target)  # an interrupted copy leaves no file
                try:
                    shutil.copyfile(local / name, copying)
                    copying.replace(target)
                finally:
                    copying.unlink(missing_ok=True)
            else:
                _hub_download(origin, name, revision, dest)
            fetched.add(name)
        digest = _sha256(target)
        if name in recorded:
            if digest != recorded[name]:
                raise ChecksumError(
                    f"{target}: sha256 is {digest}, but {record_path} recorded {recorded[name]} when it was first "
                    "downloaded; the file is corrupt, truncated or has changed since. Delete it to download "
                    f"it again; if you replaced it on purpose with a file you trust, remove {name!r} from "
                    f"the 'files' of {record_path} and the next call records the new digest"
                )
        else:
            added[name] = digest
    # Nothing is recorded before it has proved to be what the set holds: split files that parse, an
    # archive that opens, holds the images the splits name, and extracts (every member's CRC checked).
    with _blame_new_files(dest, added, fetched):
        images_of = _check_pmc_oa_splits(dest, splits)
        _check_pmc_oa_archive(dest / "images.zip", images_of, "images.zip" in added)
        _extract_images(
            dest / "images.zip",
            dest / "images",
            added.get("images.zip") or recorded["images.zip"],
        )
    if added:
        recorded.update(added)
        record = {
            "source": origin,
            "revision": revision,
            "files": dict(sorted(recorded.items())),
            "note": "sha256 recorded on first download (trust on first use); the authors publish no checksums",
        }
        partial = temp_file_beside(
            record_path
        )  # a file of its own: two processes never share one
        try:
            partial.write_text(json.dumps(record, indent=2) + "\n")
            partial.replace(record_path)
        finally:
            partial.unlink(missing_ok=True)
        for name, digest in added.items():
            print(f"PMC-OA {name}: sha256 {digest} (recorded in {record_path})")
    return dest


@contextlib.contextmanager
def _blame_new_files(dest: Path, added: dict[str, str], fetched: set[str]):
    """Turn a :class:`_BadFile` into a PairDataError that names the file and says how to recover;
    a file fetched by this call is deleted (a failed download is never kept), another one is left for
    the reader to delete. A file already recorded is trusted: its error says so."""
    try:
        yield
    except _BadFile as err:
        target = dest / err.name
        if err.name not in added:
            hint = (
                f"{target} matches the sha256 in {dest / CHECKSUMS_FILE} although it is not what the set "
                "holds (recorded by a version that did not check it?): delete it, remove "
                f"{err.name!r} from the 'files' of {dest / CHECKSUMS_FILE} and call again"
            )
        elif err.name in fetched:
            target.unlink(missing_ok=True)
            hint = f"it was deleted and nothing was recorded; call again to download {err.name} again"
        else:
            hint = f"nothing was recorded; delete {target} (or put the right file there) and call again"
        raise PairDataError(f"{err}; {hint}") from err.__cause__


def _read_record(record_path: Path) -> dict:
    """``checksums.json`` as written by :func:`download_pmc_oa`, or ``{}`` when there is none."""
    if not record_path.is_file():
        return {}
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        record = err
    if not isinstance(record, dict) or not isinstance(record.get("files", {}), dict):
        raise PairDataError(
            f"{record_path} is not the checksum record download_pmc_oa writes ({record}); "
            "delete it to record the files' sha256 again on the next call (trust on first use)"
        )
    return record


def _check_pmc_oa_splits(dest: Path, splits: Sequence[str]) -> dict[str, set]:
    """The image names each split file lists, reading every split file (a new one that is not JSON lines
    with ``image`` and ``caption``, say an HTML error page, is blamed)."""
    images_of = {}
    for split in splits:
        name = f"{split}.jsonl"
        try:
            rows = _read_jsonl(
                dest / name, ("image", "caption"), hint="run download_pmc_oa again"
            )
            images_of[name] = {
                _image_name(row["image"], dest / name, row["_line"]) for row in rows
            }
        except PairDataError as err:
            raise _BadFile(
                name, f"{err} (a PMC-OA split file holds JSON lines)"
            ) from err
    return images_of


def _check_pmc_oa_archive(zip_path: Path, images_of: dict[str, set], new: bool) -> None:
    """``images.zip`` opens, its members are safe, and it holds every image the split files name."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = {str(path) for _, path in _zip_targets(archive, zip_path)}
    except PairDataError as err:  # an unsafe member
        raise _BadFile("images.zip", str(err)) from err
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise _BadFile(
            "images.zip",
            f"{zip_path} is not a readable zip archive (an error page or a truncated "
            f"download?): {type(err).__name__}: {err}",
        ) from err
    for name, wanted in images_of.items():
        missing = sorted(wanted - members)
        if missing:
            blame = "images.zip" if new else name
            raise _BadFile(
                blame,
                f"{zip_path} lacks {len(missing)} of the {len(wanted)} images that {name} "
                f"names, e.g. {missing[:3]}: the two files are not of one PMC-OA release",
            )


def _image_name(value, where: Path, line: int) -> str:
    """A split file's ``image`` as a path below the images folder; one that would leave it (an
    absolute path, ``..``, a drive) is refused, as manifests refuse such paths."""
    if not isinstance(value, str) or not value.strip():
        raise PairDataError(
            f"{where}, line {line}: 'image' must be a file name, got {value!r}"
        )
    name = value.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if (
        name.startswith("/")
        or re.match(r"[A-Za-z]:", name)
        or ".." in parts
        or "\0" in name
    ):
        raise PairDataError(
            f"{where}, line {line}: image {value!r} is not a path inside the images folder "
            "(absolute, a drive or '..'); refusing to read it"
        )
    return str(PurePosixPath(*parts))


def load_pmc_oa(
    root: str | Path, split: str, image_dir: str = "images"
) -> pd.DataFrame:
    """PMC-OA pairs of one split as a table with ``image_path`` (absolute) and ``caption``.

    Reads mmlearn's layout: ``{root}/{split}.jsonl`` (split ``train``, ``valid`` or ``test``) with keys
    ``image`` and ``caption``, images in ``{root}/{image_dir}`` (default ``images``, as
    :func:`download_pmc_oa` writes it). Raises :class:`PairDataError` for an unknown split, a missing file
    (:class:`PairFileMissing`), a malformed row or missing key, an empty caption (naming the row) and
    missing images (naming them).
    """
    _check_choice(split, PMC_OA_SPLITS, "PMC-OA split")
    root = Path(root).expanduser().resolve()
    images = root / image_dir
    path = root / f"{split}.jsonl"
    rows = _read_jsonl(path, ("image", "caption"), hint="run download_pmc_oa first")
    inside = images.resolve()

    def image_of(row):
        image = (inside / _image_name(row["image"], path, row["_line"])).resolve()
        if not image.is_relative_to(
            inside
        ):  # a link in the images folder that leads out of it
            raise PairDataError(
                f"{path}, line {row['_line']}: image {row['image']!r} leads outside {inside} "
                "(a link); refusing to read it"
            )
        return image

    return _pair_table(rows, image_of, path, keep_extra=False)
