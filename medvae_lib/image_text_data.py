"""Full-size public image–text sets for chapter 8: ROCO and PMC-OA, downloaded and read in mmlearn's layout.

**ROCO** (Radiology Objects in COntext; Pelka et al., MICCAI LABELS workshop 2018,
doi:10.1007/978-3-030-01364-6_20; repository ``razorx89/roco-dataset``) lists figures (ids ``ROCO_nnnnn``)
from articles of the PubMed Central (PMC) open-access subset, split into ``train``/``validation``/``test``
and into ``radiology``/``non-radiology``. The repository ships no images: each folder
``data/{split}/{group}/`` holds ``dlinks.txt`` (``ROCO_ID<TAB>wget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/
oa_package/xx/yy/PMCnnn.tar.gz -P /path/to/Dir<TAB>figure.jpg``), ``captions.txt`` (``ROCO_ID<TAB>
caption``) and ``licences.txt`` (CSV ``ROCO_ID,PMC_ID,CC``). Licence: each image and caption is under
the licence of the article it comes from; ``licences.txt`` records it per image and it is a mix (CC BY,
CC BY-NC, CC BY-NC-SA, CC BY-NC-ND, CC BY-ND and ``NO-CC CODE``), so not every ROCO image may be
redistributed or used commercially; :func:`download_roco` copies the code into a ``licence`` column.

**PMC-OA** (Lin et al., "PMC-CLIP", arXiv:2303.07240, MICCAI 2023) holds about 1.6 million sub-figure /
caption pairs from the same open-access subset, on the Hugging Face hub as the dataset ``axiong/pmc_oa``:
``images.zip``, ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` (rows ``{"image": "PMC212319_Fig3_4.jpg",
"caption": ...}``), ``pmc_oa.jsonl`` and ``pmc_oa_beta.jsonl``. Licence: the dataset card states none
(see the card); the figures keep their articles' PMC open-access licences. Note that the card at ``main``
strikes the three split files through in favour of ``pmc_oa.jsonl`` (ChatGPT-split sub-captions, no
split), and PMC-CLIP issue #4 reports that the split files hold the whole compound captions (the "beta"
captions). mmlearn reads the split files, so they are what is downloaded here; pin ``revision`` for a
reproducible result.

Sources this code follows (read in the public repositories):

* ``razorx89/roco-dataset`` ``scripts/fetch.py`` (commit a1f0ad6c578ca8801e5a6eccc90af051aee1c326):
  parsing a dlinks line (``extract_image_info``: the last tab field is the figure, the third word of the
  second field the package URL, the package name less ``.tar.gz`` the PMC id), grouping lines by package
  so that each is downloaded once (``group_lines_by_archive``), taking the member ``{PMC id}/{figure}``
  from the package and saving it as ``images/{ROCO_ID}.jpg`` next to ``dlinks.txt`` (here under
  ``dest/{split}/{group}/images/``), asking the PMC OA web service (``oa.fcgi?id=PMC...``) for the new
  ``tgz`` link when a package has moved (``determine_new_archive_url``), re-downloading a corrupt package,
  and skipping images that already exist. Differences: packages come over HTTPS (the same NCBI FTP tree
  served at ``https://ftp.ncbi.nlm.nih.gov/pub/pmc/``) with urllib instead of ``wget`` over FTP; a figure
  missing from its package or a package that cannot be had raises :class:`PairDataError` /
  :class:`~medvae_lib.data.NetworkError` (fetch.py prints a line and goes on) unless
  ``skip_missing=True``, which writes every skipped image to ``skipped.tsv`` and prints the count.
* ``VectorInstitute/mmlearn`` ``projects/med_benchmarking/datasets/roco.py``: the table
  ``{root}/{group}{split}_dataset.json``, JSON lines with ``image_path`` and ``caption``
  (``pd.read_json(..., lines=True)``); :func:`download_roco` writes it and :func:`load_roco` reads it.
* ``VectorInstitute/mmlearn`` ``projects/med_benchmarking/datasets/pmcoa.py``: ``{root}/{split}.jsonl``
  for split ``train``/``valid``/``test``, keys ``image`` and ``caption``, images in ``{root}/images/``
  (its ``image_dir`` argument). ``images.zip`` keeps its images in one top folder,
  ``caption_T060_filtered_top4_sep_v0_subfigures/`` (the ``datasets`` loading script for axiong/pmc_oa,
  class ``PMC_OA``, reads them there; VectorInstitute/pmc-data-extraction's jobs link ``images`` to that
  folder for mmlearn), so :func:`download_pmc_oa` drops that single top folder when it extracts into
  ``dest/images``.

Checksums: neither set publishes any. :func:`download_pmc_oa` is therefore *trust on first use*: the first
download records each file's sha256 in ``dest/checksums.json`` and prints it, once the file has proved to
be what the set holds (the split files parse, ``images.zip`` opens, holds the images they name and
extracts), so an error page or a truncated download is never trusted; every later call verifies
the files against that record and raises :class:`~medvae_lib.data.ChecksumError` on a mismatch. This
cannot prove the first download was the authors' file (nothing published can), but it does catch
corruption, truncation and a file silently changed on the hub or on disk afterwards; copy the printed
digests into a manifest or the book to pin them. ROCO packages are transient (each is deleted once its
figures are out) and the images are re-derived from them, so the ROCO table records nothing to verify.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pandas as pd

from medvae_lib.data import (
    ChecksumError,
    NetworkError,
    file_digest,
    mirrored,
    temp_file_beside,
)

PMC_OA_HUB_REPO = "axiong/pmc_oa"
PMC_OA_SPLITS = ("train", "valid", "test")  # mmlearn's PMCOA
PMC_OA_IMAGE_FOLDER = (
    "caption_T060_filtered_top4_sep_v0_subfigures"  # the one top folder of images.zip
)
ROCO_SPLITS = (
    "train",
    "validation",
    "test",
)  # mmlearn's ROCO and the roco-dataset folders
ROCO_GROUPS = ("radiology", "non-radiology")
# Raw files of the roco-dataset repository at the commit whose scripts/fetch.py this module follows.
ROCO_REPO = "https://raw.githubusercontent.com/razorx89/roco-dataset/a1f0ad6c578ca8801e5a6eccc90af051aee1c326/"
PMC_FTP_PREFIX = (
    "ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/"  # what dlinks.txt and the OA web service name
)
PMC_PACKAGE_BASE_URL = (
    "https://ftp.ncbi.nlm.nih.gov/pub/pmc/"  # the same tree over HTTPS
)
PMC_OA_SERVICE_URL = "https://www.ncbi.nlm.nih.gov/pmc/utils/oa/oa.fcgi?id="  # fetch.py's PMCID_INFORMATION_API
CHECKSUMS_FILE = "checksums.json"
SKIPPED_FILE = "skipped.tsv"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_ROCO_ID = re.compile(r"ROCO_\d+")
_BACKOFF_S = 1.0  # first wait between download attempts; doubled each time, at most 8 s (tests set 0)
_TIMEOUT_S = 60


class PairDataError(ValueError):
    """Bad or inconsistent image–text data: an unknown split, a malformed line, a missing image or caption,
    an unsafe archive member, a figure missing from its package."""


class PairFileMissing(PairDataError, FileNotFoundError):
    """A file the layout needs is not there (also a :class:`FileNotFoundError`)."""


def _sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def _check_choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise PairDataError(
            f"unknown {what} {value!r}; expected one of {list(allowed)}"
        )
    return value


# ------------------------------------------------------------------------------------------ PMC-OA


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


class _BadFile(PairDataError):
    """A downloaded file that is not what the set holds; ``name`` is the file (in ``dest``) to blame."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


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


