"""A Hugging Face Hub on 127.0.0.1, for tests and the full-mode smoke run.

``huggingface_hub`` (``hf_hub_download``, ``snapshot_download``, ``get_hf_file_metadata``) and
``open_clip``'s ``hf-hub:`` ids read from it when ``HF_ENDPOINT`` is its :attr:`FakeHub.endpoint`
(set before ``huggingface_hub`` is imported: it reads the variable once). It answers the requests
those clients make, as the Hub does:

* ``HEAD``/``GET /<repo>/resolve/<revision>/<file>`` (``/datasets/<repo>/...`` for datasets), with
  ``X-Repo-Commit``, the sha256 as ``X-Linked-Etag`` and ``ETag`` (what the Hub sends for a Git LFS
  file), and a 404 with ``X-Error-Code: EntryNotFound`` for a file the repository lacks;
* a ``Range: bytes=a-b`` GET of a file: 206 and those bytes (counted in ``ranges``);
* ``GET /api/<models|datasets>/<repo>/revision/<revision>``: the commit and the file list;
* ``GET /api/<models|datasets>/<repo>/tree/<revision>``: the files with their sizes.

A repository is a folder ``<root>/<models|datasets>/<org>/<name>/``; its commit is the revision asked
for when that is a commit hash, otherwise a fixed hash of the repository's name.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from helpers import LoopbackHTTP

from medvae_lib.data import file_digest

_RESOLVE = re.compile(r"^/(?:(datasets)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_API = re.compile(
    r"^/api/(models|datasets)/([^/]+/[^/]+)/(revision|tree)/([^/]+)(?:/.*)?$"
)


def _commit(repo: str, revision: str) -> str:
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    return hashlib.sha1(repo.encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _sha256(path: str, mtime: float) -> str:
    return file_digest(path)


class FakeHub(LoopbackHTTP):
    """The hub above, serving ``root``; counts the files it sends (``downloads``, by path) and
    the parts of files (``ranges``). Use it
    as a context manager; :meth:`add` puts files into a repository."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.downloads: dict[str, int] = {}  # whole files sent
        self.ranges: dict[str, int] = {}  # parts of files sent (range requests)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _send(self, code, headers, data=b"", body=True):
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if body and data:
                    self.wfile.write(data)

            def _missing(self, code, message, body):
                data = json.dumps({"error": message}).encode()
                headers = {
                    "X-Error-Code": code,
                    "X-Error-Message": message,
                    "Content-Type": "application/json",
                    "Content-Length": str(len(data)),
                }
                self._send(404, headers, data, body)

            def _answer(self, body):
                path = unquote(urlsplit(self.path).path)
                if m := _API.match(path):
                    kind, repo, what, revision = m.groups()
                    folder = outer.root / kind / repo
                    if not folder.is_dir():
                        return self._missing(
                            "RepoNotFound", f"no repository {repo}", body
                        )
                    files = sorted(
                        p
                        for p in folder.rglob("*")
                        if p.is_file() and ".git" not in p.parts
                    )
                    names = [p.relative_to(folder).as_posix() for p in files]
                    if what == "revision":
                        answer = {
                            "id": repo,
                            "sha": _commit(repo, revision),
                            "siblings": [{"rfilename": n} for n in names],
                        }
                    else:
                        answer = [
                            {
                                "type": "file",
                                "path": n,
                                "size": p.stat().st_size,
                                "oid": hashlib.sha1(n.encode()).hexdigest(),
                            }
                            for n, p in zip(names, files, strict=True)
                        ]
                    data = json.dumps(answer).encode()
                    headers = {
                        "Content-Type": "application/json",
                        "Content-Length": str(len(data)),
                    }
                    return self._send(200, headers, data, body)
                if m := _RESOLVE.match(path):
                    kind, repo, revision, name = m.groups()
                    folder = outer.root / (kind or "models") / repo
                    if not folder.is_dir():
                        return self._missing(
                            "RepoNotFound", f"no repository {repo}", body
                        )
                    file = folder / name
                    if not file.is_file():
                        return self._missing(
                            "EntryNotFound", f"{repo} has no {name}", body
                        )
                    sha = _sha256(str(file), file.stat().st_mtime)
                    size = file.stat().st_size
                    headers = {
                        "X-Repo-Commit": _commit(repo, revision),
                        "X-Linked-Etag": f'"{sha}"',
                        "ETag": f'"{sha}"',
                        "X-Linked-Size": str(size),
                        "Content-Length": str(size),
                        "Content-Type": "application/octet-stream",
                    }
                    headers["Accept-Ranges"] = "bytes"
                    key = f"{repo}/{name}"
                    if r := re.fullmatch(
                        r"bytes=(\d+)-(\d+)", self.headers["Range"] or ""
                    ):
                        start, end = int(r[1]), min(int(r[2]), size - 1)
                        if start >= size:  # as HTTP says: nothing to send
                            headers["Content-Range"] = f"bytes */{size}"
                            headers["Content-Length"] = "0"
                            return self._send(416, headers, b"", body)
                        with open(file, "rb") as f:
                            f.seek(start)
                            data = f.read(end - start + 1)
                        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                        headers["Content-Length"] = str(len(data))
                        outer.ranges[key] = outer.ranges.get(key, 0) + 1
                        return self._send(206, headers, data, body)
                    if body:
                        outer.downloads[key] = outer.downloads.get(key, 0) + 1
                    return self._send(200, headers, file.read_bytes(), body)
                return self._missing("EntryNotFound", f"no route {path}", body)

            def log_message(self, *args):
                pass

        self._serve(Handler)

    @property
    def endpoint(self) -> str:
        return self.base_url

    def add(
        self, repo: str, files: dict[str, Path | bytes | str], kind: str = "models"
    ) -> Path:
        """Put ``files`` (name in the repository -> a file to copy, or its bytes or text) into
        repository ``repo`` (``org/name``) of ``kind`` (``models`` or ``datasets``)."""
        folder = self.root / kind / repo
        for name, content in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, target)
            elif isinstance(content, str):
                target.write_text(content)
            else:
                target.write_bytes(content)
        return folder
