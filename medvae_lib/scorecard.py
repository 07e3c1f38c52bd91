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
import unicodedata
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
DATE = re.compile(r"^\d{4}-\d\d-\d\d$")
VERSION = re.compile(r"^\d+(\.\d+){1,3}([.+-][A-Za-z0-9]+)*$")
DATA_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CLAIM_ID = re.compile(r"^[a-z0-9_]+$")
DIRECTIONS = ("greater", "less", "not_less", "not_greater")
NOT_READABLE = "reported value not available to this book"
NOT_REPRODUCED = "not yet reproduced"
# The verdict classes of the page, strongest first.
REPRODUCED = "reproduced (a test that could fail)"
CONSISTENT = "consistent (interval holds both)"
NOT_REPRODUCED_VERDICT = "not reproduced"
NOT_TESTABLE = "not testable here"
VERDICTS = (REPRODUCED, CONSISTENT, NOT_REPRODUCED_VERDICT, NOT_TESTABLE)
EVIDENCE = (
    "primary",
    "primary (screenshot of the table)",
    "secondary",
    "repo/model card",
)
# Limits of the results schema: what a chapter could plausibly write, far below what would hurt the page.
LIMITS = {
    "key": 120,
    "metric": 200,
    "setting": 300,
    "data": 200,
    "data_key": 64,
    "version": 40,
}
MOST = {"results": 2000, "seeds": 1000, "data_items": 500, "data_depth": 5}
# The ASCII characters a text field may hold besides letters and digits: no line breaks or tabs, no
# backticks, braces, pipes, backslashes or dollars, which Markdown and MyST read as syntax. Beyond ASCII,
# letters, marks, digits, punctuation and symbols of any script (γ, ≥, −, ‖), but no control, format
# (such as a right-to-left override) or separator characters.
TEXT_PUNCTUATION = set(" .,;:_-+()[]/%='<>^*~#@&!?\"")
# Data identities (names, checksums, paths) are plainer still.
DATA_PUNCTUATION = set(" .,:_-+()/=@%")


class ResultsError(ValueError):
    """A results file or a claim that does not follow the schema; the message names the bad field."""