def _hub_download(
    repo_id: str, filename: str, revision: str | None, dest: Path
) -> None:
    """One file of a hub dataset repository into ``dest/filename``; hub and network failures as NetworkError."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    try:
        path = huggingface_hub.hf_hub_download(
            repo_id, filename, repo_type="dataset", revision=revision, local_dir=dest
        )
    except (
        hf_errors.HfHubHTTPError,
        hf_errors.EntryNotFoundError,
        hf_errors.LocalEntryNotFoundError,
        OSError,
    ) as err:
        raise NetworkError(
            f"could not download {filename} of the dataset {repo_id} (revision {revision or 'main'}) from the "
            f"Hugging Face hub: {type(err).__name__}: {err}"
        ) from err
    path = Path(path)
    if (
        path.resolve() != (dest / filename).resolve()
    ):  # older huggingface_hub versions may link from the cache
        shutil.copyfile(path, dest / filename)


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


# ------------------------------------------------------------------------------------------- ROCO


@dataclass(frozen=True)
class _Link:
    """One dlinks.txt line: the ROCO id, the package's URL on the PMC FTP tree, the figure inside it."""

    roco_id: str
    archive_url: str
    image_name: str

    @property
    def pmc_id(self) -> str:
        return self.archive_url.split("/")[-1][: -len(".tar.gz")]


