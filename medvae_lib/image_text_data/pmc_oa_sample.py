"""A sample of PMC-OA without its whole archive: :func:`sample_pmc_oa` reads the
split file, draws the pairs, and fetches only their images from ``images.zip``
through HTTP range requests (the archive's table of contents, then each member).

PMC-OA's ``images.zip`` is tens of GB; a chapter that uses 20,000 pairs needs a few
hundred MB of it. A zip archive ends with a table of its members and where each one
starts, so a reader that can ask for byte ranges (as the Hugging Face hub and its
CDN allow) can take the members it wants and leave the rest on the server."""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import re
import shutil
import struct
import threading
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

from medvae_lib.data import ChecksumError, NetworkError, file_digest, temp_file_beside

from .downloads import _hub_download
from .extraction import _folder_lock, _zip_targets
from .pairs import _read_jsonl
from .pmc_oa import _image_name
from .settings import (
    _HUB_ID,
    CHECKSUMS_FILE,
    PMC_OA_HUB_REPO,
    PMC_OA_SPLITS,
    PairDataError,
    _check_choice,
)

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local header (30 bytes)
_RETRIES = 6
_BACKOFF_S = (
    1.0  # first wait after a transient failure, doubled each time (tests set 0)
)


class _Remote:
    """Where a remote file's bytes are read from. For the hub that is the signed CDN
    address its ``resolve`` URL redirects to, resolved once (each request to the hub
    itself counts against its rate limit; the CDN's do not) and again when it expires;
    ``resolve()`` gives the address."""

    def __init__(self, resolve, size: int, sha256: str):
        self._resolve, self.size, self.sha256 = resolve, size, sha256
        self.url = resolve()
        self._lock = threading.Lock()

    def refresh(self, stale: str) -> None:
        """Resolve the address again, unless another thread already has."""
        with self._lock:
            if self.url == stale:
                self.url = self._resolve()


class _RangeFile(io.RawIOBase):
    """A remote file read with HTTP range requests (seekable, so ``zipfile`` can read it);
    ``requests`` counts the requests made. A transient failure (5xx, 429, a dropped
    connection) is retried, after the server's ``Retry-After`` where it sends one; an
    expired address (401, 403, 410) is resolved again."""

    def __init__(self, remote: _Remote):
        self.remote, self.size = remote, remote.size
        self.pos = self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer) -> int:
        data = self.read_range(self.pos, len(buffer))
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def read_range(self, start: int, length: int) -> bytes:
        """Bytes ``start`` to ``start + length`` (fewer at the end of the file)."""
        length = min(length, self.size - start)
        if length <= 0:
            return b""
        span = f"bytes={start}-{start + length - 1}"
        headers = {"Range": span, "User-Agent": "medvae_lib-image_text_data"}
        for attempt in range(1, _RETRIES + 1):
            self.requests += 1
            url, wait = self.remote.url, _BACKOFF_S * 2 ** (attempt - 1)
            try:
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=60) as response:
                    if (
                        response.status != 206
                    ):  # not transient: the server sends no parts
                        raise PairDataError(
                            f"{url} answered a range request with HTTP "
                            f"{response.status}; a sample needs a server that sends "
                            "parts of a file"
                        )
                    data = response.read()
                if len(data) == length:
                    return data
                failure = f"{length} bytes asked for, {len(data)} sent"
            except urllib.error.HTTPError as err:
                if err.code in (401, 403, 410):  # a signed address that expired
                    self.remote.refresh(url)
                elif err.code < 500 and err.code != 429:
                    raise NetworkError(f"{url} ({span}): HTTP {err.code}") from err
                after = err.headers.get("Retry-After", "") if err.headers else ""
                wait = min(float(after), 60.0) if after.isdigit() else wait
                failure = f"HTTP {err.code}"
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                failure = f"{type(err).__name__}: {err}"  # a dropped connection
            if attempt == _RETRIES:
                raise NetworkError(
                    f"could not read {span} of {url} in {attempt} attempts: {failure}"
                )
            time.sleep(min(wait, 60.0))
        raise AssertionError("unreachable")


