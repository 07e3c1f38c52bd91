"""Where the two sets live and how they are laid out (hub id, splits, groups, URLs,
file names), and the errors of bad or missing image-text data."""

from __future__ import annotations

import re
from collections.abc import Sequence

PMC_OA_HUB_REPO = "axiong/pmc_oa"
PMC_OA_SPLITS = ("train", "valid", "test")  # mmlearn's PMCOA
PMC_OA_IMAGE_FOLDER = (
    "caption_T060_filtered_top4_sep_v0_subfigures"  # the one top folder of images.zip
)
ROCO_SPLITS = (
    "train",
    "validation",
    "test",
)  # mmlearn's ROCO and the roco-dataset folders
ROCO_GROUPS = ("radiology", "non-radiology")
# Raw files of the roco-dataset repository at the commit whose scripts/fetch.py this package follows.
ROCO_REPO = "https://raw.githubusercontent.com/razorx89/roco-dataset/a1f0ad6c578ca8801e5a6eccc90af051aee1c326/"
PMC_FTP_PREFIX = (
    "ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/"  # what dlinks.txt and the OA web service name
)
PMC_PACKAGE_BASE_URL = (
    "https://ftp.ncbi.nlm.nih.gov/pub/pmc/"  # the same tree over HTTPS
)
PMC_OA_SERVICE_URL = "https://www.ncbi.nlm.nih.gov/pmc/utils/oa/oa.fcgi?id="  # fetch.py's PMCID_INFORMATION_API
CHECKSUMS_FILE = "checksums.json"
SKIPPED_FILE = "skipped.tsv"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_ROCO_ID = re.compile(r"ROCO_\d+")


class PairDataError(ValueError):
    """Bad or inconsistent image–text data: an unknown split, a malformed line, a missing image or caption,
    an unsafe archive member, a figure missing from its package."""


class PairFileMissing(PairDataError, FileNotFoundError):
    """A file the layout needs is not there (also a :class:`FileNotFoundError`)."""


def _check_choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise PairDataError(
            f"unknown {what} {value!r}; expected one of {list(allowed)}"
        )
    return value


class _BadFile(PairDataError):
    """A downloaded file that is not what the set holds; ``name`` is the file (in ``dest``) to blame."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name
