"""Tests of the ROCO and PMC-OA download and loading code (medvae_lib/image_text_data/), without network.

The "hub" (a folder with the files of the axiong/pmc_oa dataset repository) and the "PMC FTP tree" plus a
roco-dataset checkout are built in tmp_path from real MedPix 2.0 images and captions (../shared/data), and
the FTP tree is served over HTTP on 127.0.0.1 by tests/helpers.py's LoopbackServer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from helpers import LoopbackServer
from PIL import Image

from medvae_lib import image_text_data as itd
from medvae_lib.data import DATA_ROOT_ENV, ChecksumError, NetworkError
from medvae_lib.image_text_data import downloads as itd_downloads

SHARED = Path(
    os.environ.get(DATA_ROOT_ENV)
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
MEDPIX = SHARED / "medpix2"
# Four packages for six figures: two packages hold two figures each, as PMC articles often do.
PACKAGES = [
    ("ab/01", "PMC1000001", [0, 1]),
    ("cd/02", "PMC1000002", [2]),
    ("ef/03", "PMC1000003", [3, 4]),
]
PACKAGES += [("0a/04", "PMC1000004", [5])]
# A line of data/test/non-radiology/dlinks.txt in razorx89/roco-dataset, verbatim.
REAL_DLINK = (
    "ROCO_81827\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/cb/dd/PMC4327453.tar.gz -P /path/to/Dir"
    "\t1678-7757-jaos-14-02-0117-gf05.jpg"
)


@pytest.fixture(scope="module")
def medpix():
    """Six real MedPix 2.0 pairs: image file name, caption, the image's bytes."""
    pairs = MEDPIX / "pairs.csv"
    if not pairs.is_file():
        pytest.fail(
            f"the MedPix 2.0 copy is missing at {MEDPIX}; see ../shared/data/README.md"
        )
    table = pd.read_csv(pairs).sort_values("image").head(6)
    return [
        (r.image, r.caption, (MEDPIX / "images_224" / r.image).read_bytes())
        for r in table.itertuples()
    ]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(itd_downloads, "_BACKOFF_S", 0.0)  # read by _download there


# ------------------------------------------------------------------------------------------ PMC-OA

SPLIT_ROWS = {"train": [0, 1, 2], "valid": [3, 4], "test": [5]}


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _make_hub(folder: Path, medpix, members=None) -> Path:
    """The files of the hub repository: {train,valid,test}.jsonl (rows as on the dataset card), pmc_oa.jsonl
    and images.zip with its images in one top folder, as the hub's loading script reads it."""
    folder.mkdir(parents=True)
    for split, idx in SPLIT_ROWS.items():
        rows = [
            {
                "image": medpix[i][0],
                "caption": medpix[i][1],
                "pmcid": "PMC0",
                "url_name": "x.jpg",
            }
            for i in idx
        ]
        (folder / f"{split}.jsonl").write_text(_jsonl(rows))
    (folder / "pmc_oa.jsonl").write_text(
        _jsonl({"image": m[0], "caption": m[1]} for m in medpix)
    )
    if members is None:
        members = {
            f"{itd.PMC_OA_IMAGE_FOLDER}/{name}": data for name, _, data in medpix
        }
    with zipfile.ZipFile(folder / "images.zip", "w") as z:
        z.writestr(f"{itd.PMC_OA_IMAGE_FOLDER}/", b"")
        for name, data in members.items():
            z.writestr(name, data)
    return folder


@pytest.fixture
def hub(tmp_path, medpix):
    return _make_hub(tmp_path / "hub", medpix)