def download_roco(
    dest: str | Path,
    split: str = "train",
    group: str = "radiology",
    repo: str | Path = ROCO_REPO,
    package_base_url: str = PMC_PACKAGE_BASE_URL,
    limit: int | None = None,
    retries: int = 3,
    skip_missing: bool = False,
    oa_service_url: str | None = PMC_OA_SERVICE_URL,
) -> Path:
    """Download the images of one ROCO split and group as ``scripts/fetch.py`` does, and write mmlearn's table.

    ``repo`` is the roco-dataset repository: a checkout folder, a ``.zip`` archive of one (a file or a
    URL), or the URL its raw files are served under (default: GitHub's raw files at the commit this code
    follows); ``data/{split}/{group}/dlinks.txt``, ``captions.txt`` and (if there) ``licences.txt`` are
    read from it. An archive URL is downloaded once into ``dest`` (one cached file per URL), and only
    after it has opened as a zip archive holding ``data/<split>/<group>/dlinks.txt``: a URL answering a
    web page raises :class:`PairDataError` and leaves nothing behind. For each dlinks line (the first ``limit`` only, if given) the PMC package is fetched from
    ``package_base_url`` + its path below ``ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/`` (HTTPS by default), with
    ``retries`` attempts on transient failures (connection errors, HTTP 5xx and 429); a package that is not
    there is looked up in the PMC OA web service (``oa_service_url`` + PMC id; ``None`` to skip) for its
    new location, as fetch.py does. The member ``{PMC id}/{figure}`` becomes
    ``dest/{split}/{group}/images/{ROCO_ID}.jpg``; images already there are not fetched again.

    Finally ``dest/{group}{split}_dataset.json`` is written: JSON lines with ``image_path`` (absolute),
    ``caption`` (from captions.txt), ``roco_id`` and, when licences.txt is there, ``licence``.

    A package that cannot be had raises :class:`~medvae_lib.data.NetworkError`, a figure missing from its
    package (or a ROCO id without a caption) :class:`PairDataError`, naming the ROCO id and the package.
    With ``skip_missing=True`` those images are left out instead, listed in
    ``dest/{split}/{group}/skipped.tsv`` (ROCO id, package, reason), and the count is printed.
    Returns ``dest``.
    """
    _check_choice(split, ROCO_SPLITS, "ROCO split")
    _check_choice(group, ROCO_GROUPS, "ROCO group")
    if retries < 1:
        raise PairDataError(f"retries must be at least 1, got {retries}")
    if limit is not None and limit < 1:
        raise PairDataError(
            f"limit must be a positive number of images or None, got {limit}"
        )
    dest = Path(dest).expanduser().resolve()
    folder = dest / split / group
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    repo_files = _RocoRepo(repo, dest, retries)
    where = f"data/{split}/{group}"
    try:
        links = _parse_dlinks(
            repo_files.text(f"{where}/dlinks.txt"), f"{repo_files}/{where}/dlinks.txt"
        )
        captions = _parse_captions(
            repo_files.text(f"{where}/captions.txt"),
            f"{repo_files}/{where}/captions.txt",
        )
        licence_text = repo_files.text(f"{where}/licences.txt", required=False)
    finally:
        repo_files.close()
    licences = _parse_licences(licence_text) if licence_text is not None else None
    if limit is not None:
        links = links[:limit]

    skipped: list[tuple[str, str, str]] = []
    wanted: list[_Link] = []
    for link in links:
        if not captions.get(link.roco_id, "").strip():
            reason = (
                "no caption in captions.txt"
                if link.roco_id not in captions
                else "empty caption"
            )
            if not skip_missing:
                raise PairDataError(
                    f"{link.roco_id} ({where}): {reason}; package {link.archive_url}"
                )
            skipped.append((link.roco_id, link.archive_url, reason))
        else:
            wanted.append(link)

    by_package: dict[str, list[_Link]] = {}
    for link in wanted:  # fetch.py's group_lines_by_archive: one download per package
        by_package.setdefault(link.archive_url, []).append(link)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".packages-") as tmp:
        for archive_url, group_links in by_package.items():
            todo = [
                link
                for link in group_links
                if not (images / f"{link.roco_id}.jpg").is_file()
            ]
            if not todo:
                continue
            ids = ", ".join(link.roco_id for link in todo)
            try:
                package = _fetch_package(
                    archive_url,
                    package_base_url,
                    oa_service_url,
                    Path(tmp),
                    retries,
                    ids,
                )
            except NetworkError as err:
                if not skip_missing:
                    raise
                skipped += [
                    (link.roco_id, archive_url, f"package not downloaded: {err}")
                    for link in todo
                ]
                continue
            try:
                for link in todo:
                    member = f"{link.pmc_id}/{link.image_name}"
                    data = package.get(member)
                    if data is None:
                        message = f"{link.roco_id}: figure {member!r} is not in package {archive_url}"
                        if not skip_missing:
                            raise PairDataError(message)
                        skipped.append(
                            (
                                link.roco_id,
                                archive_url,
                                f"figure {member!r} not in package",
                            )
                        )
                        continue
                    part = temp_file_beside(images / f"{link.roco_id}.jpg")
                    try:
                        part.write_bytes(data)
                        part.replace(images / f"{link.roco_id}.jpg")
                    finally:
                        part.unlink(missing_ok=True)
            finally:
                package.close()

    skipped_ids = {roco_id for roco_id, _, _ in skipped}
    table = dest / f"{group}{split}_dataset.json"
    with open(table, "w", encoding="utf-8") as out:
        n = 0
        for link in wanted:
            if link.roco_id in skipped_ids:
                continue
            row = {
                "image_path": str(images / f"{link.roco_id}.jpg"),
                "caption": captions[link.roco_id].strip(),
                "roco_id": link.roco_id,
            }
            if licences is not None:
                row["licence"] = licences.get(link.roco_id, "")
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    skipped_path = folder / SKIPPED_FILE
    if skipped:
        with open(skipped_path, "w", encoding="utf-8") as out:
            out.write("roco_id\tpackage\treason\n")
            for roco_id, archive_url, reason in skipped:
                out.write(f"{roco_id}\t{archive_url}\t{reason}\n")
    elif skipped_path.exists():
        skipped_path.unlink()
    note = f"; {len(skipped)} skipped, listed in {skipped_path}" if skipped else ""
    print(f"ROCO {split}/{group}: {n} image-caption pairs in {table}{note}")
    return dest


