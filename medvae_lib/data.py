"""Datasets described by manifests: loading, checksum verification, download, MONAI transforms.

A manifest (``data_manifests/<name>.yaml``) names a dataset's source, licence and citation, and one
entry per file with a local path (the small copy used by tests and CI mode), a URL (the full-size
files used on Colab), or both (a copy kept beside the repository that is also published, at a pinned
revision, under that URL: used where it lies, else downloaded; one checksum verifies either), plus a
checksum. Nothing is used before its checksum matches.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from monai import transforms as mt

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_DIR = (
    REPO_ROOT / "data_manifests"
)  # in a checkout; see manifest_dir() for other installs
MANIFEST_DIR_ENV = "MEDVAE_MANIFEST_DIR"
SPLITS = ("train", "val", "test")
_REQUIRED_MANIFEST_KEYS = (
    "name",
    "title",
    "licence",
    "source",
    "citation",
    "spatial_dims",
    "format",
    "files",
)
_HASHES = {"sha256": 64, "md5": 32}  # strongest first, with their lengths in hex digits
DATA_ROOT_ENV = "MEDVAE_DATA_ROOT"
# What a manifest may say, and the type of each field: anything else (a typo such as 'sha265') is an error.
_MANIFEST_SCHEMA = {
    "name": str,
    "title": str,
    "licence": str,
    "source": str,
    "citation": str,
    "spatial_dims": int,
    "format": str,
    "files": dict,
    "labels": dict,
    "modality": str,
    "homepage": str,
}
_FILE_SCHEMA = {
    "filename": str,
    "image_size": int,
    "url": str,
    "local": str,
    "bundled": str,
    "sha256": str,
    "sources_sha256": str,
    "md5": str,
    "n_samples": dict,
    "fallback": (str, int),
}


def _check_fields(raw: Mapping, schema: Mapping, where: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in schema)
    if unknown:
        raise ManifestError(
            f"{where}: unknown field(s) {unknown}; known: {sorted(schema)}"
        )
    for key, value in raw.items():
        kind = schema[key]
        if value is not None and (
            not isinstance(value, kind)
            or (isinstance(value, bool) and kind is not bool)
        ):
            wanted = " or ".join(
                k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,))
            )
            raise ManifestError(
                f"{where}: {key} must be {wanted} (quote hex digests), got {value!r} ({type(value).__name__})"
            )


def data_root(manifest_path: str | Path) -> Path:
    """The only folder a manifest's ``local`` files may lie in: ``$MEDVAE_DATA_ROOT`` if set, else
    ``shared/data`` beside the repository that holds the manifest."""
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser().resolve()
    return (
        Path(manifest_path).resolve().parent.parent.parent / "shared" / "data"
    ).resolve()


class ManifestError(ValueError):
    """A manifest is missing, malformed or does not describe the requested file."""


class ChecksumError(ValueError):
    """A data file's content does not match the checksum its manifest records."""


class NetworkError(ConnectionError):
    """A download failed for a network reason (unreachable host, HTTP error), not because of its content."""


@dataclass(frozen=True)
class DataFile:
    key: str
    filename: str
    image_size: int
    url: str | None = None
    local: Path | None = None
    sha256: str | None = None
    md5: str | None = None
    n_samples: Mapping[str, int] = field(default_factory=dict)
    fallback: str | None = (
        None  # file key to subsample when the local copy is missing (e.g. on Colab)
    )
    bundled: Path | None = (
        None  # a copy that ships with the repository (data_manifests/)
    )
    # a table rebuilt from its sources: the sha256 of its columns that do not depend on the
    # software that converts (image_text_data.medpix2)
    sources_sha256: str | None = None

    @property
    def checksum(self) -> tuple[str, str]:
        """(algorithm, hex digest) of the strongest checksum the manifest records."""
        for algorithm in _HASHES:
            digest = getattr(self, algorithm)
            if digest:
                return algorithm, digest
        raise ManifestError(
            f"file {self.key!r} records no checksum"
        )  # guarded in load_manifest


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    licence: str
    source: str
    citation: str
    spatial_dims: int
    format: str
    files: Mapping[str, DataFile]
    path: Path
    labels: Mapping[int, str] = field(default_factory=dict)
    modality: str = ""

    def file(self, key: str) -> DataFile:
        try:
            return self.files[str(key)]
        except KeyError:
            raise ManifestError(
                f"manifest {self.path} has no file {key!r}; it lists {sorted(self.files)}"
            ) from None


