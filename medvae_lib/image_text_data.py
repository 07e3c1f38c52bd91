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
download records each file's sha256 in ``dest/checksums.json`` and prints it; every later call verifies
the files against that record and raises :class:`~medvae_lib.data.ChecksumError` on a mismatch. This
cannot prove the first download was the authors' file (nothing published can), but it does catch
corruption, truncation and a file silently changed on the hub or on disk afterwards; copy the printed
digests into a manifest or the book to pin them. ROCO packages are transient (each is deleted once its
figures are out) and the images are re-derived from them, so the ROCO table records nothing to verify.
"""

from __future__ import annotations

import csv
import gzip
import http.client
import io
import json
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

from medvae_lib.data import ChecksumError, NetworkError, file_digest

PMC_OA_HUB_REPO = "axiong/pmc_oa"
PMC_OA_SPLITS = ("train", "valid", "test")  # mmlearn's PMCOA
PMC_OA_IMAGE_FOLDER = "caption_T060_filtered_top4_sep_v0_subfigures"  # the one top folder of images.zip
ROCO_SPLITS = ("train", "validation", "test")  # mmlearn's ROCO and the roco-dataset folders
ROCO_GROUPS = ("radiology", "non-radiology")
# Raw files of the roco-dataset repository at the commit whose scripts/fetch.py this module follows.
ROCO_REPO = "https://raw.githubusercontent.com/razorx89/roco-dataset/a1f0ad6c578ca8801e5a6eccc90af051aee1c326/"
PMC_FTP_PREFIX = "ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/"  # what dlinks.txt and the OA web service name
PMC_PACKAGE_BASE_URL = "https://ftp.ncbi.nlm.nih.gov/pub/pmc/"  # the same tree over HTTPS
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
        raise PairDataError(f"unknown {what} {value!r}; expected one of {list(allowed)}")
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
    :class:`~medvae_lib.data.ChecksumError` if it differs. A file fetched later (say a split not asked for
    before) is added to the record. Hashing ``images.zip`` (tens of GB) takes minutes on every call.
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
        raise PairDataError(f"PMC-OA source {str(source)!r} is neither a folder nor a Hugging Face dataset id")
    dest.mkdir(parents=True, exist_ok=True)
    record_path = dest / CHECKSUMS_FILE
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record and (record.get("source"), record.get("revision")) != (origin, revision):
        raise PairDataError(
            f"{dest} was downloaded from {record.get('source')!r} at revision {record.get('revision')!r}, "
            f"not {origin!r} at {revision!r}; use another folder (or delete it) for a different source"
        )
    recorded: dict[str, str] = dict(record.get("files", {}))
    added: dict[str, str] = {}
    for name in [f"{split}.jsonl" for split in splits] + ["images.zip"]:
        target = dest / name
        if not target.is_file():
            if local.is_dir():
                if not (local / name).is_file():
                    raise PairFileMissing(f"{local} has no {name}; a PMC-OA folder holds the hub repository's files")
                shutil.copyfile(local / name, target)
            else:
                _hub_download(origin, name, revision, dest)
        digest = _sha256(target)
        if name in recorded:
            if digest != recorded[name]:
                raise ChecksumError(
                    f"{target}: sha256 is {digest}, but {record_path} recorded {recorded[name]} when it was first "
                    "downloaded; the file is corrupt, truncated or has changed since (delete it to download again)"
                )
        else:
            added[name] = digest
    if added:
        recorded.update(added)
        record = {
            "source": origin,
            "revision": revision,
            "files": dict(sorted(recorded.items())),
            "note": "sha256 recorded on first download (trust on first use); the authors publish no checksums",
        }
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        for name, digest in added.items():
            print(f"PMC-OA {name}: sha256 {digest} (recorded in {record_path})")
    _extract_images(dest / "images.zip", dest / "images", recorded["images.zip"])
    return dest


def _hub_download(repo_id: str, filename: str, revision: str | None, dest: Path) -> None:
    """One file of a hub dataset repository into ``dest/filename``; hub and network failures as NetworkError."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    try:
        path = huggingface_hub.hf_hub_download(
            repo_id, filename, repo_type="dataset", revision=revision, local_dir=dest
        )
    except (hf_errors.HfHubHTTPError, hf_errors.EntryNotFoundError, hf_errors.LocalEntryNotFoundError, OSError) as err:
        raise NetworkError(
            f"could not download {filename} of the dataset {repo_id} (revision {revision or 'main'}) from the "
            f"Hugging Face hub: {type(err).__name__}: {err}"
        ) from err
    path = Path(path)
    if path.resolve() != (dest / filename).resolve():  # older huggingface_hub versions may link from the cache
        shutil.copyfile(path, dest / filename)


