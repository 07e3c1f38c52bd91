"""Full-size public image–text sets for chapter 8: ROCO and PMC-OA, downloaded and read in
mmlearn's layout.

**ROCO** (Radiology Objects in COntext; Pelka et al., MICCAI LABELS workshop 2018,
doi:10.1007/978-3-030-01364-6_20; repository ``razorx89/roco-dataset``) lists figures
(ids ``ROCO_nnnnn``) from articles of the PubMed Central (PMC) open-access subset, split
into ``train``/``validation``/``test`` and into ``radiology``/``non-radiology``. The
repository ships no images: each folder ``data/{split}/{group}/`` holds ``dlinks.txt``
(``ROCO_ID<TAB>wget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/
oa_package/xx/yy/PMCnnn.tar.gz -P /path/to/Dir<TAB>figure.jpg``), ``captions.txt``
(``ROCO_ID<TAB> caption``) and ``licences.txt`` (CSV ``ROCO_ID,PMC_ID,CC``). Licence:
each image and caption is under the licence of the article it comes from;
``licences.txt`` records it per image and it is a mix (CC BY, CC BY-NC, CC BY-NC-SA, CC
BY-NC-ND, CC BY-ND and ``NO-CC CODE``), so not every ROCO image may be redistributed or
used commercially; :func:`download_roco` copies the code into a ``licence`` column.

**PMC-OA** (Lin et al., "PMC-CLIP", arXiv:2303.07240, MICCAI 2023) holds about 1.6
million sub-figure / caption pairs from the same open-access subset, on the Hugging Face
hub as the dataset ``axiong/pmc_oa``: ``images.zip``, ``train.jsonl``, ``valid.jsonl``,
``test.jsonl`` (rows ``{"image": "PMC212319_Fig3_4.jpg", "caption": ...}``),
``pmc_oa.jsonl`` and ``pmc_oa_beta.jsonl``. Licence: the dataset card states none (see
the card); the figures keep their articles' PMC open-access licences. Note that the card
at ``main`` strikes the three split files through in favour of ``pmc_oa.jsonl``
(ChatGPT-split sub-captions, no split), and PMC-CLIP issue #4 reports that the split
files hold the whole compound captions (the "beta" captions). mmlearn reads the split
files, so they are what is downloaded here; pin ``revision`` for a reproducible result.

Sources this code follows (read in the public repositories):

* ``razorx89/roco-dataset`` ``scripts/fetch.py`` (commit
  a1f0ad6c578ca8801e5a6eccc90af051aee1c326): parsing a dlinks line
  (``extract_image_info``: the last tab field is the figure, the third word of the
  second field the package URL, the package name less ``.tar.gz`` the PMC id), grouping
  lines by package so that each is downloaded once (``group_lines_by_archive``), taking
  the member ``{PMC id}/{figure}`` from the package and saving it as
  ``images/{ROCO_ID}.jpg`` next to ``dlinks.txt`` (here under
  ``dest/{split}/{group}/images/``), asking the PMC OA web service
  (``oa.fcgi?id=PMC...``) for the new ``tgz`` link when a package has moved
  (``determine_new_archive_url``), re-downloading a corrupt package, and skipping images
  that already exist. Differences: packages come over HTTPS (the same NCBI FTP tree
  served at ``https://ftp.ncbi.nlm.nih.gov/pub/pmc/``) with urllib instead of ``wget``
  over FTP; a figure missing from its package or a package that cannot be had raises
  :class:`PairDataError` / :class:`~medvae_lib.data.NetworkError` (fetch.py prints a
  line and goes on) unless ``skip_missing=True``, which writes every skipped image to
  ``skipped.tsv`` and prints the count.
* ``VectorInstitute/mmlearn`` ``projects/med_benchmarking/datasets/roco.py``: the table
  ``{root}/{group}{split}_dataset.json``, JSON lines with ``image_path`` and ``caption``
  (``pd.read_json(..., lines=True)``); :func:`download_roco` writes it and
  :func:`load_roco` reads it.
* ``VectorInstitute/mmlearn`` ``projects/med_benchmarking/datasets/pmcoa.py``:
  ``{root}/{split}.jsonl`` for split ``train``/``valid``/``test``, keys ``image`` and
  ``caption``, images in ``{root}/images/`` (its ``image_dir`` argument). ``images.zip``
  keeps its images in one top folder, ``caption_T060_filtered_top4_sep_v0_subfigures/``
  (the ``datasets`` loading script for axiong/pmc_oa, class ``PMC_OA``, reads them
  there; VectorInstitute/pmc-data-extraction's jobs link ``images`` to that folder for
  mmlearn), so :func:`download_pmc_oa` drops that single top folder when it extracts
  into ``dest/images``.

Checksums: neither set publishes any. :func:`download_pmc_oa` is therefore *trust on
first use*: the first download records each file's sha256 in ``dest/checksums.json`` and
prints it, once the file has proved to be what the set holds (the split files parse,
``images.zip`` opens, holds the images they name and extracts), so an error page or a
truncated download is never trusted; every later call verifies the files against that
record and raises :class:`~medvae_lib.data.ChecksumError` on a mismatch. This cannot
prove the first download was the authors' file (nothing published can), but it does
catch corruption, truncation and a file silently changed on the hub or on disk
afterwards; copy the printed digests into a manifest or the book to pin them. ROCO
packages are transient (each is deleted once its figures are out) and the images are
re-derived from them, so the ROCO table records nothing to verify.

The package re-exports the names below; the files, each importing only those above it:

- ``settings.py``: where the sets live and their layout (``PMC_OA_HUB_REPO``,
  ``PMC_OA_SPLITS``, ``ROCO_SPLITS``, ``ROCO_GROUPS``, the URLs, ``CHECKSUMS_FILE``,
  ``SKIPPED_FILE``), :class:`PairDataError` and :class:`PairFileMissing`.
- ``pairs.py``: reading and checking mmlearn's JSON-lines pair tables (shared).
- ``downloads.py``: a URL with retries (``_download``, its backoff ``_BACKOFF_S``) and
  one file of a Hugging Face dataset repository.
- ``extraction.py``: the safe, locked extraction of ``images.zip``.
- ``pmc_oa.py``: :func:`download_pmc_oa` and :func:`load_pmc_oa`.
- ``pmc_oa_sample.py``: :func:`sample_pmc_oa`, a sample of PMC-OA whose images are read
  from ``images.zip`` on the hub by HTTP range requests, without downloading the archive
  (tens of GB; chapter 8's full mode uses 20,000 pairs of it).
- ``roco_repo.py``: the roco-dataset repository's files and their parsing
  (``_parse_dlinks``).
- ``roco.py``: the PMC packages (``_package_url``), :func:`download_roco` and
  :func:`load_roco`.
- ``medpix2.py``: :func:`build_medpix2`, chapter 8's MedPix 2.0 copy rebuilt from its
  public repository where ``../shared`` is absent.
"""