def _member_bytes(remote: _RangeFile, info: zipfile.ZipInfo) -> bytes:
    """One member of a remote archive, decompressed, its CRC and size checked (one range
    request, two when its local header holds more than the usual extra field); a damaged
    one raises :class:`PairDataError` naming it."""
    try:
        return _checked_member(remote, info)
    except (zlib.error, struct.error) as err:
        raise PairDataError(
            f"{info.filename}: damaged in the archive ({type(err).__name__}: {err})"
        ) from err


def _checked_member(remote: _RangeFile, info: zipfile.ZipInfo) -> bytes:
    name_length = len(
        info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
    )
    guess = _LOCAL_HEADER.size + name_length + len(info.extra) + 64
    chunk = remote.read_range(info.header_offset, guess + info.compress_size)
    fields = _LOCAL_HEADER.unpack_from(chunk)
    if fields[0] != b"PK\x03\x04":
        raise PairDataError(
            f"{info.filename}: no zip member header at its recorded offset"
        )
    start = _LOCAL_HEADER.size + fields[9] + fields[10]  # name and extra field lengths
    data = chunk[start : start + info.compress_size]
    if len(data) < info.compress_size:  # a longer extra field than guessed
        data = remote.read_range(info.header_offset + start, info.compress_size)
    if info.compress_type == zipfile.ZIP_STORED:
        raw = data
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        raw = zlib.decompress(data, -15)
    else:
        raise PairDataError(
            f"{info.filename}: compression method {info.compress_type} is not read here"
        )
    if len(raw) != info.file_size or zlib.crc32(raw) != info.CRC:
        raise PairDataError(
            f"{info.filename}: its bytes do not match the archive's size and CRC "
            "(a damaged archive, or one that changed while it was read)"
        )
    return raw


def _archive(source: str | Path, revision: str | None) -> tuple[str, str, object]:
    """``(origin, commit, open)`` of a PMC-OA source: a local folder holding the hub
    repository's files, or a hub dataset id, read at ``revision`` (its commit is pinned,
    so the split file and the archive come from one release); ``open()`` gives a
    seekable file of ``images.zip``."""
    local = Path(source).expanduser()
    if local.is_dir():
        zip_path = local / "images.zip"
        return str(local.resolve()), revision or "", lambda: open(zip_path, "rb")
    if not (isinstance(source, str) and _HUB_ID.fullmatch(source)):
        raise PairDataError(
            f"PMC-OA source {str(source)!r} is neither a folder nor a Hugging Face dataset id"
        )
    import huggingface_hub

    url = huggingface_hub.hf_hub_url(
        source, "images.zip", repo_type="dataset", revision=revision
    )
    try:
        meta = huggingface_hub.get_hf_file_metadata(url)
    except Exception as err:  # the hub's and the network's errors alike
        raise NetworkError(
            f"could not reach images.zip of the dataset {source} on the Hugging Face hub: "
            f"{type(err).__name__}: {err}"
        ) from err
    commit = meta.commit_hash or revision or ""
    pinned = huggingface_hub.hf_hub_url(
        source, "images.zip", repo_type="dataset", revision=commit or revision
    )
    etag = (meta.etag or "").strip('"')
    sha = etag if re.fullmatch(r"[0-9a-f]{64}", etag) else f"etag {etag}"

    def resolve() -> str:  # the CDN address the hub redirects to, for the ranges
        return huggingface_hub.get_hf_file_metadata(pinned).location or pinned

    return source, commit, lambda: _RangeFile(_Remote(resolve, meta.size, sha))