def test_pmc_oa_download_then_load_gives_the_source_pairs(
    hub, tmp_path, medpix, capsys
):
    dest = itd.download_pmc_oa(tmp_path / "pmc_oa", source=hub)
    assert dest == (tmp_path / "pmc_oa").resolve()
    for split, idx in SPLIT_ROWS.items():
        table = itd.load_pmc_oa(dest, split)
        assert list(table.columns) == ["image_path", "caption"]
        assert list(table.caption) == [medpix[i][1] for i in idx]
        for path, i in zip(table.image_path, idx, strict=True):
            path = Path(path)
            assert (
                path.is_absolute() and path == dest / "images" / medpix[i][0]
            )  # mmlearn's {root}/images/{image}
            assert path.read_bytes() == medpix[i][2]
            with Image.open(path) as im, Image.open(io.BytesIO(medpix[i][2])) as src:
                assert im.size == src.size and im.size[0] > 0
    record = json.loads((dest / "checksums.json").read_text())
    names = {"train.jsonl", "valid.jsonl", "test.jsonl", "images.zip"}
    assert record["files"] == {
        n: hashlib.sha256((hub / n).read_bytes()).hexdigest() for n in names
    }
    assert record["source"] == str(hub.resolve()) and record["revision"] is None
    out = capsys.readouterr().out
    assert all(
        digest in out for digest in record["files"].values()
    )  # printed on first download


def test_pmc_oa_later_calls_verify_the_recorded_checksums(hub, tmp_path, capsys):
    dest = itd.download_pmc_oa(tmp_path / "pmc_oa", source=hub, splits=("train",))
    assert set(json.loads((dest / "checksums.json").read_text())["files"]) == {
        "train.jsonl",
        "images.zip",
    }
    itd.download_pmc_oa(dest, source=hub)  # valid and test are added to the record
    capsys.readouterr()
    itd.download_pmc_oa(dest, source=hub)  # everything verified, nothing new to record
    assert "sha256" not in capsys.readouterr().out
    with open(dest / "valid.jsonl", "a") as f:
        f.write('{"image": "x.jpg", "caption": "changed after the first download"}\n')
    with pytest.raises(ChecksumError, match=r"valid\.jsonl.*recorded"):
        itd.download_pmc_oa(dest, source=hub)
    with pytest.raises(itd.PairDataError, match="downloaded from"):
        itd.download_pmc_oa(dest, source=hub, revision="another")


def test_pmc_oa_from_the_hub_uses_hf_hub_download(hub, tmp_path, monkeypatch, medpix):
    import huggingface_hub

    calls = []

    def fake_download(
        repo_id, filename, *, repo_type=None, revision=None, local_dir=None, **kwargs
    ):
        calls.append((repo_id, filename, repo_type, revision))
        target = Path(local_dir) / filename
        target.write_bytes((hub / filename).read_bytes())
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    dest = itd.download_pmc_oa(tmp_path / "pmc_oa", revision="0123abc")
    assert sorted(calls) == sorted(
        ("axiong/pmc_oa", name, "dataset", "0123abc")
        for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "images.zip")
    )
    assert list(itd.load_pmc_oa(dest, "test").caption) == [medpix[5][1]]
    itd.download_pmc_oa(dest, revision="0123abc")
    assert len(calls) == 4  # files already there are verified, not downloaded again


