"""A download mirror for classrooms and offline sites, filled from local copies.

Every download of the book can come from a mirror instead of the public hosts: set
``MEDVAE_MIRROR`` to its base URL and ``https://zenodo.org/records/1/files/a.npz`` is read from
``<mirror>/zenodo.org/records/1/files/a.npz`` (``medvae_lib.data.mirrored``), still checked against
the manifest's checksum. ``python -m medvae_lib.mirror DEST`` lays out such a mirror in ``DEST``
from the local copies the manifests name (``../shared/data``): each file that has a public ``url``
and a local copy whose checksum matches is linked (or copied) to its public path. Serve ``DEST``
with any static web server, e.g. ``python -m http.server -d DEST``.

Only files whose local copy *is* the public file can be mirrored: a local copy that was converted
or subsampled (the PneumoniaMNIST CI subset, MedPix 2.0's JPEGs) has no public URL to stand for.
``tests/colab_simulation.py`` uses this to run chapters as on Colab, from downloads only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from medvae_lib.data import (
    ManifestError,
    load_manifest,
    manifest_dir,
    mirror_path,
    verify_file,
)


def public_path(url: str) -> Path:
    """Where ``url`` lies in a mirror: ``<host>/<path>`` (the query is not part of it)."""
    try:
        relative = Path(mirror_path(url))
    except ValueError:
        relative = None
    if relative is None or ".." in relative.parts:
        raise ManifestError(f"cannot mirror {url!r}: not a plain http(s) URL")
    return relative


def build_mirror(dest: str | Path, manifests: list[str] | None = None) -> list[Path]:
    """Fill ``dest`` with every mirrorable file of ``manifests`` (default: all); return the paths
    written. Each local copy is verified against its checksum first; a file already in place is
    kept. Files with no public URL or no local copy are left out."""
    dest = Path(dest)
    names = manifests or sorted(p.stem for p in manifest_dir().glob("*.yaml"))
    written = []
    for name in names:
        manifest = load_manifest(name)
        for datafile in manifest.files.values():
            if not datafile.url or not datafile.local or not datafile.local.is_file():
                continue
            verify_file(datafile.local, datafile)
            target = dest / public_path(datafile.url)
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(datafile.local, target)
                except OSError:  # another file system, or links not allowed
                    shutil.copyfile(datafile.local, target)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Lay out a download mirror (MEDVAE_MIRROR) from the local data copies."
    )
    parser.add_argument("dest", type=Path, help="the mirror's folder")
    parser.add_argument(
        "manifests", nargs="*", help="manifest names (default: every manifest)"
    )
    args = parser.parse_args(argv)
    written = build_mirror(args.dest, args.manifests or None)
    for path in written:
        print(path.relative_to(args.dest))
    print(
        f"{len(written)} files in {args.dest}; serve it (python -m http.server -d "
        f"{args.dest}) and set MEDVAE_MIRROR to its URL"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