def manifest_dir() -> Path:
    """Where manifests are found by name: ``$MEDVAE_MANIFEST_DIR`` if set; else the checkout's
    ``data_manifests/`` beside this package (an editable install or ``sys.path``); else the first
    ``data_manifests/`` in the working directory or one of its parents (a non-editable install used
    from inside the repository, e.g. from ``notebooks/``)."""
    if os.environ.get(MANIFEST_DIR_ENV):
        path = Path(os.environ[MANIFEST_DIR_ENV]).expanduser()
        if not path.is_dir():
            raise ManifestError(
                f"${MANIFEST_DIR_ENV} points to {path}, which is not a folder"
            )
        return path
    if MANIFEST_DIR.is_dir():
        return MANIFEST_DIR
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "data_manifests").is_dir():
            return folder / "data_manifests"
    raise ManifestError(
        f"no data_manifests/ folder found beside {Path(__file__).parent}, in {Path.cwd()} or its parents; "
        f"run from inside the repository or set ${MANIFEST_DIR_ENV}"
    )


def load_manifest(name_or_path: str | Path) -> Manifest:
    """Read and validate a manifest, by name (``"pneumoniamnist"``) or by path.

    A file's ``local`` path is relative to the repository root, the folder that holds ``data_manifests/``.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        folder = manifest_dir()
        path = folder / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in folder.glob("*.yaml"))
            raise ManifestError(f"no manifest at {path}; known manifests: {known}")
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ManifestError(f"manifest {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ManifestError(
            f"manifest {path} must be a mapping, got {type(raw).__name__}"
        )
    _check_fields(raw, _MANIFEST_SCHEMA, f"manifest {path}")
    missing = [k for k in _REQUIRED_MANIFEST_KEYS if not raw.get(k)]
    if missing:
        raise ManifestError(f"manifest {path} lacks required field(s) {missing}")
    if raw["spatial_dims"] not in (2, 3):
        raise ManifestError(
            f"manifest {path}: spatial_dims must be 2 or 3, got {raw['spatial_dims']!r}"
        )
    for label, text in (raw.get("labels") or {}).items():
        if (
            not isinstance(label, int)
            or isinstance(label, bool)
            or not isinstance(text, str)
        ):
            raise ManifestError(
                f"manifest {path}: labels must map integer class ids to names, got {label!r}: {text!r}"
            )
    root = data_root(path)
    files = {}
    for key, entry in raw["files"].items():
        key = str(key)
        where = f"manifest {path}, file {key!r}"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: entry must be a mapping")
        _check_fields(entry, _FILE_SCHEMA, where)
        for required in ("filename", "image_size"):
            if entry.get(required) is None:
                raise ManifestError(f"{where}: lacks {required!r}")
        if not any(entry.get(k) for k in ("url", "local", "bundled")):
            raise ManifestError(
                f"{where}: gives no 'url', 'local' or 'bundled' path, so it cannot be found"
            )
        if not any(entry.get(h) for h in _HASHES):
            raise ManifestError(
                f"{where}: records no checksum (one of {list(_HASHES)})"
            )
        for h, length in {**_HASHES, "sources_sha256": 64}.items():
            if entry.get(h) is not None and not re.fullmatch(
                f"[0-9a-fA-F]{{{length}}}", entry[h]
            ):
                raise ManifestError(
                    f"{where}: {h} must be {length} hex digits, got {entry[h]!r}"
                )
        name = entry["filename"]
        if not name or Path(name).name != name or name in (".", ".."):
            raise ManifestError(
                f"{where}: filename must be a plain file name (no folders, no '..'), got {name!r}"
            )
        if entry["image_size"] < 1:
            raise ManifestError(
                f"{where}: image_size must be positive, got {entry['image_size']}"
            )
        if entry.get("url") and not str(entry["url"]).startswith(
            ("https://", "http://")
        ):
            raise ManifestError(
                f"{where}: url must start with https:// or http://, got {entry['url']!r}"
            )
        samples = entry.get("n_samples") or {}
        for split, n in samples.items():
            if (
                split not in SPLITS
                or not isinstance(n, int)
                or isinstance(n, bool)
                or n < 0
            ):
                raise ManifestError(
                    f"{where}: n_samples must map splits {SPLITS} to counts >= 0, got {split!r}: {n!r}"
                )
        local = None
        if entry.get("local"):
            local = (path.resolve().parent.parent / entry["local"]).resolve()
            if not local.is_relative_to(root):
                raise ManifestError(
                    f"{where}: local path {entry['local']!r} resolves to {local}, outside the data folder {root} "
                    f"(set ${DATA_ROOT_ENV} to use another data folder)"
                )
        bundled = None
        if entry.get("bundled"):
            bundled = (path.resolve().parent / entry["bundled"]).resolve()
            if not bundled.is_relative_to(path.resolve().parent):
                raise ManifestError(
                    f"{where}: bundled path {entry['bundled']!r} resolves to {bundled}, outside "
                    f"the manifests' folder {path.resolve().parent}"
                )
        files[key] = DataFile(
            key=key,
            filename=name,
            image_size=entry["image_size"],
            url=entry.get("url"),
            local=local,
            sha256=(entry.get("sha256") or None),
            md5=(entry.get("md5") or None),
            n_samples=dict(samples),
            fallback=str(entry["fallback"])
            if entry.get("fallback") is not None
            else None,
            bundled=bundled,
            sources_sha256=entry.get("sources_sha256") or None,
        )
    for key, f in files.items():
        if f.fallback is not None and (
            f.fallback not in files or f.fallback == key or not f.n_samples
        ):
            raise ManifestError(
                f"manifest {path}, file {key!r}: fallback {f.fallback!r} must name another file, and n_samples must say how many to draw"
            )
    return Manifest(
        name=raw["name"],
        title=raw["title"],
        licence=raw["licence"],
        source=raw["source"],
        citation=" ".join(str(raw["citation"]).split()),
        spatial_dims=int(raw["spatial_dims"]),
        format=raw["format"],
        files=files,
        path=path,
        labels={int(k): v for k, v in (raw.get("labels") or {}).items()},
        modality=raw.get("modality", ""),
    )


def file_digest(
    path: str | Path, algorithm: str = "sha256", chunk: int = 1 << 20
) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | Path, datafile: DataFile) -> Path:
    """Return ``path`` if it exists and matches the manifest's checksum, else raise a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {datafile.filename!r} (manifest key {datafile.key!r}) not found at {path}"
        )
    algorithm, expected = datafile.checksum
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise ChecksumError(
            f"{path}: {algorithm} is {actual}, but the manifest records {expected}; the file is corrupt, "
            f"truncated or a different release than the one the manifest describes (file {datafile.key!r})"
        )
    return path