def slug(text: str) -> str:
    """A result-key part from a label: ``"stage-1 latent"`` -> ``"stage_1_latent"``."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")


def _number(value, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
    ):
        raise ResultsError(f"{where}: expected a finite number, got {value!r}")
    return value


def _text(
    value, where: str, limit: int, punctuation: set[str] = TEXT_PUNCTUATION
) -> str:
    """A non-empty string of at most ``limit`` characters: ASCII letters, digits and ``punctuation``, and
    beyond ASCII letters, marks, digits, punctuation and symbols (not control or separator characters)."""
    if not isinstance(value, str) or not value:
        raise ResultsError(
            f"{where}: expected a non-empty string, got {type(value).__name__}"
        )
    if len(value) > limit:
        raise ResultsError(f"{where}: at most {limit} characters, got {len(value)}")
    for ch in value:
        allowed = (
            ch.isalnum() or ch in punctuation
            if ch.isascii()
            else unicodedata.category(ch)[0] in "LMNPS"
        )
        if not allowed:
            raise ResultsError(
                f"{where}: character {ch!r} (U+{ord(ch):04X}) is not allowed in this field"
            )
    return value


def _data(value, where: str, depth: int = 0, count: list | None = None):
    """The data identity: objects with plain keys, lists, numbers, booleans, null and plain strings,
    at most :data:`MOST` deep and large."""
    count = [0] if count is None else count
    count[0] += 1
    if count[0] > MOST["data_items"] or depth > MOST["data_depth"]:
        raise ResultsError(
            f"{where}: the data identity is too large or too deeply nested"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if (
                not isinstance(key, str)
                or len(key) > LIMITS["data_key"]
                or not DATA_KEY.fullmatch(key)
            ):
                raise ResultsError(
                    f"{where}: key {str(key)[:40]!r} must be letters, digits, '_', '.', '-'"
                )
            _data(item, f"{where}.{key}", depth + 1, count)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _data(item, f"{where}[{i}]", depth + 1, count)
    elif isinstance(value, str):
        _text(value, where, LIMITS["data"], DATA_PUNCTUATION)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ResultsError(f"{where}: expected a finite number, got {value!r}")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ResultsError(f"{where}: unexpected {type(value).__name__}")


def validate_results(doc: dict, source: str = "results") -> dict:
    """Check a results file's content against the schema; raise :class:`ResultsError` naming the bad
    field, else return ``doc``. Every string has a type, a length limit and a set of allowed characters
    (:data:`LIMITS`, :data:`TEXT_PUNCTUATION`, :data:`DATA_PUNCTUATION`), recursively in ``data``, so a
    results file cannot smuggle Markdown, MyST directives or HTML into the scorecard page (which also
    escapes everything it writes, :func:`md`)."""
    if not isinstance(doc, dict):
        raise ResultsError(f"{source}: expected a JSON object")
    required = {
        "schema",
        "chapter",
        "mode",
        "seeds",
        "data",
        "date",
        "library_version",
        "results",
    }
    missing = sorted(required - set(doc))
    if missing:
        raise ResultsError(f"{source}: missing field(s) {missing}")
    unknown = sorted(set(doc) - required)
    if unknown:
        raise ResultsError(f"{source}: unknown field(s) {unknown}")
    if doc["schema"] != SCHEMA:
        raise ResultsError(
            f"{source}: field 'schema' is {doc['schema']!r}, expected {SCHEMA}"
        )
    if (
        not isinstance(doc["chapter"], str)
        or len(doc["chapter"]) > 60
        or not CHAPTER.fullmatch(doc["chapter"])
    ):
        raise ResultsError(
            f"{source}: field 'chapter' must look like '04_latent_downstream', got {doc['chapter']!r}"
        )
    if doc["mode"] not in MODES:
        raise ResultsError(
            f"{source}: field 'mode' must be one of {MODES}, got {doc['mode']!r}"
        )
    seeds = doc["seeds"]
    if (
        not isinstance(seeds, list)
        or not 0 < len(seeds) <= MOST["seeds"]
        or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63
            for s in seeds
        )
    ):
        raise ResultsError(
            f"{source}: field 'seeds' must be a non-empty list of integers, got {seeds!r}"
        )
    if not isinstance(doc["data"], dict):
        raise ResultsError(
            f"{source}: field 'data' must be an object (the data identity), got {type(doc['data'])}"
        )
    _data(doc["data"], f"{source}: field 'data'")
    try:
        if not isinstance(doc["date"], str) or not DATE.fullmatch(doc["date"]):
            raise ValueError
        datetime.date.fromisoformat(doc["date"])
    except ValueError:
        raise ResultsError(
            f"{source}: field 'date' must be an ISO date (YYYY-MM-DD), got {doc['date']!r:.40}"
        ) from None
    version = doc["library_version"]
    if (
        not isinstance(version, str)
        or len(version) > LIMITS["version"]
        or not VERSION.fullmatch(version)
    ):
        raise ResultsError(
            f"{source}: field 'library_version' must be a version such as 0.1.0, got {str(version)[:40]!r}"
        )
    results = doc["results"]
    if not isinstance(results, list) or not 0 < len(results) <= MOST["results"]:
        raise ResultsError(
            f"{source}: field 'results' must be a non-empty list of at most {MOST['results']}"
        )
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
        if (
            not isinstance(r["key"], str)
            or len(r["key"]) > LIMITS["key"]
            or not KEY.fullmatch(r["key"])
        ):
            raise ResultsError(
                f"{where}: field 'key' must be dotted lower-case words, got {str(r['key'])[:60]!r}"
            )
        if r["key"] in seen:
            raise ResultsError(f"{where}: field 'key' {r['key']!r} appears twice")
        seen.add(r["key"])
        _text(r["metric"], f"{where} ({r['key']}): field 'metric'", LIMITS["metric"])
        _number(r["value"], f"{where} ({r['key']}): field 'value'")
        interval = r.get("interval")
        if interval is not None:
            if not isinstance(interval, list) or len(interval) != 2:
                raise ResultsError(
                    f"{where} ({r['key']}): field 'interval' must be [low, high] or null"
                )
            low = _number(interval[0], f"{where} ({r['key']}): field 'interval'")
            high = _number(interval[1], f"{where} ({r['key']}): field 'interval'")
            if low > high:
                raise ResultsError(
                    f"{where} ({r['key']}): field 'interval' has low {low} > high {high}"
                )
        if "setting" in r:
            _text(
                r["setting"],
                f"{where} ({r['key']}): field 'setting'",
                LIMITS["setting"],
            )
    return doc


def _clean(value):
    """A plain float with six significant digits, so files do not change with the last bits of a float."""
    return float(f"{float(value):.6g}")


def results_path(chapter: str, mode: str, results_dir: str | Path = "results") -> Path:
    return Path(results_dir) / f"{chapter}.{mode}.json"


def write_results(
    chapter: str,
    mode: str,
    results: list[dict],
    seed,
    data: dict,
    results_dir: str | Path | None = None,
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
    seeds = (
        sorted({int(s) for s in seed})
        if isinstance(seed, (list, tuple, set))
        else [int(seed)]
    )
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
            raise ResultsError(
                f"{path.name}: the file name must be {doc['chapter']}.{doc['mode']}.json"
            )
        found[doc["chapter"], doc["mode"]] = doc
    return found


def load_claims(path: str | Path = CLAIMS) -> list[dict]:
    """The papers' claims, checked: every claim has its fields; ``reported`` is a number in the units of
    ``metric`` or null and ``reported_text`` what the paper prints, with an ``evidence`` level from
    :data:`EVIDENCE` wherever either is given and a ``source`` always; ``compared_with`` a chapter and key
    or null; ``direction`` null or the test ``{sign, than}`` (optionally ``no_effect``, the value of no
    effect, default 0, and ``margin`` for a not_less / not_greater test).

    A test must be able to fail against the paper's claim: where the paper reports a number, a greater /
    less test's threshold lies at least half way from no effect to it (no "> 1" for a 70x claim)."""
    doc = yaml.safe_load(Path(path).read_text())
    claims = doc.get("claims") if isinstance(doc, dict) else None
    if not isinstance(claims, list) or not claims:
        raise ResultsError(f"{path}: expected a top-level 'claims' list")
    fields = {
        "id",
        "paper",
        "where",
        "setting",
        "metric",
        "reported",
        "reported_direction",
        "source",
    }
    fields |= {"compared_with", "direction", "reason_if_different"}
    optional = {"reported_text", "evidence"}
    ids = set()
    for i, c in enumerate(claims):
        where = f"{Path(path).name}: claims[{i}]"
        if not isinstance(c, dict):
            raise ResultsError(f"{where}: expected a mapping")
        missing = sorted(fields - set(c))
        if missing:
            raise ResultsError(f"{where} ({c.get('id')}): missing field(s) {missing}")
        unknown = sorted(set(c) - fields - optional)
        if unknown:
            raise ResultsError(f"{where} ({c.get('id')}): unknown field(s) {unknown}")
        if not isinstance(c["id"], str) or not CLAIM_ID.fullmatch(c["id"]):
            raise ResultsError(
                f"{where}: id must be lower-case words joined by '_', got {c['id']!r}"
            )
        if c["id"] in ids:
            raise ResultsError(f"{where}: id {c['id']!r} appears twice")
        ids.add(c["id"])
        c.setdefault("reported_text", None)
        c.setdefault("evidence", None)
        for name in (
            "paper",
            "where",
            "setting",
            "metric",
            "source",
            "reported_direction",
            "reported_text",
        ):
            if c[name] is not None and not isinstance(c[name], str):
                raise ResultsError(f"{where} ({c['id']}): field {name!r} must be text")
        if c["reported"] is not None:
            _number(c["reported"], f"{where} ({c['id']}): field 'reported'")
        if not c["source"]:
            raise ResultsError(
                f"{where} ({c['id']}): field 'source' must say where the reported value is from"
            )
        has_number = c["reported"] is not None or c["reported_text"] is not None
        if has_number and c["evidence"] not in EVIDENCE:
            raise ResultsError(
                f"{where} ({c['id']}): a reported value needs 'evidence', one of {EVIDENCE}"
            )
        if not has_number and c["evidence"] is not None:
            raise ResultsError(
                f"{where} ({c['id']}): 'evidence' without a reported value or text"
            )
        target = c["compared_with"]
        if target is not None and (
            not isinstance(target, dict) or set(target) != {"chapter", "key"}
        ):
            raise ResultsError(
                f"{where} ({c['id']}): field 'compared_with' must be null or {{chapter, key}}"
            )
        direction = c["direction"]
        if direction is not None:
            if (
                not isinstance(direction, dict)
                or direction.get("sign") not in DIRECTIONS
                or "than" not in direction
                or set(direction) - {"sign", "than", "no_effect", "margin"}
            ):
                raise ResultsError(
                    f"{where} ({c['id']}): field 'direction' must be null or {{sign: {DIRECTIONS}, than, "
                    "no_effect (optional), margin (optional)}"
                )
            _number(direction["than"], f"{where} ({c['id']}): direction 'than'")
            _number(
                direction.get("no_effect", 0),
                f"{where} ({c['id']}): direction 'no_effect'",
            )
            if (
                _number(
                    direction.get("margin", 0),
                    f"{where} ({c['id']}): direction 'margin'",
                )
                < 0
            ):
                raise ResultsError(
                    f"{where} ({c['id']}): direction 'margin' must not be negative"
                )
            problem = trivial_test(direction, c["reported"])
            if problem:
                raise ResultsError(f"{where} ({c['id']}): {problem}")
        if target is not None and not c["reason_if_different"]:
            raise ResultsError(
                f"{where} ({c['id']}): a compared claim needs a 'reason_if_different'"
            )
    return claims