from .medpix2 import build_medpix2
from .pmc_oa import download_pmc_oa, load_pmc_oa
from .pmc_oa_sample import sample_pmc_oa
from .roco import _package_url, download_roco, load_roco
from .roco_repo import _parse_dlinks
from .settings import (
    CHECKSUMS_FILE,
    PMC_FTP_PREFIX,
    PMC_OA_HUB_REPO,
    PMC_OA_IMAGE_FOLDER,
    PMC_OA_SERVICE_URL,
    PMC_OA_SPLITS,
    PMC_PACKAGE_BASE_URL,
    ROCO_GROUPS,
    ROCO_REPO,
    ROCO_SPLITS,
    SKIPPED_FILE,
    PairDataError,
    PairFileMissing,
)

__all__ = [
    # settings.py
    "CHECKSUMS_FILE",
    "PMC_FTP_PREFIX",
    "PMC_OA_HUB_REPO",
    "PMC_OA_IMAGE_FOLDER",
    "PMC_OA_SERVICE_URL",
    "PMC_OA_SPLITS",
    "PMC_PACKAGE_BASE_URL",
    "ROCO_GROUPS",
    "ROCO_REPO",
    "ROCO_SPLITS",
    "SKIPPED_FILE",
    "PairDataError",
    "PairFileMissing",
    # medpix2.py
    "build_medpix2",
    # pmc_oa.py
    "download_pmc_oa",
    "load_pmc_oa",
    # pmc_oa_sample.py
    "sample_pmc_oa",
    # roco.py
    "download_roco",
    "load_roco",
    # private helpers that tests/test_image_text_data.py calls (roco.py, roco_repo.py)
    "_package_url",
    "_parse_dlinks",
]
