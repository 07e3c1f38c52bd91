"""Reading mmlearn's JSON-lines pair tables, shared by PMC-OA and ROCO: every row,
caption and image checked, the table returned with absolute image paths."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .settings import PairDataError, PairFileMissing


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