def trivial_test(direction: dict, reported: float | None) -> str | None:
    """Why a greater / less test cannot fail against the paper's number, or None. A test reproduces a
    reported effect only if its threshold lies at least half way from no effect to the paper's value:
    "> 1" is met by any speed-up and says nothing about a 70x one. A test pointing away from the
    paper's own number is refused too."""
    if reported is None or direction["sign"] not in ("greater", "less"):
        return None
    null, than = direction.get("no_effect", 0), direction["than"]
    sign = 1 if direction["sign"] == "greater" else -1
    if sign * (reported - null) <= 0:
        return f"the test ({direction['sign']} than {than}) points away from the paper's {reported}"
    half = null + (reported - null) / 2
    if sign * (than - half) < 0:
        return (
            f"the test ({direction['sign']} than {than}) is met by effects far smaller than the paper's "
            f"{reported}: use a threshold at least half way from no effect ({null}) to it ({half:g})"
        )
    return None


def find_result(results: dict, target: dict | None, mode: str) -> dict | None:
    """The result a claim points at, in one mode's file, or None."""
    if target is None or (target["chapter"], mode) not in results:
        return None
    return next(
        (
            r
            for r in results[target["chapter"], mode]["results"]
            if r["key"] == target["key"]
        ),
        None,
    )


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