def test_pmc_oa_hub_failure_is_a_network_error(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(NetworkError, match="axiong/pmc_oa"):
        itd.download_pmc_oa(tmp_path / "pmc_oa")
    with pytest.raises(itd.PairDataError, match="neither a folder nor"):
        itd.download_pmc_oa(
            tmp_path / "pmc_oa", source=str(tmp_path / "no" / "such" / "folder")
        )


def test_an_images_zip_member_outside_the_folder_is_refused(tmp_path, medpix):
    evil = {
        f"{itd.PMC_OA_IMAGE_FOLDER}/{medpix[0][0]}": medpix[0][2],
        "../evil.jpg": medpix[1][2],
    }
    hub = _make_hub(tmp_path / "hub", medpix, members=evil)
    with pytest.raises(itd.PairDataError, match=r"'\.\./evil\.jpg'.*outside"):
        itd.download_pmc_oa(tmp_path / "pmc_oa", source=hub)
    assert (
        not (tmp_path / "evil.jpg").exists()
        and not (tmp_path / "pmc_oa" / "evil.jpg").exists()
    )
    assert not (tmp_path / "pmc_oa" / "images").exists()  # nothing was extracted


def test_load_pmc_oa_reports_bad_data_clearly(hub, tmp_path, medpix):
    dest = itd.download_pmc_oa(tmp_path / "pmc_oa", source=hub)
    with pytest.raises(itd.PairDataError, match="unknown PMC-OA split 'val'"):
        itd.load_pmc_oa(dest, "val")
    (dest / "images" / medpix[4][0]).unlink()
    with pytest.raises(
        itd.PairDataError, match=rf"1 image\(s\) missing.*{medpix[4][0]}"
    ):
        itd.load_pmc_oa(dest, "valid")
    rows = [
        {"image": medpix[0][0], "caption": medpix[0][1]},
        {"image": medpix[1][0], "caption": "  "},
    ]
    (dest / "train.jsonl").write_text(_jsonl(rows))
    with pytest.raises(
        itd.PairDataError, match=rf"line 2: empty caption for image '{medpix[1][0]}'"
    ):
        itd.load_pmc_oa(dest, "train")
    (dest / "train.jsonl").write_text(
        _jsonl([{"image": medpix[0][0], "text": "no caption key"}])
    )
    with pytest.raises(
        itd.PairDataError, match=r"line 1: missing key\(s\) \['caption'\]"
    ):
        itd.load_pmc_oa(dest, "train")
    (dest / "test.jsonl").unlink()
    with pytest.raises(
        FileNotFoundError, match="test.jsonl"
    ):  # a PairFileMissing, also a PairDataError
        itd.load_pmc_oa(dest, "test")


# ------------------------------------------------------------------------------------------- ROCO


def _tar_gz(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _roco_id(i: int) -> str:
    return f"ROCO_{i + 1:05d}"


def _make_roco(
    srv: Path, medpix, dlinks_extra: str = "", captions_extra: str = ""
) -> Path:
    """A PMC FTP tree under srv/pub/pmc and a roco-dataset checkout at srv/roco (data/train/radiology)."""
    lines, caps, lic = [], [], ["ROCO_ID,PMC_ID,CC"]
    for where, pmc_id, idx in PACKAGES:
        members = {f"{pmc_id}/{pmc_id}.nxml": b"<article/>"}
        for i in idx:
            figure = f"fig-{i}.jpg"
            members[f"{pmc_id}/{figure}"] = medpix[i][2]
            url = f"{itd.PMC_FTP_PREFIX}oa_package/{where}/{pmc_id}.tar.gz"
            lines.append(f"{_roco_id(i)}\twget -r {url} -P /path/to/Dir\t{figure}")
            caps.append(
                f"{_roco_id(i)}\t {medpix[i][1]}"
            )  # captions.txt has a space after the tab
            lic.append(f"{_roco_id(i)},{pmc_id}_{figure},CC BY")
        _tar_gz(
            srv / "pub" / "pmc" / "oa_package" / where / f"{pmc_id}.tar.gz", members
        )
    data = srv / "roco" / "data" / "train" / "radiology"
    data.mkdir(parents=True)
    (data / "dlinks.txt").write_text("\n".join(lines) + "\n" + dlinks_extra)
    (data / "captions.txt").write_text("\n".join(caps) + "\n" + captions_extra)
    (data / "licences.txt").write_text("\n".join(lic) + "\n")
    return srv / "roco"


def test_parsing_follows_fetch_py_on_a_real_dlinks_line():
    (link,) = itd._parse_dlinks(REAL_DLINK, "dlinks.txt")
    assert (link.roco_id, link.image_name, link.pmc_id) == (
        "ROCO_81827",
        "1678-7757-jaos-14-02-0117-gf05.jpg",
        "PMC4327453",
    )
    assert itd._package_url(link.archive_url, itd.PMC_PACKAGE_BASE_URL) == (
        "https://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/cb/dd/PMC4327453.tar.gz"
    )
    with pytest.raises(itd.PairDataError, match="line 1"):
        itd._parse_dlinks("ROCO_1\tfigure.jpg", "dlinks.txt")


def test_roco_download_then_load_gives_the_source_pairs(tmp_path, medpix, capsys):
    repo = _make_roco(tmp_path / "srv", medpix)
    with LoopbackServer(tmp_path / "srv") as server:
        dest = itd.download_roco(
            tmp_path / "roco", repo=repo, package_base_url=server.url("pub/pmc/")
        )
        assert server.requests == len(PACKAGES)  # one download per package
        itd.download_roco(dest, repo=repo, package_base_url=server.url("pub/pmc/"))
        assert server.requests == len(
            PACKAGES
        )  # images already there are not fetched again
    assert "6 image-caption pairs" in capsys.readouterr().out
    table = itd.load_roco(dest, "train", "radiology")
    assert list(table.columns) == ["image_path", "caption", "roco_id", "licence"]
    assert list(table.caption) == [m[1] for m in medpix] and set(table.licence) == {
        "CC BY"
    }
    for i, path in enumerate(table.image_path):
        assert (
            Path(path) == dest / "train" / "radiology" / "images" / f"{_roco_id(i)}.jpg"
        )  # fetch.py's name
        assert Path(path).read_bytes() == medpix[i][2]
        with Image.open(path) as im:
            im.verify()
    mmlearn = pd.read_json(
        dest / "radiologytrain_dataset.json", lines=True
    )  # as mmlearn's ROCO reads it
    assert list(mmlearn.image_path) == list(table.image_path)
    assert not list(
        (dest / "train" / "radiology").glob(".packages-*")
    )  # packages are removed


def test_roco_repo_as_a_url_and_a_limit(tmp_path, medpix):
    _make_roco(tmp_path / "srv", medpix)
    with LoopbackServer(tmp_path / "srv") as server:
        dest = itd.download_roco(
            tmp_path / "roco",
            repo=server.url("roco/"),
            package_base_url=server.url("pub/pmc"),
            limit=3,
        )
        assert (
            server.requests == 3 + 2
        )  # dlinks, captions, licences; the packages of figures 0-1 and 2
    assert list(itd.load_roco(dest, "train").caption) == [m[1] for m in medpix[:3]]


def test_roco_a_figure_missing_from_its_package_is_named_or_listed(
    tmp_path, medpix, capsys
):
    url = f"{itd.PMC_FTP_PREFIX}oa_package/ab/01/PMC1000001.tar.gz"
    extra = f"ROCO_00099\twget -r {url} -P /path/to/Dir\tfig-absent.jpg\n"
    repo = _make_roco(tmp_path / "srv", medpix, extra, "ROCO_00099\t a caption\n")
    with LoopbackServer(tmp_path / "srv") as server:
        base = server.url("pub/pmc/")
        with pytest.raises(
            itd.PairDataError,
            match=r"ROCO_00099: figure 'PMC1000001/fig-absent\.jpg' is not in package",
        ):
            itd.download_roco(tmp_path / "roco", repo=repo, package_base_url=base)
        capsys.readouterr()
        dest = itd.download_roco(
            tmp_path / "roco", repo=repo, package_base_url=base, skip_missing=True
        )
    assert (
        "6 image-caption pairs" in (out := capsys.readouterr().out)
        and "1 skipped, listed in" in out
    )
    skipped = pd.read_csv(dest / "train" / "radiology" / "skipped.tsv", sep="\t")
    assert (
        list(skipped.roco_id) == ["ROCO_00099"] and "PMC1000001" in skipped.package[0]
    )
    assert "not in package" in skipped.reason[0]
    assert len(itd.load_roco(dest, "train")) == 6


def test_roco_a_missing_package_is_a_network_error_unless_the_oa_service_moves_it(
    tmp_path, medpix
):
    gone = f"{itd.PMC_FTP_PREFIX}oa_package/99/99/PMC7777777.tar.gz"
    extra = f"ROCO_00077\twget -r {gone} -P /path/to/Dir\tfig-7.jpg\n"
    repo = _make_roco(tmp_path / "srv", medpix, extra, f"ROCO_00077\t {medpix[5][1]}\n")
    # The package now lies elsewhere, and the OA web service says where (the static server ignores '?id=...').
    _tar_gz(
        tmp_path / "srv/pub/pmc/oa_package/moved/77/PMC7777777.tar.gz",
        {"PMC7777777/fig-7.jpg": medpix[5][2]},
    )
    new = f"{itd.PMC_FTP_PREFIX}oa_package/moved/77/PMC7777777.tar.gz"
    record = f'<OA><records><record id="PMC7777777"><link format="tgz" href="{new}"/></record></records></OA>'
    (tmp_path / "srv" / "oa.fcgi").write_text(record)
    with LoopbackServer(tmp_path / "srv") as server:
        base = server.url("pub/pmc/")
        with pytest.raises(
            NetworkError,
            match=r"package of ROCO_00077: .*PMC7777777\.tar\.gz answered HTTP 404",
        ):
            itd.download_roco(
                tmp_path / "roco", repo=repo, package_base_url=base, oa_service_url=None
            )
        with pytest.raises(
            NetworkError, match="PMC OA service record of PMC7777777"
        ):  # no service there
            itd.download_roco(
                tmp_path / "roco",
                repo=repo,
                package_base_url=base,
                oa_service_url=server.url("none?id="),
            )
        dest = itd.download_roco(
            tmp_path / "roco",
            repo=repo,
            package_base_url=base,
            oa_service_url=server.url("oa.fcgi?id="),
        )
    table = itd.load_roco(dest, "train").set_index("roco_id")
    assert Path(table.image_path["ROCO_00077"]).read_bytes() == medpix[5][2]
    assert table.caption["ROCO_00077"] == medpix[5][1]


def test_roco_retries_transient_failures_then_gives_up(tmp_path, medpix):
    repo = _make_roco(tmp_path / "srv", medpix)
    with LoopbackServer(tmp_path / "srv", fail=1) as server:
        dest = itd.download_roco(
            tmp_path / "roco",
            repo=repo,
            package_base_url=server.url("pub/pmc/"),
            retries=2,
        )
        assert server.requests == 1 + len(PACKAGES)
    assert len(itd.load_roco(dest, "train")) == 6
    with LoopbackServer(tmp_path / "srv", fail=10) as server:
        with pytest.raises(NetworkError, match=r"HTTP 503 \(after 2 attempt"):
            itd.download_roco(
                tmp_path / "roco_b",
                repo=repo,
                package_base_url=server.url("pub/pmc/"),
                retries=2,
            )


def test_roco_bad_arguments_and_data_are_clear_errors(tmp_path, medpix):
    repo = _make_roco(tmp_path / "srv", medpix, captions_extra="")
    with pytest.raises(itd.PairDataError, match="unknown ROCO split 'val'"):
        itd.download_roco(tmp_path / "roco", split="val", repo=repo)
    with pytest.raises(itd.PairDataError, match="unknown ROCO group 'radio'"):
        itd.load_roco(tmp_path / "roco", "train", "radio")
    with pytest.raises(itd.PairFileMissing, match="validation/radiology/dlinks.txt"):
        itd.download_roco(tmp_path / "roco", split="validation", repo=repo)
    captions = repo / "data" / "train" / "radiology" / "captions.txt"
    captions.write_text(
        captions.read_text().replace(
            f"{_roco_id(2)}\t {medpix[2][1]}", f"{_roco_id(2)}\t  "
        )
    )
    with pytest.raises(itd.PairDataError, match=f"{_roco_id(2)}.*empty caption"):
        itd.download_roco(tmp_path / "roco", repo=repo)
    with pytest.raises(itd.PairFileMissing, match="run download_roco first"):
        itd.load_roco(tmp_path / "roco", "test")


# ------------------------------------------------------------------- PMC-OA without its archive


def _served_hub(tmp_path, monkeypatch, folder: Path):
    """``folder``'s files as the axiong/pmc_oa dataset on a loopback hub (FakeHub), with
    huggingface_hub pointed at it."""
    from fake_hub import FakeHub
    from huggingface_hub import constants

    hub = FakeHub(tmp_path / "served")
    hub.add(
        itd.PMC_OA_HUB_REPO,
        {p.name: p for p in folder.iterdir() if p.is_file()},
        kind="datasets",
    )
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return hub


def test_pmc_oa_sample_reads_only_its_images_by_range_requests(
    hub, tmp_path, monkeypatch, medpix, capsys
):
    import numpy as np

    served = _served_hub(tmp_path, monkeypatch, hub)
    with served:
        dest = itd.sample_pmc_oa(tmp_path / "sample", 2, seed=3, workers=2)
    # the rows a whole download and contrastive_benchmark.pair_images(seed=3) would use
    chosen = np.sort(np.random.default_rng(3).choice(3, 2, replace=False))
    table = itd.load_pmc_oa(dest, "train")
    assert list(table.caption) == [medpix[SPLIT_ROWS["train"][i]][1] for i in chosen]
    for path, i in zip(table.image_path, chosen, strict=True):
        assert Path(path).read_bytes() == medpix[SPLIT_ROWS["train"][i]][2]
    assert sorted(p.name for p in (dest / "images").iterdir()) == sorted(
        Path(p).name for p in table.image_path
    )  # no other image of the archive
    key = f"{itd.PMC_OA_HUB_REPO}/images.zip"
    assert key not in served.downloads  # never downloaded whole
    assert served.ranges[key] >= 2  # its table of contents, then the members
    assert served.downloads[f"{itd.PMC_OA_HUB_REPO}/train.jsonl"] == 1
    record = json.loads((dest / "checksums.json").read_text())
    assert (
        record["files"]["images.zip"]
        == hashlib.sha256((hub / "images.zip").read_bytes()).hexdigest()
    )  # the hub's sha256 of the archive, as its ETag gives it
    assert record["sample"] == {"n": 2, "seed": 3, "split": "train"}
    assert "2 pairs of train sampled (seed 3)" in capsys.readouterr().out


def test_pmc_oa_sample_is_verified_and_kept_on_later_calls(
    hub, tmp_path, medpix, monkeypatch
):
    from medvae_lib.image_text_data import pmc_oa_sample

    dest = itd.sample_pmc_oa(tmp_path / "sample", 2, source=hub)  # a local folder
    before = json.loads((dest / "checksums.json").read_text())
    with monkeypatch.context() as m:
        m.setattr(pmc_oa_sample, "_extract_members", None)  # nothing may be fetched
        assert itd.sample_pmc_oa(dest, 2, source=hub) == dest  # verified
    with pytest.raises(itd.PairDataError, match="use another folder"):
        itd.sample_pmc_oa(dest, 3, source=hub)  # another sample in the same folder
    image = Path(itd.load_pmc_oa(dest, "train").image_path[0])
    image.write_bytes(medpix[5][2])  # another image in its place
    with pytest.raises(ChecksumError, match="changed or went missing"):
        itd.sample_pmc_oa(dest, 2, source=hub)
    assert json.loads((dest / "checksums.json").read_text()) == before


def test_pmc_oa_sample_refuses_a_damaged_member_and_a_missing_image(tmp_path, medpix):
    name, caption, data = medpix[0]
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0xFF
    folder = _make_hub(tmp_path / "hub", medpix)
    with zipfile.ZipFile(folder / "images.zip") as z:  # CRC of the true bytes
        crc = z.getinfo(f"{itd.PMC_OA_IMAGE_FOLDER}/{name}").CRC
    archive = (folder / "images.zip").read_bytes()
    start = archive.index(
        data
    )  # stored, so the member's bytes lie in the archive as is
    (folder / "images.zip").write_bytes(
        archive[:start] + bytes(broken) + archive[start + len(data) :]
    )
    assert zlib_crc(bytes(broken)) != crc
    with pytest.raises(itd.PairDataError, match=f"{name}.*CRC"):
        itd.sample_pmc_oa(tmp_path / "a", 3, source=folder)
    assert not (tmp_path / "a" / "images").exists()  # nothing passes for a sample
    lacking = _make_hub(
        tmp_path / "lacking",
        medpix,
        members={f"{itd.PMC_OA_IMAGE_FOLDER}/{m[0]}": m[2] for m in medpix[1:]},
    )
    with pytest.raises(itd.PairDataError, match=r"lacks 1 of the 3 sampled images"):
        itd.sample_pmc_oa(tmp_path / "b", 3, source=lacking)


def zlib_crc(data: bytes) -> int:
    import zlib

    return zlib.crc32(data)


def test_pmc_oa_sample_reads_deflated_members_and_refuses_a_damaged_one(
    tmp_path, medpix
):
    folder = _make_hub(tmp_path / "hub", medpix)
    rows = [{"image": m[0], "caption": m[1]} for m in medpix[:3]]
    (folder / "train.jsonl").write_text(_jsonl(rows))
    with zipfile.ZipFile(folder / "images.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for name, _, data in medpix[:3]:
            z.writestr(f"{itd.PMC_OA_IMAGE_FOLDER}/{name}", data)
    dest = itd.sample_pmc_oa(tmp_path / "a", 3, source=folder)
    table = itd.load_pmc_oa(dest, "train")
    assert [Path(p).read_bytes() for p in table.image_path] == [
        m[2] for m in medpix[:3]
    ]
    with zipfile.ZipFile(folder / "images.zip") as z:
        info = z.getinfo(f"{itd.PMC_OA_IMAGE_FOLDER}/{medpix[1][0]}")
    archive = bytearray((folder / "images.zip").read_bytes())
    start = (
        info.header_offset + 30 + len(info.filename) + 4
    )  # inside its deflate stream
    archive[start : start + 8] = b"\xff" * 8
    (folder / "images.zip").write_bytes(bytes(archive))
    with pytest.raises(itd.PairDataError, match=medpix[1][0]):
        itd.sample_pmc_oa(tmp_path / "b", 3, source=folder)


def test_pmc_oa_sample_restarts_what_another_sample_left_and_refuses_a_whole_download(
    hub, tmp_path, medpix
):
    dest = tmp_path / "sample"
    (dest / "images.partial").mkdir(parents=True)
    (dest / "images.partial" / "stray.jpg").write_bytes(medpix[5][2])
    attempt = {
        "sample": {"n": 3, "seed": 0, "split": "train"},
        "asked": [],
        "commit": "",
    }
    (dest / ".sampling.json").write_text(json.dumps(attempt))  # an interrupted call
    itd.sample_pmc_oa(dest, 2, source=hub)
    assert not (dest / "images" / "stray.jpg").exists()
    assert not (dest / ".sampling.json").exists()
    whole = itd.download_pmc_oa(tmp_path / "whole", source=hub, splits=("train",))
    with pytest.raises(itd.PairDataError, match="whole PMC-OA download"):
        itd.sample_pmc_oa(whole, 2, source=hub)


def test_range_reads_retry_follow_retry_after_and_resolve_an_expired_address(
    monkeypatch,
):
    import http.server

    from helpers import LoopbackHTTP

    from medvae_lib.image_text_data import pmc_oa_sample

    body = bytes(range(256)) * 4
    answers = ["429", "403", "206"]  # then 206 for every later request
    paths = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            paths.append(self.path)
            code = answers.pop(0) if answers else "206"
            if code == "429":
                self.send_response(429)
                self.send_header("Retry-After", "7")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif code == "403" or self.path == "/old":
                self.send_error(403, "expired")
            elif code == "200":
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                a, b = map(int, self.headers["Range"].removeprefix("bytes=").split("-"))
                self.send_response(206)
                self.send_header("Content-Length", str(b - a + 1))
                self.end_headers()
                self.wfile.write(body[a : b + 1])

        def log_message(self, *args):
            pass

    class Server(LoopbackHTTP):
        def __init__(self):
            self._serve(Handler)

    waits = []
    monkeypatch.setattr(pmc_oa_sample.time, "sleep", waits.append)
    with Server() as server:
        addresses = iter([f"{server.base_url}/old", f"{server.base_url}/new"])
        remote = pmc_oa_sample._Remote(lambda: next(addresses), len(body), "")
        f = pmc_oa_sample._RangeFile(remote)
        assert f.read_range(10, 20) == body[10:30]
        assert waits[0] == 7.0  # the server's Retry-After
        assert paths == ["/old", "/old", "/new"]  # resolved again after the 403
        answers.append("200")  # a server that ignores Range: no retry
        with pytest.raises(itd.PairDataError, match="HTTP 200"):
            f.read_range(0, 4)
        assert len(paths) == 4