def _zip_targets(archive: zipfile.ZipFile, where: Path) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The members to extract and their paths below the images folder, or PairDataError for an unsafe one."""
    members = []
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
        if name.startswith("/") or re.match(r"[A-Za-z]:/", name) or ".." in parts or is_link:
            raise PairDataError(
                f"{where}: member {info.filename!r} would be written outside the images folder "
                "(absolute path, '..' or a link); refusing to extract the archive"
            )
        if not info.is_dir():
            members.append((info, PurePosixPath(*parts)))
    if not members:
        raise PairDataError(f"{where} holds no files")
    tops = {path.parts[0] for _, path in members}
    if len(tops) == 1 and all(len(path.parts) > 1 for _, path in members):  # one top folder: drop it
        members = [(info, PurePosixPath(*path.parts[1:])) for info, path in members]
    return members


def _extract_images(zip_path: Path, images: Path, digest: str) -> None:
    """Extract ``zip_path`` into ``images`` (once per archive digest), refusing members that escape it."""
    marker = images / ".extracted-sha256"
    if marker.is_file() and marker.read_text().strip() == digest:
        return
    partial = images.with_name(images.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    root = partial.resolve()
    with zipfile.ZipFile(zip_path) as archive:
        members = _zip_targets(archive, zip_path)  # checked before anything is written
        for info, relative in members:
            target = (root / relative).resolve()
            if not target.is_relative_to(root):  # belt and braces after the check above
                raise PairDataError(f"{zip_path}: member {info.filename!r} would be written outside {images}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    (partial / marker.name).write_text(digest + "\n")
    shutil.rmtree(images, ignore_errors=True)
    partial.rename(images)


def load_pmc_oa(root: str | Path, split: str, image_dir: str = "images") -> pd.DataFrame:
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
    rows = _read_jsonl(root / f"{split}.jsonl", ("image", "caption"), hint="run download_pmc_oa first")
    return _pair_table(rows, lambda row: images / str(row["image"]), root / f"{split}.jsonl", keep_extra=False)


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
    read from it. For each dlinks line (the first ``limit`` only, if given) the PMC package is fetched from
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
        raise PairDataError(f"limit must be a positive number of images or None, got {limit}")
    dest = Path(dest).expanduser().resolve()
    folder = dest / split / group
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    repo_files = _RocoRepo(repo, dest, retries)
    where = f"data/{split}/{group}"
    try:
        links = _parse_dlinks(repo_files.text(f"{where}/dlinks.txt"), f"{repo_files}/{where}/dlinks.txt")
        captions = _parse_captions(repo_files.text(f"{where}/captions.txt"), f"{repo_files}/{where}/captions.txt")
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
            reason = "no caption in captions.txt" if link.roco_id not in captions else "empty caption"
            if not skip_missing:
                raise PairDataError(f"{link.roco_id} ({where}): {reason}; package {link.archive_url}")
            skipped.append((link.roco_id, link.archive_url, reason))
        else:
            wanted.append(link)

    by_package: dict[str, list[_Link]] = {}
    for link in wanted:  # fetch.py's group_lines_by_archive: one download per package
        by_package.setdefault(link.archive_url, []).append(link)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".packages-") as tmp:
        for archive_url, group_links in by_package.items():
            todo = [link for link in group_links if not (images / f"{link.roco_id}.jpg").is_file()]
            if not todo:
                continue
            ids = ", ".join(link.roco_id for link in todo)
            try:
                package = _fetch_package(archive_url, package_base_url, oa_service_url, Path(tmp), retries, ids)
            except NetworkError as err:
                if not skip_missing:
                    raise
                skipped += [(link.roco_id, archive_url, f"package not downloaded: {err}") for link in todo]
                continue
            try:
                for link in todo:
                    member = f"{link.pmc_id}/{link.image_name}"
                    data = package.get(member)
                    if data is None:
                        message = f"{link.roco_id}: figure {member!r} is not in package {archive_url}"
                        if not skip_missing:
                            raise PairDataError(message)
                        skipped.append((link.roco_id, archive_url, f"figure {member!r} not in package"))
                        continue
                    part = images / f".{link.roco_id}.jpg.part"
                    part.write_bytes(data)
                    part.replace(images / f"{link.roco_id}.jpg")
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
            archive = dest / ".roco-dataset.zip"
            if not archive.is_file():
                _download(self.url, archive, retries, "the roco-dataset archive")
            self.zip, self.url = zipfile.ZipFile(archive), None
        elif not self.url:
            path = Path(self.repo).expanduser()
            if path.is_file() and path.suffix == ".zip":
                self.zip = zipfile.ZipFile(path)
            elif not path.is_dir():
                raise PairFileMissing(f"the roco-dataset repository {self.repo!r} is not a folder, zip file or URL")

    def __str__(self) -> str:
        return self.repo.rstrip("/")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def text(self, relative: str, required: bool = True) -> str | None:
        if self.url:
            try:
                return _download(f"{self.url.rstrip('/')}/{relative}", None, self.retries, relative).decode("utf-8")
            except NetworkError as err:
                if not required and getattr(err, "status", None) == 404:
                    return None
                raise
        if self.zip is not None:  # a GitHub archive has one top folder, roco-dataset-<ref>/
            names = [n for n in self.zip.namelist() if n == relative or n.endswith("/" + relative)]
            names = [n for n in names if n.count("/") <= relative.count("/") + 1]
            if names:
                return self.zip.read(min(names, key=len)).decode("utf-8")
        else:
            path = Path(self.repo).expanduser() / relative
            if path.is_file():
                return path.read_text(encoding="utf-8")
        if required:
            raise PairFileMissing(f"the roco-dataset repository {self.repo!r} has no {relative}")
        return None


def _parse_dlinks(text: str, where: str) -> list[_Link]:
    """dlinks.txt lines as fetch.py's extract_image_info reads them, checked."""
    links = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        words = fields[1].split(" ") if len(fields) >= 3 else []
        if len(words) < 3 or not _ROCO_ID.fullmatch(fields[0].strip()):
            raise PairDataError(f"{where}, line {number}: not 'ROCO_ID<TAB>wget -r URL -P DIR<TAB>figure': {line!r}")
        roco_id, archive_url, image_name = fields[0].strip(), words[2], fields[-1].strip()
        if not archive_url.endswith(".tar.gz") or not image_name or "/" in image_name or image_name == "..":
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
            raise PairDataError(f"{where}, line {number}: not 'ROCO_ID<TAB>caption': {line[:80]!r}")
        captions[roco_id.strip()] = caption
    return captions


