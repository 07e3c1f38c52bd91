"""The reproduction scorecard: each chapter writes its headline results to a small JSON file when it
runs (:func:`write_results`, into ``notebooks/results/<chapter>.<mode>.json``), ``book/claims.yaml``
lists the four papers' claims once each, and :func:`build_page` sets one against the other in
``book/scorecard.md``. ``python -m medvae_lib.scorecard`` writes that page; ``make book`` and
``make html`` run it before the build, so the page's numbers are always the files' numbers.

A results file::

    {"schema": 1, "chapter": "04_latent_downstream", "mode": "ci", "seeds": [0, 1, 2],
     "data": {...}, "date": "2026-11-25", "library_version": "0.1.0",
     "results": [{"key": "probe_auroc.pixels", "metric": "...", "value": 0.933,
                  "interval": [0.905, 0.956], "setting": "..."}, ...]}

``interval`` (a 95% confidence interval, or null) and ``setting`` are optional. The date goes into the
file only, never into a notebook's output, and a file is rewritten only when a result changed, so a
deterministic chapter leaves its file (and its date) as it was.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import sys
from pathlib import Path

import yaml

from medvae_lib import __version__

SCHEMA = 1
MODES = ("ci", "full")
REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "notebooks" / "results"
CLAIMS = REPO_ROOT / "book" / "claims.yaml"
PAGE = REPO_ROOT / "book" / "scorecard.md"
KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
CHAPTER = re.compile(r"^\d\d_[a-z0-9_]+$")
DIRECTIONS = ("greater", "less", "not_less", "not_greater")
NOT_READABLE = "reported value not available to this book"
NOT_REPRODUCED = "not yet reproduced"


class ResultsError(ValueError):
    """A results file or a claim that does not follow the schema; the message names the bad field."""


def slug(text: str) -> str:
    """A result-key part from a label: ``"stage-1 latent"`` -> ``"stage_1_latent"``."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ResultsError(f"{where}: expected a finite number, got {value!r}")
    return value


