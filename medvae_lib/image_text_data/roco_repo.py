"""The roco-dataset repository's files (from a folder, a zip archive or raw-file
URLs) and their parsing: ``dlinks.txt``, ``captions.txt`` and ``licences.txt``."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from medvae_lib.data import (
    NetworkError,
    temp_file_beside,
)

from .downloads import _download
from .settings import _ROCO_ID, PairDataError, PairFileMissing


@dataclass(frozen=True)
class _Link:
    """One dlinks.txt line: the ROCO id, the package's URL on the PMC FTP tree, the figure inside it."""

    roco_id: str
    archive_url: str
    image_name: str

    @property
    def pmc_id(self) -> str:
        return self.archive_url.split("/")[-1][: -len(".tar.gz")]


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