def sample_pmc_oa(
    dest: str | Path,
    n: int,
    seed: int = 0,
    source: str | Path = PMC_OA_HUB_REPO,
    revision: str | None = None,
    split: str = "train",
    workers: int = 16,
) -> Path:
    """``n`` pairs of a PMC-OA split in mmlearn's layout (``dest/{split}.jsonl`` and
    ``dest/images``), without downloading ``images.zip``; return ``dest``.

    The split file is downloaded whole (into ``dest/source``); ``n`` of its rows are drawn
    with ``seed`` as :func:`~medvae_lib.contrastive_benchmark.pair_images` draws them
    (``numpy`` ``default_rng(seed).choice`` without replacement, sorted), so the sample is
    the pairs that a whole download would have used. Only those images are read from the
    archive, by range requests (``workers`` at once), each checked against the archive's
    CRC and size. ``source`` and ``revision`` are as for :func:`download_pmc_oa`; the hub's
    commit is pinned for the split file and the archive.

    Checksums are trust on first use, as for :func:`download_pmc_oa`: the first call
    records the split file's sha256, the archive's (the hub's, from its ETag), the commit,
    ``n``, ``seed`` and the sample's own sha256 in ``dest/checksums.json``; a later call
    verifies the sample against it and fetches nothing, or raises
    :class:`~medvae_lib.data.ChecksumError`. Another ``n``, ``seed`` or source in the same
    folder is refused. A sample is written to ``images.partial`` and renamed only once
    every image is there; an interrupted call keeps the images it has and fetches the rest.
    """
    _check_choice(split, PMC_OA_SPLITS, "PMC-OA split")
    if not (isinstance(n, int) and n > 0):
        raise PairDataError(
            f"a PMC-OA sample needs a positive number of pairs, got {n!r}"
        )
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    record_path, table = dest / CHECKSUMS_FILE, dest / f"{split}.jsonl"
    wanted = {"n": n, "seed": seed, "split": split}
    with _folder_lock(dest / ".sample.lock", f"sampling PMC-OA into {dest}"):
        if record_path.is_file():
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if "sample" not in record:
                raise PairDataError(
                    f"{dest} holds a whole PMC-OA download (download_pmc_oa), not a "
                    "sample: sample into another folder, or read this one with "
                    "extra_max_pairs=None"
                )
            asked = (record.get("sample"), record.get("asked"))
            if asked != (wanted, [str(source), revision]):
                raise PairDataError(
                    f"{dest} holds a PMC-OA sample of {record.get('sample')} from "
                    f"{record.get('asked')}, not {wanted} from {[str(source), revision]}; "
                    "use another folder (or delete it)"
                )
            digest = _sample_digest(table, dest / "images")
            if digest != record["sample_sha256"]:
                raise ChecksumError(
                    f"the PMC-OA sample in {dest} has sha256 {digest}, but {record_path} "
                    f"recorded {record['sample_sha256']}: a file changed or went missing "
                    "since it was drawn; delete the folder to draw it again"
                )
            return dest
        origin, commit, open_archive = _archive(source, revision)
        # what an interrupted call left (the split file, images.partial) is kept only
        # for the same sample of the same commit
        attempt = {"sample": wanted, "asked": [str(source), revision], "commit": commit}
        marker = dest / ".sampling.json"
        if marker.is_file() and json.loads(marker.read_text()) != attempt:
            shutil.rmtree(dest / "source", ignore_errors=True)
            shutil.rmtree(dest / "images.partial", ignore_errors=True)
        marker.write_text(json.dumps(attempt) + "\n")
        rows = _source_rows(dest, source, origin, commit, split)
        if n < len(rows):
            chosen = np.sort(
                np.random.default_rng(seed).choice(len(rows), n, replace=False)
            )
            rows = [rows[i] for i in chosen]
        names = [_image_name(r["image"], table, r["_line"]) for r in rows]
        archive_sha = _extract_members(open_archive, set(names), dest, workers)
        partial = temp_file_beside(table)
        with open(partial, "w", encoding="utf-8") as out:
            for row in rows:
                row = {k: v for k, v in row.items() if k != "_line"}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        partial.replace(table)
        record = {
            "asked": [str(source), revision],
            "source": origin,
            "revision": commit,
            "sample": wanted,
            "files": {
                f"source/{split}.jsonl": file_digest(
                    dest / "source" / f"{split}.jsonl"
                ),
                "images.zip": archive_sha,
            },
            "sample_sha256": _sample_digest(table, dest / "images"),
            "note": "sha256 recorded on first download (trust on first use); the authors "
            "publish no checksums. images.zip was not downloaded: its sha256 is the hub's",
        }
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        marker.unlink()
    print(
        f"PMC-OA: {len(rows)} pairs of {split} sampled (seed {seed}) from {origin} at "
        f"{commit or 'a local folder'}; recorded in {record_path}"
    )
    return dest