# Characters written into Markdown as they are; every other character becomes an HTML entity, which
# Markdown and MyST show as the character and never read as syntax (no heading, role, directive,
# code span, table cell, math or raw HTML can come out of a value).
_MD_PLAIN = set(" .,;:'\"()%/-=?")


def md(value) -> str:
    """``value`` as Markdown text that shows exactly its characters: line breaks and runs of blanks
    become one space, letters, digits and harmless punctuation stay, everything else (``# * _ ` { } [ ]
    < > | $ \\ ~ ^ ! + &``...) is written as an HTML entity."""
    text = " ".join(str(value).split())
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        plain = ch.isascii() and (ch.isalnum() or ch in _MD_PLAIN)
        if plain or (not ch.isascii() and category[0] in "LN"):
            out.append(ch)
        else:
            out.append(f"&#{ord(ch)};")
    return "".join(out)


def _test_text(direction: dict) -> str:
    sign, than = direction["sign"], fmt(direction["than"])
    margin = direction.get("margin", 0)
    if sign in ("greater", "less"):
        return f"{'>' if sign == 'greater' else '<'} {than}"
    bound = (
        direction["than"] - margin if sign == "not_less" else direction["than"] + margin
    )
    return f"{'not below' if sign == 'not_less' else 'not above'} {fmt(bound)}"