def temp_file_beside(
    target: Path, prefix: str | None = None, suffix: str = ".part"
) -> Path:
    """A new, empty file of this process's own in ``target``'s folder (name: ``prefix``,
    default ``.<target name>.``, a random part, ``suffix``), to be written and then renamed
    over ``target``: two processes writing the same target never share a temporary file,
    and a reader never sees a half-written ``target``. ``mkstemp`` makes the file private;
    it gets the ordinary permissions of a new file instead."""
    import tempfile

    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}." if prefix is None else prefix,
        suffix=suffix,
        dir=target.parent,
    )
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


MIRROR_VARIABLE = "MEDVAE_MIRROR"


def mirror_path(url: str) -> str:
    """Where ``url`` lies in a mirror: its public host and path
    (``https://zenodo.org/records/1/files/a.npz`` -> ``zenodo.org/records/1/files/a.npz``);
    ``mirrored`` reads from there and ``medvae_lib.mirror`` writes there."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"cannot mirror {url!r}: not an http(s) URL with a host")
    return f"{parts.netloc}{parts.path}"


def mirrored(url: str) -> str:
    """``url`` as served by the mirror named in ``$MEDVAE_MIRROR``, if it is set: the mirror's
    base URL, then the public host and path (``https://zenodo.org/records/1/files/a.npz``
    becomes ``<mirror>/zenodo.org/records/1/files/a.npz``), so a classroom or offline site
    can copy the public files once under one folder per host. Checksums are verified as
    for the public host. Unset or empty: ``url`` unchanged."""
    from urllib.parse import urlsplit

    base = os.environ.get(MIRROR_VARIABLE, "").strip()
    if not base:
        return url
    query = urlsplit(url).query
    return f"{base.rstrip('/')}/{mirror_path(url)}{'?' + query if query else ''}"


def default_cache(manifest: Manifest) -> Path:
    """Where downloads of ``manifest``'s files go unless told otherwise: pooch's per-user cache."""
    with warnings.catch_warnings():  # pooch imports tqdm.auto (see fetch)
        warnings.simplefilter("ignore")
        import pooch

    return Path(pooch.os_cache("medvae_lib")) / manifest.name


def fetch(
    manifest: Manifest | str,
    key: str,
    cache_dir: str | Path | None = None,
    url: str | None = None,
    retries: int = 3,
) -> Path:
    """Return a verified local path for file ``key`` of a manifest.

    A file with a ``local`` path is verified in place; where that copy is absent, a ``bundled`` copy
    (small files that ship with the repository, beside the manifests) is verified in place. Otherwise (no ``local`` path, or a ``local`` copy
    that is absent, as on Colab, for a file whose entry also gives a ``url``) it is downloaded with pooch
    from ``url`` (default: the manifest's) into ``cache_dir`` (default: pooch's per-user cache), and
    verified against the manifest's checksum; a file already in the cache is not downloaded again.
    """
    with (
        warnings.catch_warnings()
    ):  # pooch imports tqdm.auto, which warns in notebooks without ipywidgets
        warnings.simplefilter("ignore")
        import pooch

    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    datafile = manifest.file(key)
    if datafile.local is not None and url is None and datafile.local.is_file():
        return verify_file(datafile.local, datafile)
    if datafile.bundled is not None and url is None:
        return verify_file(datafile.bundled, datafile)
    if datafile.local is not None and url is None:
        if not datafile.url:
            downloadable = sorted(k for k, f in manifest.files.items() if f.url)
            raise FileNotFoundError(
                f"{datafile.filename!r} (manifest {manifest.name!r}, file {key!r}) is kept beside the repository "
                f"at {datafile.local} and is not there; files that can be downloaded instead: {downloadable}"
            )
        print(
            f"{datafile.filename} (file {key!r}) is not at {datafile.local}; downloading the same file from "
            f"{datafile.url} and checking it against the manifest's {datafile.checksum[0]}"
        )
    url = url or datafile.url
    if not url:
        raise ManifestError(
            f"{manifest.path}: file {key!r} has no URL to download from"
        )
    cache_dir = Path(cache_dir or default_cache(manifest)).resolve()
    if (
        not (cache_dir / datafile.filename).resolve().is_relative_to(cache_dir)
    ):  # load_manifest already refuses such names
        raise ManifestError(
            f"{manifest.path}: file name {datafile.filename!r} would be written outside {cache_dir}"
        )
    algorithm, expected = datafile.checksum
    path = Path(
        _download(
            pooch,
            mirrored(url),
            f"{algorithm}:{expected}",
            datafile.filename,
            cache_dir,
            retries,
        )
    )
    if datafile.sha256 is None:
        print(
            f"{datafile.filename}: sha256 {file_digest(path)} (not yet recorded in {manifest.path.name})"
        )
    return path


def _download(
    pooch, url: str, known_hash: str, filename: str, cache_dir: Path, retries: int
) -> str:
    """pooch.retrieve with a few retries for transient failures (connection errors, time-outs, HTTP 5xx
    and 429). Network failures raise :class:`NetworkError`, a wrong file :class:`ChecksumError`; pooch
    downloads into a temporary file that it removes on failure, so nothing is left behind."""
    import requests

    for attempt in range(1, retries + 1):
        try:
            return pooch.retrieve(
                url,
                known_hash=known_hash,
                fname=filename,
                path=cache_dir,
                # the book's executed notebooks switch progress bars off (make: TQDM_DISABLE)
                progressbar=os.environ.get("TQDM_DISABLE", "").lower()
                not in ("1", "true"),
            )
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else None
            transient = status is not None and (status >= 500 or status == 429)
            if not transient or attempt == retries:
                raise NetworkError(
                    f"download of {url} failed with HTTP {status} (after {attempt} attempt(s)); check the URL and the network"
                ) from err
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as err:
            if (
                attempt == retries
            ):  # unreachable, timed out, or the connection dropped mid-download
                raise NetworkError(
                    f"could not download {url} after {attempt} attempt(s): {type(err).__name__}; check the network"
                ) from err
        except (
            requests.RequestException
        ) as err:  # a malformed URL and the like: no point retrying
            raise NetworkError(
                f"could not request {url}: {type(err).__name__}: {err}; check the URL in the manifest"
            ) from err
        except (
            ValueError
        ) as err:  # pooch reports a hash mismatch as ValueError and deletes the file
            algorithm, digest = known_hash.split(":", 1)
            raise ChecksumError(
                f"download of {url} does not match the manifest's {algorithm} {digest}: {err}"
            ) from err
        time.sleep(min(2 ** (attempt - 1), 8))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W) or (N, D, H, W), uint8
    labels: np.ndarray  # (N,), int64


def load_medmnist_npz(
    path: str | Path,
    n_samples: Mapping[str, int] | None = None,
    image_size: int | None = None,
    spatial_dims: int | None = None,
) -> dict[str, Split]:
    """Load a MedMNIST-format ``.npz`` into ``{"train"|"val"|"test": Split}`` and check its layout.

    ``n_samples``, ``image_size`` and ``spatial_dims`` (as a manifest records them) check the size of
    each split and the shape of every image. The checksum is not checked here: use
    :func:`load_dataset` (or :func:`verify_file`) for files from a manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST npz file not found at {path}")
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile)
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(
                f"it holds a single {type(npz).__name__}, not named arrays"
            )
    except (
        unreadable
    ) as err:  # empty, truncated, or not a zip of .npy arrays ("pickled data" included)
        raise ValueError(
            f"{path} is not a readable .npz file (empty, truncated or another format): {err}"
        ) from err
    n_samples = n_samples or {}
    with npz:
        expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
        missing = [k for k in expected if k not in npz.files]
        if missing:
            raise ValueError(
                f"{path} is not in MedMNIST layout: missing key(s) {missing}; it has {npz.files}"
            )
        splits = {}
        for s in SPLITS:
            try:
                images, labels = npz[f"{s}_images"], npz[f"{s}_labels"]
            except unreadable as err:
                raise ValueError(
                    f"{path}: the {s} arrays cannot be read (truncated or corrupt file): {err}"
                ) from err
            if len(images) == 0:
                raise ValueError(f"{path}: the {s} split is empty")
            if images.dtype != np.uint8:
                raise ValueError(
                    f"{path}: {s}_images has dtype {images.dtype}, expected uint8"
                )
            if labels.ndim == 2 and labels.shape[1] != 1:
                raise ValueError(
                    f"{path}: {s}_labels has shape {labels.shape}; multi-label files are not supported yet"
                )
            if image_size is not None or spatial_dims is not None:
                dims = spatial_dims if spatial_dims is not None else images.ndim - 1
                want = (
                    (image_size,) * dims if image_size is not None else images.shape[1:]
                )
                if images.shape[1:] != tuple(want) or images.ndim - 1 != dims:
                    raise ValueError(
                        f"{path}: {s}_images have shape {images.shape[1:]} per image, the manifest says {tuple(want)} "
                        "(one grey-scale channel, no channel axis; a different release of the dataset?)"
                    )
            if not (
                np.issubdtype(labels.dtype, np.integer)
                or (
                    np.issubdtype(labels.dtype, np.floating)
                    and np.all(labels == np.round(labels))
                )
            ):
                raise ValueError(
                    f"{path}: {s}_labels must be whole class numbers, got dtype {labels.dtype} with values such as {labels.reshape(-1)[:3]}"
                )
            labels = labels.reshape(-1).astype(np.int64)
            if len(images) != len(labels):
                raise ValueError(
                    f"{path}: {s} has {len(images)} images but {len(labels)} labels"
                )
            if s in n_samples and n_samples[s] != len(images):
                raise ValueError(
                    f"{path}: {s} has {len(images)} images, the manifest says {n_samples[s]}"
                )
            splits[s] = Split(images=images, labels=labels)
    return splits