class _RocoRepo:
    """Read files of the roco-dataset repository from a folder, a zip archive (file or URL) or a raw-file URL."""

    def __init__(self, repo: str | Path, dest: Path, retries: int):
        self.repo, self.retries = str(repo), retries
        self.url = self.repo if self.repo.startswith(("http://", "https://")) else None
        self.zip: zipfile.ZipFile | None = None
        if self.url and self.url.endswith(".zip"):
            self.zip, self.url = _cached_roco_zip(self.url, dest, retries), None
        elif not self.url:
            path = Path(self.repo).expanduser()
            if path.is_file() and path.suffix == ".zip":
                self.zip = _open_roco_zip(path, f"the roco-dataset archive {path}")
            elif not path.is_dir():
                raise PairFileMissing(
                    f"the roco-dataset repository {self.repo!r} is not a folder, zip file or URL"
                )

    def __str__(self) -> str:
        return self.repo.rstrip("/")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def text(self, relative: str, required: bool = True) -> str | None:
        if self.url:
            url = f"{self.url.rstrip('/')}/{relative}"
            try:
                return _utf8(_download(url, None, self.retries, relative), url)
            except NetworkError as err:
                if not required and getattr(err, "status", None) == 404:
                    return None
                raise
        if (
            self.zip is not None
        ):  # a GitHub archive has one top folder, roco-dataset-<ref>/
            names = [
                n
                for n in self.zip.namelist()
                if n == relative or n.endswith("/" + relative)
            ]
            names = [n for n in names if n.count("/") <= relative.count("/") + 1]
            if names:
                name = min(names, key=len)
                try:
                    data = self.zip.read(name)
                except (zipfile.BadZipFile, zlib.error, EOFError) as err:
                    raise PairDataError(
                        f"{name} in the roco-dataset archive {self.repo} cannot be read "
                        f"(corrupt archive: {err}); download the archive again"
                    ) from err
                return _utf8(data, f"{self.repo}: {name}")
        else:
            path = Path(self.repo).expanduser() / relative
            if path.is_file():
                return _utf8(path.read_bytes(), str(path))
        if required:
            raise PairFileMissing(
                f"the roco-dataset repository {self.repo!r} has no {relative}"
            )
        return None


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PairDataError(
            f"{where} is not UTF-8 text (byte {err.start}: {data[err.start : err.start + 8]!r}); "
            "is it the roco-dataset repository's file, or an error page or binary file?"
        ) from err