def verdict(claim: dict, result: dict | None) -> tuple[str, str]:
    """The verdict class (one of :data:`VERDICTS`) of a claim against one measured result, and why.

    The claim's test (``direction``) is applied to the result's 95% interval (the value itself where
    the chapter gives none): the interval wholly on the paper's side is :data:`REPRODUCED` (the test
    could fail: :func:`trivial_test` keeps thresholds from being trivially met), wholly on the other
    side :data:`NOT_REPRODUCED_VERDICT`, across the threshold :data:`CONSISTENT` (it holds values on
    both sides). No result, or no test (an absolute value measured at another scale), is
    :data:`NOT_TESTABLE`."""
    if result is None:
        return NOT_TESTABLE, "no chapter result to compare"
    direction = claim["direction"]
    if direction is None:
        return (
            NOT_TESTABLE,
            "no test: the value depends on data, resolution and budget, not on the claim",
        )
    low, high = result.get("interval") or (result["value"], result["value"])
    what = (
        "interval lies wholly" if result.get("interval") else "value (no interval) lies"
    )
    sign, than = direction["sign"], direction["than"]
    if sign in ("not_less", "not_greater"):
        margin = direction.get("margin", 0)
        than = than - margin if sign == "not_less" else than + margin
    paper_side = (
        low > than if sign == "greater" else high < than if sign == "less" else None
    )
    other_side = (
        high <= than if sign == "greater" else low >= than if sign == "less" else None
    )
    if sign == "not_less":
        paper_side, other_side = low >= than, high < than
    elif sign == "not_greater":
        paper_side, other_side = high <= than, low > than
    test = _test_text(direction)
    if paper_side:
        return REPRODUCED, f"the {what} on the paper's side of the test ({test})"
    if other_side:
        return (
            NOT_REPRODUCED_VERDICT,
            f"the {what} on the other side of the test ({test})",
        )
    return CONSISTENT, f"the interval holds values on both sides of the test ({test})"


def same_direction(direction: dict | None, result: dict | None) -> str:
    """The verdict class of a measured result under a test alone (see :func:`verdict`)."""
    claim = {"direction": direction}
    return verdict(claim, result)[0]


PAPERS = {
    "varma2025medvae": "MedVAE",
    "huang2021multimodal": "Huang et al.: more modalities, provably",
    "tan2025puir": "Tan et al.: personalised invariant representations (PUIR)",
    "roy2024benchmarking": "Roy et al.: benchmarking vision-language contrastive methods",
}
EVIDENCE_SHORT = {
    "primary": "primary",
    "primary (screenshot of the table)": "primary, table image",
    "secondary": "secondary",
    "repo/model card": "repo",
}


