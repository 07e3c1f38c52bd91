"""A notebook's settings: its mode's entries with checked overrides, the type check of a
settings dataclass, and :func:`run_dir`, the folder where a chapter and mode keep their
checkpoints."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from pathlib import Path


def _type_ok(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        )
    if kind is type(None):
        return value is None
    return isinstance(value, kind)


def _kind_name(kind) -> str:
    return {
        bool: "True or False",
        int: "an integer",
        float: "a finite number",
        str: "a string",
        type(None): "None",
    }.get(kind, kind.__name__)


def _parse_number(text: str, kinds: set):
    """A numeric string for a numeric setting ("1e-4", "600"); anything else is returned unchanged."""
    for kind in (int, float):
        if kind in kinds:
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def check_types(config) -> None:
    """Check every field of a settings dataclass against its annotation (``int``, ``float``, ``bool``,
    ``str`` and unions of them): ``steps=10.5``, ``lr="1e-4"``, ``resume="no"`` or ``kl_weight=nan``
    fail here, when the settings are made, with the field named, not deep inside a run."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        kinds = typing.get_args(hints[f.name]) or (hints[f.name],)
        value = getattr(config, f.name)
        if not any(_type_ok(value, k) for k in kinds):
            wanted = " or ".join(_kind_name(k) for k in kinds)
            raise TypeError(
                f"{type(config).__name__}.{f.name} must be {wanted}, got {value!r} ({type(value).__name__})"
            )


def settings_for(
    modes: Mapping[str, Mapping], mode: str, overrides: Mapping | None = None
) -> dict:
    """A notebook's settings: the entries of ``modes[mode]``, with single entries replaced by ``overrides``.

    An override must have the type of the entry it replaces (an integer may stand for a float; an entry
    whose default is None, "all", takes None or a count). A numeric string such as ``"1e-4"`` (which
    YAML 1.1, and so papermill's ``-y``, reads as a string) is parsed for a numeric setting; any other
    mismatch, such as ``"no"`` for True/False, is refused (a list is taken for a tuple setting,
    as papermill's parameters and JSON have no tuples) with a message that names the setting,
    instead of failing, or being read as true, hundreds of steps later.
    """
    if mode not in modes:
        raise ValueError(f"unknown mode {mode!r}; choose one of {sorted(modes)}")
    if not isinstance(overrides, (Mapping, type(None))):
        raise TypeError(f"overrides must be a dict of settings, got {overrides!r}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(modes[mode]))
    if unknown:
        raise ValueError(
            f"unknown setting(s) {unknown} in overrides; known: {sorted(modes[mode])}"
        )
    for key, value in list(overrides.items()):
        defaults = [
            m[key] for m in modes.values() if key in m
        ]  # a setting may differ in type between modes ("full" or 16)
        kinds = (
            {type(None), int} if any(d is None for d in defaults) else set()
        )  # None stands for "all": a count
        kinds |= {
            float if isinstance(d, float) else type(d)
            for d in defaults
            if d is not None
        }
        if tuple in kinds and isinstance(value, list):
            value = overrides[key] = tuple(value)  # papermill passes a tuple as a list
        if isinstance(value, str) and not any(_type_ok(value, k) for k in kinds):
            value = overrides[key] = _parse_number(
                value, kinds
            )  # YAML 1.1 reads 1e-4 as a string
        if not any(_type_ok(value, k) for k in kinds):
            wanted = " or ".join(sorted(_kind_name(k) for k in kinds))
            raise TypeError(
                f"setting {key!r} must be {wanted} like its default {modes[mode][key]!r}, got {value!r} ({type(value).__name__})"
            )
        if (
            value is not None
            and not isinstance(value, (bool, str))
            and type(None) in kinds
            and value < 0
        ):
            raise ValueError(
                f"setting {key!r} must be None or a count >= 0, got {value!r}"
            )
    return {**modes[mode], **overrides}


DRIVE_ROOT = Path("/content/drive")


def run_dir(
    chapter: str,
    mode: str,
    model: str | None = None,
    drive: bool = False,
    root: str | Path = "runs",
) -> Path:
    """Where a chapter keeps its checkpoints: ``runs/<chapter>/<mode>[/<model>]``, one folder per mode
    and model, so a CI-mode run never touches a full-mode checkpoint.

    With ``drive=True`` (Colab only) the folder is on the reader's Google Drive
    (``MyDrive/latent-representation-quality/runs/...``), so a full-mode run survives a disconnected
    runtime and resumes from its last checkpoint; Drive is mounted if it is not yet.
    """
    import sys

    if drive:
        if "google.colab" not in sys.modules:
            raise RuntimeError(
                "use_drive=True needs Google Colab (Google Drive is mounted through google.colab)"
            )
        if not (DRIVE_ROOT / "MyDrive").is_dir():
            from google.colab import drive as colab_drive  # type: ignore[import-not-found]

            colab_drive.mount(str(DRIVE_ROOT))
        root = DRIVE_ROOT / "MyDrive" / "latent-representation-quality" / "runs"
    folder = Path(root) / chapter / mode
    return folder / model if model else folder
