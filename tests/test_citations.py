"""Citations: every {cite:t}`key` / {cite:p}`key` in a chapter or a book page names an entry of
book/references.bib, every entry is complete, and every chapter cites the works it builds on."""

import codecs
import re
from pathlib import Path

import latexcodec  # noqa: F401  (registers the "ulatex" codec)
import nbformat
import pytest
import yaml
from pybtex.database import parse_file

from medvae_lib import markup
from medvae_lib.markup import read_myst

REPO = Path(__file__).resolve().parent.parent
BIB = REPO / "book" / "references.bib"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAGES = sorted((REPO / "book").glob("*.md"))
# The papers the book is built on, with their arXiv identifiers.
SEEDS = {
    "varma2025medvae": "2502.14753",  # MedVAE
    "huang2021multimodal": "2106.04538",  # What makes multi-modal learning better than single (provably)
    "tan2025puir": "2411.06106",  # PUIR, ICCV 2025
    "roy2024benchmarking": "2406.07450",  # the contrastive image-text benchmark behind mmlearn
}
# {cite}`a`, {cite:p}`a,b`, {cite:t}`{see}a{p. 3}`, {footcite:t}`a`, ...
CITE = re.compile(r"\{(?:foot)?cite(?::\w+)?\}`([^`]*)`")
LINK = "[Bibliography](../book/bibliography.md)"


_BIB = parse_file(BIB)
# Where a citation in a notebook links when its entry has no DOI, arXiv identifier or URL.
BIB_ON_GITHUB = (
    yaml.safe_load((REPO / "book" / "_config.yml").read_text())["repository"]["url"]
    + "/blob/main/book/references.bib"
)


def _last_name(person) -> str:
    name = " ".join(person.prelast_names + person.last_names)
    return codecs.decode(name, "ulatex").replace("{", "").replace("}", "")


def cite_link(key: str, narrative: bool) -> str:
    """How a notebook cites ``key`` so that Colab shows it (medvae_lib.markup): the author-year text
    the book shows for {cite:t} (``narrative``) or {cite:p}, linked to the paper, the key in the
    link's title. "Varma et al. (2025)" or "Varma et al., 2025"."""
    entry = _BIB.entries[key]
    people = entry.persons["author"]
    lasts = [_last_name(p) for p in people]
    if len(lasts) > 2 or "others" in lasts:
        who = f"{lasts[0]} et al."
    else:
        who = " and ".join(lasts)
    year = entry.fields["year"]
    text = f"{who} ({year})" if narrative else f"{who}, {year}"
    fields = entry.fields
    if "doi" in fields:
        url = f"https://doi.org/{fields['doi']}"
    elif "eprint" in fields:
        url = f"https://arxiv.org/abs/{fields['eprint']}"
    else:
        url = fields.get("url", BIB_ON_GITHUB)
    return f'[{text}]({url} "cite:{key}")'


def cited_keys(text):
    """The keys of every citation role in ``text`` (pre- and post-notes in braces removed)."""
    keys = []
    for body in CITE.findall(text):
        keys += [
            k.strip() for k in re.sub(r"\{[^}]*\}", "", body).split(",") if k.strip()
        ]
    return keys


def markdown(path):
    """The chapter's markdown as the book reads it (medvae_lib.markup: citation links as roles)."""
    return "\n".join(
        c.source for c in read_myst(path).cells if c.cell_type == "markdown"
    )


@pytest.fixture(scope="module")
def bib():
    return parse_file(BIB)


def test_no_duplicate_keys():
    keys = [
        k.lower()
        for k in re.findall(r"^@\w+\s*\{\s*([^,\s]+)\s*,", BIB.read_text(), re.M)
    ]
    assert keys, "no entries found in book/references.bib"
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f"duplicate keys in references.bib: {duplicates}"


def test_every_entry_has_author_title_and_year(bib):
    incomplete = [
        key
        for key, entry in bib.entries.items()
        if not entry.persons.get("author")
        or not entry.fields.get("title")
        or not entry.fields.get("year")
    ]
    assert not incomplete, f"entries without author, title or year: {incomplete}"
    bad_years = [
        k
        for k, e in bib.entries.items()
        if not re.fullmatch(r"(19|20)\d\d", e.fields["year"])
    ]
    assert not bad_years, f"entries whose year is not a year: {bad_years}"


def test_the_seed_papers_are_in_the_bibliography(bib):
    for key, arxiv in SEEDS.items():
        assert key in bib.entries, f"seed paper {key} is missing from references.bib"
        entry = " ".join(bib.entries[key].fields.values())
        assert arxiv in entry, f"{key} does not carry its arXiv identifier {arxiv}"


@pytest.mark.parametrize("path", NOTEBOOKS + PAGES, ids=lambda p: p.name)
def test_every_cited_key_is_in_the_bibliography(path, bib):
    text = markdown(path) if path.suffix == ".ipynb" else path.read_text()
    unknown = sorted(set(cited_keys(text)) - set(bib.entries.keys()))
    assert not unknown, (
        f"{path.name} cites keys that are not in book/references.bib: {unknown}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_cites_in_its_text(path):
    text = markdown(path)
    body = text[: text.find("## References")] if "## References" in text else text
    assert cited_keys(body), (
        f"{path.name} cites nothing with {{cite:t}}`key` or {{cite:p}}`key` before its References section"
    )
    references = text[text.find("## References") :]
    assert LINK in references, (
        f"{path.name}: end the References section with 'Full entries: {LINK}.'"
    )


def test_the_bibliography_page_is_built():
    config = yaml.safe_load((REPO / "book" / "_config.yml").read_text())
    assert config["bibtex_bibfiles"] == ["book/references.bib"], (
        "the build runs from the repository root"
    )
    assert config["sphinx"]["config"]["bibtex_reference_style"] == "author_year"
    page = (REPO / "book" / "bibliography.md").read_text()
    assert re.search(r"```\{bibliography\}\n:all:\n```", page), (
        "list every entry of references.bib"
    )
    toc = yaml.safe_load((REPO / "book" / "_toc.yml").read_text())
    assert toc["parts"][-1]["chapters"][-1]["file"] == "book/bibliography", (
        "the bibliography is the last page"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_citation_links_say_what_the_book_says(path):
    """A chapter cites by a link that Colab shows as it stands (medvae_lib.markup): its text must be
    the author and year the book renders from the entry, and its address the entry's DOI, arXiv id
    or URL, so Colab readers see the same citation and can open the paper."""
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert markup._CITE_T.search(text), f"{path.name} cites nothing"
    groups = [m.span() for m in markup._CITE_P.finditer(text)]  # ({cite:p}; ...)
    for match in markup._CITE_T.finditer(text):
        key = match["key"]
        assert key in _BIB.entries, f"{path.name}: {key} is not in references.bib"
        inside = any(a < match.start() and match.end() < b for a, b in groups)
        expected = cite_link(key, narrative=not inside)
        assert match[0] == expected, f"{path.name}: {match[0]} should be {expected}"
    missed = [
        c.source[:60]
        for c in nb.cells
        if c.cell_type == "markdown" and '"cite:' in markup.to_myst(c.source)
    ]
    assert not missed, f"{path.name}: citations the book would not see: {missed}"