def claim_row(claim: dict, results: dict) -> dict:
    """One claim's entry on the page: the table's short cells and the folded details, as Markdown."""
    target = claim["compared_with"]
    measured = {mode: find_result(results, target, mode) for mode in MODES}
    if claim["reported"] is not None:
        paper = md(fmt(claim["reported"]))
    elif claim["reported_text"]:
        paper = md(claim["reported_text"])
    else:
        paper = md(NOT_READABLE)
    if claim["evidence"]:
        paper += f" ({md(EVIDENCE_SHORT[claim['evidence']])})"
    if target is None:
        ours = md(NOT_REPRODUCED)
    else:
        ours = (
            md(fmt_result(measured["ci"]))
            if measured["ci"]
            else md("no CI-mode result")
        )
        if measured["full"]:
            ours += f"; full: {md(fmt_result(measured['full']))}"
    verdicts = {
        m: verdict(claim, measured[m]) for m in MODES if measured[m] is not None
    }
    shown = verdicts.get("ci", (NOT_TESTABLE, "no CI-mode result"))
    if target is None:
        shown = (NOT_TESTABLE, "no chapter measures it yet")
    details = [
        f"- **Claim**: {md(claim['where'])}: {md(claim['metric'])}",
        f"- **Setting**: {md(claim['setting'])}",
    ]
    reported = [md(fmt(claim["reported"]))] if claim["reported"] is not None else []
    if claim["reported_text"]:
        reported.append(md(claim["reported_text"]))
    if claim["reported_direction"]:
        reported.append(f"in words: {md(claim['reported_direction'])}")
    evidence = f" (evidence: {md(claim['evidence'])})" if claim["evidence"] else ""
    details.append(f"- **Paper**: {'; '.join(reported) or md(NOT_READABLE)}{evidence}")
    details.append(f"- **Source**: {md(claim['source'])}")
    if target is not None:
        details.append(
            f"- **Ours**: chapter {md(target['chapter'][:2])}, `{target['chapter']}`, result `{target['key']}`"
        )
        for mode in MODES:
            value = (
                md(fmt_result(measured[mode]))
                if measured[mode]
                else md("no result in this mode")
            )
            details.append(f"  - {mode} mode: {value}")
    if claim["direction"] is not None:
        details.append(f"- **Test**: {md(_test_text(claim['direction']))}")
    for mode, (cls, why) in verdicts.items():
        details.append(f"- **Verdict ({mode} mode)**: {md(cls)}: {md(why)}")
    if not verdicts:
        details.append(f"- **Verdict**: {md(shown[0])}: {md(shown[1])}")
    reason = claim["reason_if_different"] or (
        "" if target is not None else "no chapter measures it yet"
    )
    if reason:
        details.append(f"- **Why they can differ**: {md(reason)}")
    return {
        "claim": f"{md(claim['where'])}: {md(claim['metric'])}; {md(claim['setting'])}",
        "paper": paper,
        "ours": ours,
        "verdict": md(shown[0]),
        "verdict_class": shown[0],
        "details": details,
    }


def _data_text(data: dict) -> str:
    """The Data column of the results files: the manifest (and file key, size), a simulation (and the real
    data beside it), or the sha256 of each file a chapter names by checksum."""
    parts = [f"{k} {data[k]}" for k in ("manifest", "key", "image_size") if k in data]
    if not parts and "simulated" in data:
        real = data.get("real")
        parts = [
            "simulated"
            + (
                f"; real: {real['manifest']}"
                if isinstance(real, dict) and "manifest" in real
                else ""
            )
        ]
    if not parts:
        parts = [
            f"{k.removesuffix('_sha256')} sha256 {str(v)[:12]}..."
            for k, v in data.items()
            if k.endswith("_sha256")
        ]
    return ", ".join(parts) or "not recorded"