def _parse_licences(text: str) -> dict[str, str]:
    return {row["ROCO_ID"]: row["CC"] for row in csv.DictReader(io.StringIO(text)) if row.get("ROCO_ID")}


def _package_url(archive_url: str, base_url: str) -> str:
    """The package's URL under ``base_url``: its path below the PMC FTP tree's ``/pub/pmc/``."""
    parsed = urlparse(archive_url)
    if parsed.netloc != "ftp.ncbi.nlm.nih.gov" or not parsed.path.startswith("/pub/pmc/"):
        raise PairDataError(f"package URL {archive_url!r} is not on the PMC FTP tree ({PMC_FTP_PREFIX})")
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
            self.members = {m.name: m for m in self.tar.getmembers()}  # reads it all: a corrupt one fails here
        except BaseException:
            self.tar.close()
            raise

    def get(self, name: str) -> bytes | None:
        member = self.members.get(name)
        if member is None or not member.isfile():
            return None
        with self.tar.extractfile(member) as f:  # bytes only: nothing is written where the archive says
            return f.read()

    def close(self) -> None:
        self.tar.close()
        self.path.unlink(missing_ok=True)


def _fetch_package(
    archive_url: str, base_url: str, oa_service_url: str | None, tmp: Path, retries: int, ids: str
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
    reply = _download(oa_service_url + pmc_id, None, retries, f"PMC OA service record of {pmc_id}")
    try:
        root = ET.fromstring(reply)
    except ET.ParseError as err:
        raise NetworkError(f"the PMC OA service's answer for {pmc_id} is not XML: {err}") from err
    for link in root.iter("link"):
        if link.get("format") == "tgz" and link.get("href"):
            return link.get("href")
    return None


def _download(url: str, target: Path | None, retries: int, what: str) -> bytes:
    """GET ``url`` into ``target`` (or memory, returned) with retries on transient failures.

    Raises :class:`NetworkError` (with ``status`` set for an HTTP error) when it cannot be had."""
    for attempt in range(1, retries + 1):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "medvae_lib-image_text_data"})
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                if target is None:
                    return response.read()
                part = target.with_name(target.name + ".part")
                with open(part, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
                part.replace(target)
                return b""
        except urllib.error.HTTPError as err:
            transient = err.code >= 500 or err.code == 429
            if not transient or attempt == retries:
                error = NetworkError(f"{what}: {url} answered HTTP {err.code} (after {attempt} attempt(s))")
                error.status = err.code
                raise error from err
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
            if attempt == retries:
                raise NetworkError(f"{what}: could not download {url} after {attempt} attempt(s): {err}") from err
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
    return _pair_table(rows, lambda row: root / str(row["image_path"]), path, keep_extra=True)


# ------------------------------------------------------------------------------------------ shared


def _read_jsonl(path: Path, keys: Sequence[str], hint: str) -> list[dict]:
    if not path.is_file():
        raise PairFileMissing(f"{path} is not there ({hint})")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PairDataError(f"{path}, line {number}: not JSON ({err})") from err
            if not isinstance(row, dict):
                raise PairDataError(f"{path}, line {number}: a JSON object was expected, got {type(row).__name__}")
            missing = [k for k in keys if k not in row]
            if missing:
                raise PairDataError(f"{path}, line {number}: missing key(s) {missing}; has {sorted(row)}")
            row["_line"] = number
            rows.append(row)
    if not rows:
        raise PairDataError(f"{path} holds no pairs")
    return rows


def _pair_table(rows: list[dict], image_of, path: Path, keep_extra: bool) -> pd.DataFrame:
    """Check every row's caption and image; the table with absolute image paths first (then, with
    ``keep_extra``, the rows' other keys)."""
    records, missing = [], []
    for row in rows:
        caption = row["caption"]
        image = Path(image_of(row))  # an absolute image_path stays as it is (Path join)
        if not isinstance(caption, str) or not caption.strip():
            raise PairDataError(f"{path}, line {row['_line']}: empty caption for image {image.name!r}")
        if not image.is_file():
            missing.append(f"{image} (line {row['_line']})")
            continue
        extra = (
            {k: v for k, v in row.items() if k not in ("image", "image_path", "caption", "_line")} if keep_extra else {}
        )
        records.append({"image_path": str(image.resolve()), "caption": caption.strip(), **extra})
    if missing:
        raise PairDataError(f"{path}: {len(missing)} image(s) missing, e.g. {missing[:3]}")
    return pd.DataFrame.from_records(records)
