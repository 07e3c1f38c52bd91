"""ROCO: the PMC packages (fetched, re-located through the OA web service, opened),
:func:`download_roco`, which takes each figure out of its package as fetch.py
does, and :func:`load_roco`."""

from __future__ import annotations

import gzip
import json
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pandas as pd

from medvae_lib.data import (
    NetworkError,
    temp_file_beside,
)

from .downloads import _download
from .pairs import _pair_table, _read_jsonl
from .roco_repo import _Link, _parse_captions, _parse_dlinks, _parse_licences, _RocoRepo
from .settings import (
    PMC_FTP_PREFIX,
    PMC_OA_SERVICE_URL,
    PMC_PACKAGE_BASE_URL,
    ROCO_GROUPS,
    ROCO_REPO,
    ROCO_SPLITS,
    SKIPPED_FILE,
    PairDataError,
    _check_choice,
)


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