def build_page(
    results_dir: str | Path = RESULTS_DIR, claims_path: str | Path = CLAIMS
) -> str:
    """The scorecard page, Markdown, from the results files and the claims. Every value from those files
    is written through :func:`md`, so none can add a heading, a directive, a role or HTML."""
    results = load_results(results_dir)
    claims = load_claims(claims_path)
    others = sorted({c["paper"] for c in claims} - set(PAPERS))
    if others:
        raise ResultsError(f"claims name papers the page does not know: {others}")
    lines = [
        "# Reproduction scorecard",
        "",
        "Which claims of the four papers this book reproduces, at what scale, and where it disagrees. Every",
        "number under *Ours* is read from the results file a chapter writes when it runs",
        "(`notebooks/results/<chapter>.<mode>.json`); the claims, with what each paper reports, are listed once",
        "in `book/claims.yaml`. This page is generated by `python -m medvae_lib.scorecard` (run by `make book`",
        "and `make html`): edit those files, not this page.",
        "",
        "How to read a row. *Paper*: the paper's number where this book could read it, with its evidence",
        "level: *primary* (read in the paper, or in an image of its table), *secondary* (a third-party",
        f'transcription that could not be checked); else "{NOT_READABLE}". *Ours*: the',
        "CI-mode value with its 95% confidence interval in brackets where the chapter computed one (and the",
        "full-mode value where a full run exists). *Verdict*, from the claim's test applied to that interval:",
        "",
        f"- **{REPRODUCED}**: the interval lies wholly on the paper's side of a test that could have",
        "  failed. Where the paper reports a number, the test's threshold lies at least half way from no",
        "  effect to it: a speed-up above 1 says nothing about a 70x one.",
        f"- **{CONSISTENT}**: the interval holds values on both sides of the test: this run cannot tell.",
        f"- **{NOT_REPRODUCED_VERDICT}**: the interval lies wholly on the other side of the test.",
        f"- **{NOT_TESTABLE}**: no chapter measures the claim, or the claim is an absolute value (a PSNR,",
        "  a timing) that depends on data, resolution and budget more than on what the paper claims.",
        "",
        "Open a claim's details for its setting, the paper's source, the result key, the test and why the",
        "numbers can differ. The CI-mode numbers come from small models trained for minutes on small real",
        "data on a CPU: they test whether an effect appears at all and in which direction, not its size at",
        "the papers' scale.",
        "",
    ]
    counts = dict.fromkeys(VERDICTS, 0)
    number = 0
    for paper, title in PAPERS.items():
        rows = [claim_row(c, results) for c in claims if c["paper"] == paper]
        if not rows:
            continue
        lines += [f"## {title}", "", f"Claims of {{cite:t}}`{paper}`.", ""]
        lines += ["| # | Claim | Paper | Ours | Verdict |", "|---|---|---|---|---|"]
        first = number + 1
        for row in rows:
            number += 1
            lines.append(
                f"| {number} | {row['claim']} | {row['paper']} | {row['ours']} | {row['verdict']} |"
            )
            counts[row["verdict_class"]] += 1
        lines.append("")
        for offset, (row, claim) in enumerate(
            zip(rows, [c for c in claims if c["paper"] == paper], strict=True)
        ):
            lines += [
                f"```{{dropdown}} {first + offset}. {claim['id']}",
                *row["details"],
                "```",
                "",
            ]
    lines += [
        "## Summary",
        "",
        f"{len(claims)} claims, in CI mode: "
        + ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
        + ". A claim counts as reproduced only on a test that could have failed.",
        "",
        "## The results files",
        "",
        "| File | Chapter | Mode | Seeds | Data | Library | Date | Results |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (chapter, mode), doc in sorted(results.items()):
        seeds = ", ".join(map(str, doc["seeds"][:10])) + (
            ", ..." if len(doc["seeds"]) > 10 else ""
        )
        lines.append(
            f"| `{chapter}.{mode}.json` | {md(chapter[:2])} | {md(mode)} | {md(seeds)} | {md(_data_text(doc['data']))} "
            f"| {md(doc['library_version'])} | {md(doc['date'])} | {len(doc['results'])} |"
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