def _open_roco_zip(path: Path, what: str) -> zipfile.ZipFile:
    """Open an archive of the roco-dataset repository, or PairDataError naming it if it is not one."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise PairDataError(
            f"{what} is not a zip archive (an error page or a truncated download?): {err}"
        ) from err
    if not any(
        re.search(r"(^|/)data/[^/]+/[^/]+/dlinks\.txt$", n) for n in archive.namelist()
    ):
        archive.close()
        raise PairDataError(
            f"{what} is a zip archive but not of the roco-dataset repository "
            "(it has no data/<split>/<group>/dlinks.txt)"
        )
    return archive


def _cached_roco_zip(url: str, dest: Path, retries: int) -> zipfile.ZipFile:
    """The roco-dataset archive at ``url``, downloaded once into ``dest`` under a name of its own per
    URL; a download is checked before it is kept, and a cached copy that fails the check is replaced."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    archive = dest / f".roco-dataset-{key}.zip"
    if archive.is_file():
        try:
            return _open_roco_zip(
                archive, f"the cached roco-dataset archive {archive} of {url}"
            )
        except PairDataError as err:
            print(f"{err}; downloading it again")
            archive.unlink()
    download = temp_file_beside(archive)
    try:
        _download(url, download, retries, "the roco-dataset archive")
        _open_roco_zip(
            download, f"the roco-dataset archive downloaded from {url}"
        ).close()
        download.replace(archive)
    finally:
        download.unlink(missing_ok=True)  # a failed download is never kept
    return _open_roco_zip(archive, f"the roco-dataset archive {archive} of {url}")


def _parse_dlinks(text: str, where: str) -> list[_Link]:
    """dlinks.txt lines as fetch.py's extract_image_info reads them, checked."""
    links = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        words = fields[1].split(" ") if len(fields) >= 3 else []
        if len(words) < 3 or not _ROCO_ID.fullmatch(fields[0].strip()):
            raise PairDataError(
                f"{where}, line {number}: not 'ROCO_ID<TAB>wget -r URL -P DIR<TAB>figure': {line!r}"
            )
        roco_id, archive_url, image_name = (
            fields[0].strip(),
            words[2],
            fields[-1].strip(),
        )
        if (
            not archive_url.endswith(".tar.gz")
            or not image_name
            or "/" in image_name
            or image_name == ".."
        ):
            raise PairDataError(
                f"{where}, line {number} ({roco_id}): bad package {archive_url!r} or figure {image_name!r}"
            )
        links.append(_Link(roco_id, archive_url, image_name))
    if not links:
        raise PairDataError(f"{where} lists no images")
    return links


def _parse_captions(text: str, where: str) -> dict[str, str]:
    captions = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        roco_id, tab, caption = line.partition("\t")
        if not tab or not _ROCO_ID.fullmatch(roco_id.strip()):
            raise PairDataError(
                f"{where}, line {number}: not 'ROCO_ID<TAB>caption': {line[:80]!r}"
            )
        captions[roco_id.strip()] = caption
    return captions