def validate_results(doc: dict, source: str = "results") -> dict:
    """Check a results file's content against the schema; raise :class:`ResultsError` naming the bad
    field, else return ``doc``."""
    if not isinstance(doc, dict):
        raise ResultsError(f"{source}: expected a JSON object")
    required = {"schema", "chapter", "mode", "seeds", "data", "date", "library_version", "results"}
    missing = sorted(required - set(doc))
    if missing:
        raise ResultsError(f"{source}: missing field(s) {missing}")
    unknown = sorted(set(doc) - required)
    if unknown:
        raise ResultsError(f"{source}: unknown field(s) {unknown}")
    if doc["schema"] != SCHEMA:
        raise ResultsError(f"{source}: field 'schema' is {doc['schema']!r}, expected {SCHEMA}")
    if not isinstance(doc["chapter"], str) or not CHAPTER.match(doc["chapter"]):
        raise ResultsError(f"{source}: field 'chapter' must look like '04_latent_downstream', got {doc['chapter']!r}")
    if doc["mode"] not in MODES:
        raise ResultsError(f"{source}: field 'mode' must be one of {MODES}, got {doc['mode']!r}")
    seeds = doc["seeds"]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ResultsError(f"{source}: field 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if not isinstance(doc["data"], dict):
        raise ResultsError(f"{source}: field 'data' must be an object (the data identity), got {doc['data']!r}")
    try:
        datetime.date.fromisoformat(doc["date"])
    except (TypeError, ValueError):
        raise ResultsError(f"{source}: field 'date' must be an ISO date (YYYY-MM-DD), got {doc['date']!r}") from None
    if not isinstance(doc["library_version"], str) or not doc["library_version"]:
        raise ResultsError(f"{source}: field 'library_version' must be a non-empty string")
    results = doc["results"]
    if not isinstance(results, list) or not results:
        raise ResultsError(f"{source}: field 'results' must be a non-empty list")
    seen = set()
    for i, r in enumerate(results):
        where = f"{source}: results[{i}]"
        if not isinstance(r, dict):
            raise ResultsError(f"{where}: expected an object")
        missing = sorted({"key", "metric", "value"} - set(r))
        if missing:
            raise ResultsError(f"{where}: missing field(s) {missing}")
        unknown = sorted(set(r) - {"key", "metric", "value", "interval", "setting"})
        if unknown:
            raise ResultsError(f"{where}: unknown field(s) {unknown}")
        if not isinstance(r["key"], str) or not KEY.match(r["key"]):
            raise ResultsError(f"{where}: field 'key' must be dotted lower-case words, got {r['key']!r}")
        if r["key"] in seen:
            raise ResultsError(f"{where}: field 'key' {r['key']!r} appears twice")
        seen.add(r["key"])
        if not isinstance(r["metric"], str) or not r["metric"]:
            raise ResultsError(f"{where} ({r['key']}): field 'metric' must be a non-empty string")
        _number(r["value"], f"{where} ({r['key']}): field 'value'")
        interval = r.get("interval")
        if interval is not None:
            if not isinstance(interval, list) or len(interval) != 2:
                raise ResultsError(f"{where} ({r['key']}): field 'interval' must be [low, high] or null")
            low = _number(interval[0], f"{where} ({r['key']}): field 'interval'")
            high = _number(interval[1], f"{where} ({r['key']}): field 'interval'")
            if low > high:
                raise ResultsError(f"{where} ({r['key']}): field 'interval' has low {low} > high {high}")
        if "setting" in r and not isinstance(r["setting"], str):
            raise ResultsError(f"{where} ({r['key']}): field 'setting' must be a string")
    return doc


def _clean(value):
    """A plain float with six significant digits, so files do not change with the last bits of a float."""
    return float(f"{float(value):.6g}")


def results_path(chapter: str, mode: str, results_dir: str | Path = "results") -> Path:
    return Path(results_dir) / f"{chapter}.{mode}.json"


def write_results(
    chapter: str, mode: str, results: list[dict], seed, data: dict, results_dir: str | Path | None = None
) -> Path:
    """Write a chapter's headline results to ``<results_dir>/<chapter>.<mode>.json`` (``results/`` is
    ``notebooks/results/`` when a chapter runs from ``notebooks/``) and return the path.

    ``results`` are dicts with ``key``, ``metric``, ``value`` and optionally ``interval`` ([low, high])
    and ``setting``; ``seed`` is an int or a list of them; ``data`` the data identity. The file gets
    today's date and the library's version, and is rewritten only when anything but the date changed.
    ``results_dir`` defaults to ``$MEDVAE_RESULTS_DIR`` when set (``make test`` points it at a scratch
    folder, so re-checking the notebooks never rewrites the committed results), else ``results``."""
    if results_dir is None:
        results_dir = os.environ.get("MEDVAE_RESULTS_DIR") or "results"
    rows = []
    for r in results:
        row = {"key": r["key"], "metric": r["metric"], "value": _clean(r["value"])}
        if r.get("interval") is not None:
            row["interval"] = [_clean(v) for v in r["interval"]]
        if r.get("setting"):
            row["setting"] = str(r["setting"])
        rows.append(row)
    seeds = sorted({int(s) for s in seed}) if isinstance(seed, (list, tuple, set)) else [int(seed)]
    doc = {
        "schema": SCHEMA,
        "chapter": chapter,
        "mode": mode,
        "seeds": seeds,
        "data": json.loads(json.dumps(data, default=str)),
        "date": datetime.date.today().isoformat(),
        "library_version": __version__,
        "results": rows,
    }
    path = results_path(chapter, mode, results_dir)
    validate_results(doc, str(path))
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = None
        if isinstance(old, dict) and {k: v for k, v in old.items() if k != "date"} == {
            k: v for k, v in doc.items() if k != "date"
        }:
            return path  # nothing changed: keep the file and its date
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return path


def load_results(results_dir: str | Path = RESULTS_DIR) -> dict[tuple[str, str], dict]:
    """Every results file in ``results_dir``, validated: ``{(chapter, mode): file content}``."""
    found = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path.name}: not valid JSON ({e})") from None
        validate_results(doc, path.name)
        if path.name != f"{doc['chapter']}.{doc['mode']}.json":
            raise ResultsError(f"{path.name}: the file name must be {doc['chapter']}.{doc['mode']}.json")
        found[doc["chapter"], doc["mode"]] = doc
    return found