def _source_rows(
    dest: Path, source, origin: str, commit: str, split: str
) -> list[dict]:
    """The whole split file's rows (downloaded into ``dest/source`` once)."""
    folder = dest / "source"
    folder.mkdir(exist_ok=True)
    name = f"{split}.jsonl"
    if not (folder / name).is_file():
        if Path(origin).is_dir():
            shutil.copyfile(Path(origin) / name, folder / name)
        else:
            _hub_download(origin, name, commit or None, folder)
    try:
        return _read_jsonl(folder / name, ("image", "caption"), hint="call again")
    except PairDataError:
        (folder / name).unlink(missing_ok=True)  # an error page is not kept
        raise


def _extract_members(open_archive, names: set[str], dest: Path, workers: int) -> str:
    """Fetch ``names`` (paths below the images folder) from the archive into
    ``dest/images``; return the archive's sha256 (the hub's ETag, or the local file's)."""
    partial, images = dest / "images.partial", dest / "images"
    shutil.rmtree(images, ignore_errors=True)
    partial.mkdir(exist_ok=True)
    with open_archive() as raw:
        if isinstance(raw, _RangeFile):
            reader = io.BufferedReader(raw, buffer_size=1 << 20)
        else:
            reader = raw
        try:
            with zipfile.ZipFile(reader) as archive:
                members = {
                    str(path): info for info, path in _zip_targets(archive, dest)
                }
        except (zipfile.BadZipFile, EOFError) as err:
            raise PairDataError(
                f"images.zip is not a readable zip archive: {err}"
            ) from err
        missing = sorted(names - members.keys())
        if missing:
            raise PairDataError(
                f"images.zip lacks {len(missing)} of the {len(names)} sampled images, e.g. "
                f"{missing[:3]}: the split file and the archive are not of one release"
            )
        todo = [name for name in sorted(names) if not (partial / name).is_file()]

        def fetch(name: str) -> None:
            info = members[name]
            if isinstance(raw, _RangeFile):
                data = _member_bytes(_RangeFile(raw.remote), info)
            else:
                data = _member_bytes(_LocalRange(raw.name), info)
            target = partial / name
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f".{target.name}.{threading.get_ident()}.part")
            part.write_bytes(data)
            part.replace(target)  # a file there is whole: a later call skips it

        pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))
        try:
            for future in [pool.submit(fetch, name) for name in todo]:
                future.result()
        except BaseException:  # a failure or an interrupt: fetch nothing more
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        sha = (
            raw.remote.sha256 if isinstance(raw, _RangeFile) else file_digest(raw.name)
        )
    partial.rename(images)
    return sha


class _LocalRange:
    """A local archive read as :class:`_RangeFile` reads a remote one."""

    def __init__(self, path: str):
        self.path = path

    def read_range(self, start: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(length)


def _sample_digest(table: Path, images: Path) -> str:
    """One sha256 over the sample's table and every image it names, in order."""
    import hashlib

    rows = _read_jsonl(
        table, ("image", "caption"), hint="delete the folder, call again"
    )
    digest = hashlib.sha256(table.read_bytes())
    for row in rows:
        image = images / _image_name(row["image"], table, row["_line"])
        if not image.is_file():
            return f"missing {image}"
        digest.update(bytes.fromhex(file_digest(image)))
    return digest.hexdigest()