def _parse_licences(text: str) -> dict[str, str]:
    return {
        row["ROCO_ID"]: row["CC"]
        for row in csv.DictReader(io.StringIO(text))
        if row.get("ROCO_ID")
    }


def _package_url(archive_url: str, base_url: str) -> str:
    """The package's URL under ``base_url``: its path below the PMC FTP tree's ``/pub/pmc/``."""
    parsed = urlparse(archive_url)
    if parsed.netloc != "ftp.ncbi.nlm.nih.gov" or not parsed.path.startswith(
        "/pub/pmc/"
    ):
        raise PairDataError(
            f"package URL {archive_url!r} is not on the PMC FTP tree ({PMC_FTP_PREFIX})"
        )
    relative = parsed.path[len("/pub/pmc/") :]
    if ".." in PurePosixPath(relative).parts:
        raise PairDataError(f"package URL {archive_url!r} leaves the PMC tree")
    return base_url.rstrip("/") + "/" + relative


class _Package:
    """An opened PMC package (tar.gz): ``get(member)`` gives a regular file's bytes, or None if absent."""

    def __init__(self, path: Path):
        self.path = path
        self.tar = tarfile.open(path, "r:gz")
        try:
            self.members = {
                m.name: m for m in self.tar.getmembers()
            }  # reads it all: a corrupt one fails here
        except BaseException:
            self.tar.close()
            raise

    def get(self, name: str) -> bytes | None:
        member = self.members.get(name)
        if member is None or not member.isfile():
            return None
        with self.tar.extractfile(
            member
        ) as f:  # bytes only: nothing is written where the archive says
            return f.read()

    def close(self) -> None:
        self.tar.close()
        self.path.unlink(missing_ok=True)


def _fetch_package(
    archive_url: str,
    base_url: str,
    oa_service_url: str | None,
    tmp: Path,
    retries: int,
    ids: str,
) -> _Package:
    """Download and open a package; a corrupt one is downloaded again (fetch.py does too), a missing one
    looked up in the OA web service."""
    url = _package_url(archive_url, base_url)
    target = tmp / archive_url.split("/")[-1]
    for attempt in range(1, retries + 1):
        try:
            _download(url, target, retries, f"package of {ids}")
        except NetworkError as err:
            if getattr(err, "status", None) != 404 or oa_service_url is None:
                raise
            moved = _moved_package(archive_url, oa_service_url, retries)
            if moved is None or _package_url(moved, base_url) == url:
                raise NetworkError(
                    f"package {archive_url} of {ids} is not at {url} (HTTP 404) and the PMC OA service gives no "
                    "other location; the article may have left the open-access subset"
                ) from err
            url = _package_url(moved, base_url)
            _download(url, target, retries, f"package of {ids}")
        try:
            return _Package(target)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            target.unlink(missing_ok=True)
            if attempt == retries:
                raise PairDataError(
                    f"package {url} of {ids} is not a readable tar.gz after {attempt} download(s): {err}"
                ) from err
    raise AssertionError("unreachable")


def _moved_package(archive_url: str, oa_service_url: str, retries: int) -> str | None:
    """fetch.py's determine_new_archive_url: the ``tgz`` link the PMC OA web service gives for the PMC id."""
    pmc_id = archive_url.split("/")[-1][: -len(".tar.gz")]
    reply = _download(
        oa_service_url + pmc_id, None, retries, f"PMC OA service record of {pmc_id}"
    )
    try:
        root = ET.fromstring(reply)
    except ET.ParseError as err:
        raise NetworkError(
            f"the PMC OA service's answer for {pmc_id} is not XML: {err}"
        ) from err
    for link in root.iter("link"):
        if link.get("format") == "tgz" and link.get("href"):
            return link.get("href")
    return None