def load_claims(path: str | Path = CLAIMS) -> list[dict]:
    """The papers' claims, checked: every claim has its fields, ``reported`` is a number or null (with a
    ``source`` either way), ``compared_with`` a chapter and key or null, ``direction`` one of
    :data:`DIRECTIONS` with a reference value."""
    doc = yaml.safe_load(Path(path).read_text())
    claims = doc.get("claims") if isinstance(doc, dict) else None
    if not isinstance(claims, list) or not claims:
        raise ResultsError(f"{path}: expected a top-level 'claims' list")
    fields = {"id", "paper", "where", "setting", "metric", "reported", "reported_direction", "source"}
    fields |= {"compared_with", "direction", "reason_if_different"}
    ids = set()
    for i, c in enumerate(claims):
        where = f"{Path(path).name}: claims[{i}]"
        missing = sorted(fields - set(c))
        if missing:
            raise ResultsError(f"{where} ({c.get('id')}): missing field(s) {missing}")
        if c["id"] in ids:
            raise ResultsError(f"{where}: id {c['id']!r} appears twice")
        ids.add(c["id"])
        if c["reported"] is not None:
            _number(c["reported"], f"{where} ({c['id']}): field 'reported'")
        if not c["source"]:
            raise ResultsError(f"{where} ({c['id']}): field 'source' must say where the reported value is from")
        target = c["compared_with"]
        if target is not None and (not isinstance(target, dict) or set(target) != {"chapter", "key"}):
            raise ResultsError(f"{where} ({c['id']}): field 'compared_with' must be null or {{chapter, key}}")
        direction = c["direction"]
        if direction is not None and (
            not isinstance(direction, dict) or direction.get("sign") not in DIRECTIONS or "than" not in direction
        ):
            raise ResultsError(f"{where} ({c['id']}): field 'direction' must be null or {{sign: {DIRECTIONS}, than}}")
        if target is not None and not c["reason_if_different"]:
            raise ResultsError(f"{where} ({c['id']}): a compared claim needs a 'reason_if_different'")
    return claims


def find_result(results: dict, target: dict | None, mode: str) -> dict | None:
    """The result a claim points at, in one mode's file, or None."""
    if target is None or (target["chapter"], mode) not in results:
        return None
    return next((r for r in results[target["chapter"], mode]["results"] if r["key"] == target["key"]), None)


def fmt(value: float) -> str:
    """How the page prints a number: four significant digits."""
    text = f"{value:.4g}"
    return "0" if text == "-0" else text


def fmt_result(result: dict) -> str:
    text = fmt(result["value"])
    if result.get("interval"):
        low, high = result["interval"]
        text += f" [{fmt(low)}, {fmt(high)}]"
    return text


def same_direction(direction: dict | None, result: dict | None) -> str:
    """Whether a measured result points the way the paper says: "yes", "no", "unclear" (its 95% interval
    holds the reference), or "n/a" (the claim states no direction)."""
    if result is None:
        return "–"
    if direction is None:
        return "n/a"
    low, high = result.get("interval") or (result["value"], result["value"])
    sign, than = direction["sign"], direction["than"]
    if sign == "greater":
        return "yes" if low > than else "no" if high <= than else "unclear"
    if sign == "less":
        return "yes" if high < than else "no" if low >= than else "unclear"
    if sign == "not_less":
        return "yes" if high >= than else "no"
    return "yes" if low <= than else "no"  # not_greater


DIRECTION_WORDS = {"greater": ">", "less": "<", "not_less": "not clearly below", "not_greater": "not clearly above"}
PAPERS = {
    "varma2025medvae": "MedVAE",
    "huang2021multimodal": "Huang et al.: more modalities, provably",
    "tan2025puir": "Tan et al.: personalised invariant representations (PUIR)",
    "roy2024benchmarking": "Roy et al.: benchmarking vision-language contrastive methods",
}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def claim_row(claim: dict, results: dict) -> dict:
    """One claim's row of the page, as strings."""
    target = claim["compared_with"]
    measured = {mode: find_result(results, target, mode) for mode in MODES}
    if claim["reported"] is not None:
        reported = fmt(claim["reported"])
    else:
        reported = NOT_READABLE
    if claim["reported_direction"]:
        reported += f"; {claim['reported_direction']}"
    if target is None:
        ci = full = NOT_REPRODUCED
    else:
        ci = fmt_result(measured["ci"]) if measured["ci"] else "no CI-mode result"
        full = fmt_result(measured["full"]) if measured["full"] else "no full run yet"
        ci += f" ({target['chapter'][:2]}: `{target['key']}`)"
    direction = claim["direction"]
    verdicts = [f"{m}: {same_direction(direction, measured[m])}" for m in MODES if measured[m] is not None]
    verdict = " / ".join(verdicts) or "–"
    if verdicts and direction is not None:
        verdict += f" ({DIRECTION_WORDS[direction['sign']]} {fmt(direction['than'])})"
    reason = claim["reason_if_different"] or ("" if target is not None else "no chapter measures it yet")
    return {
        "claim": f"{claim['where']}: {claim['metric']} ({claim['setting']})",
        "reported": f"{reported} [source: {claim['source']}]",
        "ci": ci,
        "full": full,
        "same direction": verdict,
        "why they differ": reason,
    }