def load_dataset(
    manifest: Manifest | str, key: str, cache_dir: str | Path | None = None
) -> dict[str, Split]:
    """Fetch (or find) file ``key`` of a manifest, verify its checksum, then load and check its splits."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    if manifest.format != "medmnist-npz":
        raise ManifestError(
            f"{manifest.path}: format {manifest.format!r} has no loader (known: 'medmnist-npz')"
        )
    datafile = manifest.file(key)
    if (
        datafile.local is not None
        and not datafile.local.is_file()
        and datafile.fallback is not None
    ):
        print(
            f"{datafile.filename} (file {key!r}) is not at {datafile.local}; drawing the same kind of subset "
            f"(class-balanced, {dict(datafile.n_samples)}) from the verified file {datafile.fallback!r} instead"
        )
        full = load_dataset(manifest, datafile.fallback, cache_dir=cache_dir)
        return {
            s: balanced_subset(full[s], datafile.n_samples[s], seed=0) for s in SPLITS
        }
    path = fetch(manifest, key, cache_dir=cache_dir)
    return load_medmnist_npz(
        path, datafile.n_samples, datafile.image_size, manifest.spatial_dims
    )


def balanced_subset(split: Split, n: int, seed: int = 0) -> Split:
    """``n`` images with every class equally often (the kind of subset the CI copy is), drawn with ``seed``."""
    classes = np.unique(split.labels)
    if n % len(classes):
        raise ValueError(
            f"{n} images cannot be split equally over {len(classes)} classes"
        )
    per_class = n // len(classes)
    rng = np.random.default_rng(seed)
    idx = []
    for c in classes:
        members = np.flatnonzero(split.labels == c)
        if len(members) < per_class:
            raise ValueError(
                f"class {c} has {len(members)} images, fewer than the {per_class} a balanced subset of {n} needs"
            )
        idx.append(rng.choice(members, per_class, replace=False))
    idx = np.sort(np.concatenate(idx))
    return Split(images=split.images[idx], labels=split.labels[idx])


NORMALISATIONS = ("minmax", "percentile", "zscore")


def image_transform(
    size: int, spatial_dims: int = 2, normalisation: str = "minmax"
) -> mt.Compose:
    """MONAI transform from one uint8 image (no channel axis) to a float32 (1,
    *[size]*dims) tensor.

    ``minmax`` maps the stored 0..255 range to [0, 1] (what the autoencoders train on);
    ``percentile`` maps each image's 0.5th..99.5th percentiles to [0, 1], clipping
    outliers; ``zscore`` gives each image zero mean and unit variance. Resizing is
    (tri)linear with anti-aliasing when shrinking."""
    if normalisation == "minmax":
        scale = mt.ScaleIntensityRange(
            a_min=0, a_max=255, b_min=0.0, b_max=1.0, clip=True
        )
    elif normalisation == "percentile":
        scale = mt.ScaleIntensityRangePercentiles(
            lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True
        )
    elif normalisation == "zscore":
        scale = mt.NormalizeIntensity()
    else:
        raise ValueError(
            f"unknown normalisation {normalisation!r}; choose one of {NORMALISATIONS}"
        )
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return mt.Compose(
        [
            mt.EnsureChannelFirst(channel_dim="no_channel"),
            mt.EnsureType(data_type="numpy", dtype=np.float32),
            scale,
            mt.Resize(
                spatial_size=(size,) * spatial_dims,
                mode="bilinear" if spatial_dims == 2 else "trilinear",
                anti_aliasing=True,
            ),
            mt.EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )


def apply_transform(images: np.ndarray, transform) -> torch.Tensor:
    """Apply a per-image transform to every image of an (N, *spatial) array; returns (N, C, *spatial)."""
    if len(images) == 0:
        raise ValueError("no images to transform")
    return torch.stack([torch.as_tensor(transform(img)) for img in images])