def _download(url: str, target: Path | None, retries: int, what: str) -> bytes:
    """GET ``url`` into ``target`` (or memory, returned) with retries on transient failures.

    Raises :class:`NetworkError` (with ``status`` set for an HTTP error) when it cannot be had."""
    url = mirrored(url)
    for attempt in range(1, retries + 1):
        try:
            request = urllib.request.Request(
                url, headers={"User-Agent": "medvae_lib-image_text_data"}
            )
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                if target is None:
                    return response.read()
                part = temp_file_beside(target)
                try:
                    with open(part, "wb") as out:
                        shutil.copyfileobj(response, out, 1 << 20)
                    part.replace(target)
                finally:
                    part.unlink(missing_ok=True)
                return b""
        except urllib.error.HTTPError as err:
            transient = err.code >= 500 or err.code == 429
            if not transient or attempt == retries:
                error = NetworkError(
                    f"{what}: {url} answered HTTP {err.code} (after {attempt} attempt(s))"
                )
                error.status = err.code
                raise error from err
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            TimeoutError,
            ConnectionError,
        ) as err:
            if attempt == retries:
                raise NetworkError(
                    f"{what}: could not download {url} after {attempt} attempt(s): {err}"
                ) from err
        time.sleep(min(_BACKOFF_S * 2 ** (attempt - 1), 8))
    raise AssertionError("unreachable")


def load_roco(root: str | Path, split: str, group: str = "radiology") -> pd.DataFrame:
    """ROCO pairs of one split and group as a table with ``image_path`` (absolute) and ``caption`` (and
    ``roco_id``, ``licence`` when :func:`download_roco` wrote them).

    Reads mmlearn's ``{root}/{group}{split}_dataset.json`` (JSON lines); a relative ``image_path`` is taken
    relative to ``root``. Raises :class:`PairDataError` for an unknown split or group, a missing table
    (:class:`PairFileMissing`), a malformed row or missing key, an empty caption and missing images.
    """
    _check_choice(split, ROCO_SPLITS, "ROCO split")
    _check_choice(group, ROCO_GROUPS, "ROCO group")
    root = Path(root).expanduser().resolve()
    path = root / f"{group}{split}_dataset.json"
    rows = _read_jsonl(path, ("image_path", "caption"), hint="run download_roco first")
    return _pair_table(
        rows, lambda row: root / str(row["image_path"]), path, keep_extra=True
    )


# ------------------------------------------------------------------------------------------ shared


def _read_jsonl(path: Path, keys: Sequence[str], hint: str) -> list[dict]:
    if not path.is_file():
        raise PairFileMissing(f"{path} is not there ({hint})")
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise PairDataError(
                    f"{path}, line {number}: not UTF-8 text ({err.reason})"
                ) from err
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PairDataError(f"{path}, line {number}: not JSON ({err})") from err
            if not isinstance(row, dict):
                raise PairDataError(
                    f"{path}, line {number}: a JSON object was expected, got {type(row).__name__}"
                )
            missing = [k for k in keys if k not in row]
            if missing:
                raise PairDataError(
                    f"{path}, line {number}: missing key(s) {missing}; has {sorted(row)}"
                )
            row["_line"] = number
            rows.append(row)
    if not rows:
        raise PairDataError(f"{path} holds no pairs")
    return rows


def _pair_table(
    rows: list[dict], image_of, path: Path, keep_extra: bool
) -> pd.DataFrame:
    """Check every row's caption and image; the table with absolute image paths first (then, with
    ``keep_extra``, the rows' other keys)."""
    records, missing = [], []
    for row in rows:
        caption = row["caption"]
        image = Path(image_of(row))  # an absolute image_path stays as it is (Path join)
        if not isinstance(caption, str) or not caption.strip():
            raise PairDataError(
                f"{path}, line {row['_line']}: empty caption for image {image.name!r}"
            )
        if not image.is_file():
            missing.append(f"{image} (line {row['_line']})")
            continue
        extra = (
            {
                k: v
                for k, v in row.items()
                if k not in ("image", "image_path", "caption", "_line")
            }
            if keep_extra
            else {}
        )
        records.append(
            {"image_path": str(image.resolve()), "caption": caption.strip(), **extra}
        )
    if missing:
        raise PairDataError(
            f"{path}: {len(missing)} image(s) missing, e.g. {missing[:3]}"
        )
    return pd.DataFrame.from_records(records)