def _data_text(data: dict) -> str:
    """The Data column of the results files: the manifest (and file key, size), a simulation (and the real
    data beside it), or the sha256 of each file a chapter names by checksum."""
    parts = [f"{k} {data[k]}" for k in ("manifest", "key", "image_size") if k in data]
    if not parts and "simulated" in data:
        real = data.get("real")
        parts = ["simulated" + (f"; real: {real['manifest']}" if isinstance(real, dict) and "manifest" in real else "")]
    if not parts:
        parts = [
            f"{k.removesuffix('_sha256')} sha256 {str(v)[:12]}..." for k, v in data.items() if k.endswith("_sha256")
        ]
    return ", ".join(parts) or "not recorded"


def build_page(results_dir: str | Path = RESULTS_DIR, claims_path: str | Path = CLAIMS) -> str:
    """The scorecard page, Markdown, from the results files and the claims."""
    results = load_results(results_dir)
    claims = load_claims(claims_path)
    lines = [
        "# Reproduction scorecard",
        "",
        "Which claims of the four papers this book reproduces, at what scale, and where it disagrees. Every",
        "number in the *measured* columns is read from the results file a chapter writes when it runs",
        "(`notebooks/results/<chapter>.<mode>.json`); the claims, with what each paper reports, are listed once",
        "in `book/claims.yaml`. This page is generated by `python -m medvae_lib.scorecard` (run by `make book`",
        "and `make html`): edit those files, not this page.",
        "",
        "How to read a row. *Reported*: the paper's number where this book could read it, else",
        f'"{NOT_READABLE}", and the direction the paper states, with the source. *Measured*: the',
        "value with its 95% confidence interval in brackets where the chapter computed one, and the chapter and",
        "result key it comes from. *Same direction*: whether the measured value points the way the paper",
        'says (the test is given in brackets; "unclear" means the interval contains the reference).',
        f'Claims that no chapter measures yet are shown as "{NOT_REPRODUCED}". The CI-mode numbers come',
        "from small models trained for minutes on a 32x32 subset of PneumoniaMNIST on a CPU: they test whether",
        "an effect appears at all and in which direction, not its size at the papers' scale.",
        "",
    ]
    counts = {"compared": 0, "missing": 0, "yes": 0, "no": 0, "unclear": 0, "n/a": 0}
    for paper, title in PAPERS.items():
        rows = [claim_row(c, results) for c in claims if c["paper"] == paper]
        if not rows:
            continue
        lines += [f"## {title}", "", f"Claims of {{cite:t}}`{paper}`.", ""]
        header = ["claim", "reported", "ci", "full", "same direction", "why they differ"]
        names = [
            "Claim",
            "Reported",
            "Measured here (CI mode)",
            "Measured here (full mode)",
            "Same direction",
            "Why they differ",
        ]
        lines += ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        for row in rows:
            lines.append("| " + " | ".join(_cell(row[h]) for h in header) + " |")
            if NOT_REPRODUCED in row["ci"]:
                counts["missing"] += 1
            else:
                counts["compared"] += 1
                verdict = row["same direction"].removeprefix("ci: ").split(" ")[0]
                counts[verdict] = counts.get(verdict, 0) + 1
        lines.append("")
    others = sorted({c["paper"] for c in claims} - set(PAPERS))
    if others:
        raise ResultsError(f"claims name papers the page does not know: {others}")
    lines += [
        "## Summary",
        "",
        f"{len(claims)} claims: {counts['missing']} not yet reproduced, {counts['compared']} compared with a chapter's",
        f"result. Of those, in CI mode: {counts['yes']} point the paper's way, {counts['no']} the other way,",
        f"{counts['unclear']} unclear (the interval holds the reference), {counts['n/a']} with no direction to compare",
        "(absolute values such as a PSNR, waiting for the paper's number).",
        "",
        "## The results files",
        "",
        "| File | Chapter | Mode | Seeds | Data | Library | Date | Results |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (chapter, mode), doc in sorted(results.items()):
        data = doc["data"]
        data_text = _data_text(data)
        lines.append(
            f"| `{chapter}.{mode}.json` | {chapter[:2]} | {mode} | {', '.join(map(str, doc['seeds']))} | {_cell(data_text)} "
            f"| {doc['library_version']} | {doc['date']} | {len(doc['results'])} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m medvae_lib.scorecard [OUTPUT]``: write the page (default ``book/scorecard.md``)."""
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else PAGE
    out.write_text(build_page())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
