"""Getting files over the network: a URL with retries and backoff on transient
failures, and one file of a Hugging Face dataset repository."""

from __future__ import annotations

import http.client
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from medvae_lib.data import (
    NetworkError,
    mirrored,
    temp_file_beside,
)

_BACKOFF_S = 1.0  # first wait between download attempts; doubled each time, at most 8 s (tests set 0)
_TIMEOUT_S = 60


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
