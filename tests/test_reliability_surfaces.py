"""Issue 24: the surfaces added after the first reliability issue, probed with hostile-but-realistic input.

Each test builds the input a user (or a bad network) can produce offline, and fails on the code before its fix:
PMC-OA and ROCO downloads that are error pages or truncated (causes 1, 3), data-file paths that leave the set
(2), brain MRI contrasts on different grids (4), NaN voxels (5), solution cells that lost their tag (7),
concurrent or interrupted PMC-OA extraction (10), and temporary checkpoint files of killed writers (11).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import nbformat
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from helpers import REPO, LoopbackServer

from medvae_lib import image_text_data as itd
from medvae_lib import markup, medvae_3d, student_copy
from medvae_lib import personalized_invariant as pi
from medvae_lib.data import ChecksumError, load_manifest
from medvae_lib.image_text_data import downloads as itd_downloads
from medvae_lib.training import CHECKPOINT_NAME, RunLock

HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in.</body></html>\n"


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(itd_downloads, "_BACKOFF_S", 0.0)  # read by _download there


# ------------------------------------------------------------------------------------------ PMC-OA
IMAGES = [f"PMC10000{i}_Fig{i}_1.jpg" for i in range(6)]
SPLITS = {"train": [0, 1, 2], "valid": [3, 4], "test": [5]}


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _zip_bytes(names, top=itd.PMC_OA_IMAGE_FOLDER) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(f"{top}/", b"")
        for i, name in enumerate(names):
            z.writestr(
                f"{top}/{name}",
                b"\xff\xd8\xff\xe0 image %d " % i + bytes(range(256)) * 4,
            )
    return buffer.getvalue()


def _hub(folder: Path, zip_data: bytes | None = None, images=IMAGES) -> Path:
    """The hub repository's files: split files naming ``images`` and images.zip (``zip_data``, or the
    archive of those images)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, idx in SPLITS.items():
        rows = [
            {"image": images[i], "caption": f"sub-figure {i} of a chest CT"}
            for i in idx
        ]
        (folder / f"{split}.jsonl").write_text(_jsonl(rows))
    (folder / "images.zip").write_bytes(
        _zip_bytes(images) if zip_data is None else zip_data
    )
    return folder


def _recorded(dest: Path) -> dict:
    path = dest / itd.CHECKSUMS_FILE
    return json.loads(path.read_text())["files"] if path.is_file() else {}


@pytest.mark.parametrize("damage", ["html", "truncated"])
def test_pmc_oa_an_error_page_or_truncated_images_zip_is_never_recorded(
    tmp_path, damage
):
    good = _zip_bytes(IMAGES)
    bad = HTML if damage == "html" else good[: len(good) // 2]
    hub, dest = _hub(tmp_path / "hub", bad), tmp_path / "pmc_oa"
    with pytest.raises(
        itd.PairDataError,
        match=r"images\.zip is not a readable zip archive.*call again",
    ):
        itd.download_pmc_oa(dest, source=hub)
    assert "images.zip" not in _recorded(dest), (
        "a file that does not open must not be trusted"
    )
    assert not (dest / "images.zip").exists(), "a failed download is not kept"
    (hub / "images.zip").write_bytes(
        good
    )  # the real file arrives: no hand-editing of checksums.json
    itd.download_pmc_oa(dest, source=hub)
    assert _recorded(dest)["images.zip"] == hashlib.sha256(good).hexdigest()
    assert len(itd.load_pmc_oa(dest, "train")) == 3


def test_pmc_oa_an_error_page_as_a_split_file_is_refused_naming_it(tmp_path):
    hub, dest = _hub(tmp_path / "hub"), tmp_path / "pmc_oa"
    (hub / "valid.jsonl").write_bytes(HTML)
    with pytest.raises(
        itd.PairDataError, match=r"valid\.jsonl, line 1: not JSON.*call again"
    ):
        itd.download_pmc_oa(dest, source=hub)
    assert "valid.jsonl" not in _recorded(dest) and not (dest / "valid.jsonl").exists()
    (hub / "valid.jsonl").write_bytes(
        b'{"image": "\xff\xfe.jpg", "caption": "x"}\n'
    )  # not UTF-8
    with pytest.raises(itd.PairDataError, match=r"valid\.jsonl, line 1: not UTF-8"):
        itd.download_pmc_oa(dest, source=hub)
    _hub(hub)
    itd.download_pmc_oa(dest, source=hub)
    assert set(_recorded(dest)) == {
        "train.jsonl",
        "valid.jsonl",
        "test.jsonl",
        "images.zip",
    }


def test_pmc_oa_an_archive_without_the_images_the_splits_name_is_refused(tmp_path):
    other = [f"PMC99999{i}_Fig1_1.jpg" for i in range(6)]  # a zip, but of other figures
    hub, dest = _hub(tmp_path / "hub", _zip_bytes(other)), tmp_path / "pmc_oa"
    with pytest.raises(
        itd.PairDataError,
        match=r"images\.zip lacks 3 of the 3 images that train\.jsonl names",
    ):
        itd.download_pmc_oa(dest, source=hub)
    assert _recorded(dest) == {} and not (dest / "images").exists()


def test_pmc_oa_a_bad_file_put_there_by_hand_is_named_and_left_for_the_reader(tmp_path):
    hub, dest = _hub(tmp_path / "hub"), tmp_path / "pmc_oa"
    dest.mkdir()
    (dest / "images.zip").write_bytes(
        HTML
    )  # say, a browser download of the hub's login page
    with pytest.raises(
        itd.PairDataError,
        match=rf"delete {dest.resolve() / 'images.zip'} .*and call again",
    ):
        itd.download_pmc_oa(dest, source=hub)
    assert (dest / "images.zip").read_bytes() == HTML and "images.zip" not in _recorded(
        dest
    )
    (dest / "images.zip").unlink()
    itd.download_pmc_oa(dest, source=hub)
    assert len(itd.load_pmc_oa(dest, "test")) == 1


def test_pmc_oa_a_checksum_mismatch_and_a_damaged_record_say_how_to_recover(tmp_path):
    hub, dest = _hub(tmp_path / "hub"), tmp_path / "pmc_oa"
    itd.download_pmc_oa(dest, source=hub)
    (dest / "test.jsonl").write_text(
        _jsonl([{"image": IMAGES[5], "caption": "a corrected caption"}])
    )
    with pytest.raises(
        ChecksumError,
        match=r"remove 'test\.jsonl' from the 'files' of .*checksums\.json",
    ):
        itd.download_pmc_oa(dest, source=hub)
    record = json.loads((dest / "checksums.json").read_text())
    del record["files"][
        "test.jsonl"
    ]  # what the message says to do for a file one trusts
    (dest / "checksums.json").write_text(json.dumps(record))
    itd.download_pmc_oa(dest, source=hub)
    assert (
        _recorded(dest)["test.jsonl"]
        == hashlib.sha256((dest / "test.jsonl").read_bytes()).hexdigest()
    )
    (dest / "checksums.json").write_text('{"source": ')  # cut off, say by a full disk
    with pytest.raises(
        itd.PairDataError,
        match=r"checksums\.json is not the checksum record.*delete it",
    ):
        itd.download_pmc_oa(dest, source=hub)


def test_pmc_oa_an_error_page_recorded_by_an_older_version_says_how_to_get_unstuck(
    tmp_path,
):
    hub, dest = _hub(tmp_path / "hub"), tmp_path / "pmc_oa"
    dest.mkdir()
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        (dest / name).write_bytes((hub / name).read_bytes())
    (dest / "images.zip").write_bytes(HTML)
    files = {
        n: hashlib.sha256((dest / n).read_bytes()).hexdigest()
        for n in ("train.jsonl", "images.zip")
    }
    record = {"source": str(hub.resolve()), "revision": None, "files": files}
    (dest / "checksums.json").write_text(
        json.dumps(record)
    )  # what the unchecked first download recorded
    with pytest.raises(
        itd.PairDataError, match=r"delete it, remove 'images\.zip' from the 'files' of"
    ):
        itd.download_pmc_oa(dest, source=hub, splits=("train",))
    (dest / "images.zip").unlink()  # what the message says
    del record["files"]["images.zip"]
    (dest / "checksums.json").write_text(json.dumps(record))
    itd.download_pmc_oa(dest, source=hub, splits=("train",))
    assert (
        _recorded(dest)["images.zip"]
        == hashlib.sha256((hub / "images.zip").read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("how", ["dotdot", "absolute", "link"])
def test_pmc_oa_rows_that_point_outside_the_set_are_refused(tmp_path, how):
    hub, dest = _hub(tmp_path / "hub"), tmp_path / "pmc_oa"
    itd.download_pmc_oa(dest, source=hub)
    outside = tmp_path / "x.png"  # dest/images/../../x.png
    outside.write_bytes(b"not the set's file")
    image = {"dotdot": "../../x.png", "absolute": str(outside), "link": "escape.png"}[
        how
    ]
    if how == "link":
        (dest / "images" / "escape.png").symlink_to(outside)
    (dest / "train.jsonl").write_text(
        _jsonl([{"image": image, "caption": "a caption"}])
    )
    with pytest.raises(
        itd.PairDataError,
        match=r"train\.jsonl, line 1: image .*(not a path inside|leads outside)",
    ):
        itd.load_pmc_oa(dest, "train")
    if how != "link":  # a split file like that is refused when it is downloaded, too
        (hub / "train.jsonl").write_text(
            _jsonl([{"image": image, "caption": "a caption"}])
        )
        with pytest.raises(
            itd.PairDataError, match="not a path inside the images folder"
        ):
            itd.download_pmc_oa(tmp_path / "other", source=hub)


def test_pmc_oa_extraction_waits_for_a_second_process_holding_the_folder(tmp_path):
    import fcntl

    hub, dest = _hub(tmp_path / "hub"), tmp_path / "pmc_oa"
    dest.mkdir()
    errors = []

    def download():
        try:
            itd.download_pmc_oa(dest, source=hub)
        except Exception as err:  # reported below
            errors.append(err)

    with open(
        dest / ".images.lock", "a+"
    ) as held:  # another process is extracting into dest/images
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        worker = threading.Thread(target=download)
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive() and not (dest / "images").exists(), (
            "extracted while another process held it"
        )
    worker.join(60)
    assert not errors and sorted(
        p.name for p in (dest / "images").glob("*.jpg")
    ) == sorted(IMAGES)


def test_pmc_oa_an_incomplete_extraction_behind_its_marker_is_repaired(tmp_path):
    hub, dest = _hub(tmp_path / "hub"), tmp_path / "pmc_oa"
    itd.download_pmc_oa(dest, source=hub)
    for name in IMAGES[
        :2
    ]:  # what two processes extracting at once left behind a valid marker
        (dest / "images" / name).unlink()
    itd.download_pmc_oa(dest, source=hub)
    assert sorted(p.name for p in (dest / "images").glob("*.jpg")) == sorted(IMAGES)
    assert len(itd.load_pmc_oa(dest, "train")) == 3


_EXTRACT = """
import sys
from medvae_lib import image_text_data as itd
itd.download_pmc_oa(sys.argv[1], source=sys.argv[2])
"""


def test_pmc_oa_two_processes_extracting_into_one_folder_leave_it_complete(tmp_path):
    names = [f"PMC2{i:05d}_Fig1_1.jpg" for i in range(600)]
    hub, dest = _hub(tmp_path / "hub", images=names), tmp_path / "pmc_oa"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _EXTRACT, str(dest), str(hub)],
            env=env,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert sorted(p.name for p in (dest / "images").glob("*.jpg")) == sorted(names)
    itd.download_pmc_oa(dest, source=hub)  # and a later call finds it complete
    assert len(list((dest / "images").glob("*.jpg"))) == 600


# ------------------------------------------------------------------------------------------- ROCO
def _roco_server_tree(srv: Path) -> bytes:
    """One PMC package under srv/pub/pmc and the bytes of a roco-dataset archive listing its figure."""
    url = f"{itd.PMC_FTP_PREFIX}oa_package/ab/01/PMC1000001.tar.gz"
    package = srv / "pub" / "pmc" / "oa_package" / "ab" / "01" / "PMC1000001.tar.gz"
    package.parent.mkdir(parents=True)
    figure = b"\xff\xd8\xff\xe0 a figure " + bytes(range(256))
    with tarfile.open(package, "w:gz") as tar:
        info = tarfile.TarInfo("PMC1000001/fig-0.jpg")
        info.size = len(figure)
        tar.addfile(info, io.BytesIO(figure))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:  # GitHub's archive layout: one top folder
        where = "roco-dataset-main/data/train/radiology"
        z.writestr(
            f"{where}/dlinks.txt",
            f"ROCO_00001\twget -r {url} -P /path/to/Dir\tfig-0.jpg\n",
        )
        z.writestr(f"{where}/captions.txt", "ROCO_00001\t CT of the chest\n")
    return buffer.getvalue()


def test_roco_an_archive_url_answering_html_is_never_cached(tmp_path):
    srv, dest = tmp_path / "srv", tmp_path / "roco"
    archive = _roco_server_tree(srv)
    (srv / "wrong").mkdir()
    (srv / "wrong" / "roco.zip").write_bytes(
        HTML
    )  # a URL that answers a web page with HTTP 200
    (srv / "right").mkdir()
    (srv / "right" / "roco.zip").write_bytes(archive)
    (srv / "other.zip").write_bytes(
        _zip_bytes(IMAGES)
    )  # a zip, but not of the repository
    with LoopbackServer(srv) as server:
        base = server.url("pub/pmc/")
        with pytest.raises(
            itd.PairDataError,
            match=r"downloaded from .*wrong/roco\.zip is not a zip archive",
        ):
            itd.download_roco(
                dest, repo=server.url("wrong/roco.zip"), package_base_url=base
            )
        assert not [p.name for p in dest.iterdir() if p.is_file()], (
            "the failed download was kept"
        )
        with pytest.raises(
            itd.PairDataError, match=r"not of the roco-dataset repository"
        ):
            itd.download_roco(dest, repo=server.url("other.zip"), package_base_url=base)
        itd.download_roco(
            dest, repo=server.url("right/roco.zip"), package_base_url=base
        )  # the corrected URL
        assert list(itd.load_roco(dest, "train").caption) == ["CT of the chest"]
        (srv / "wrong" / "roco.zip").write_bytes(
            archive
        )  # the first URL now answers the archive too
        itd.download_roco(
            tmp_path / "roco_b",
            repo=server.url("wrong/roco.zip"),
            package_base_url=base,
        )
        requests = server.requests
        itd.download_roco(
            dest, repo=server.url("right/roco.zip"), package_base_url=base
        )
        assert server.requests == requests, (
            "a good archive is cached and its images are not fetched again"
        )


def test_roco_files_that_are_not_utf8_or_not_zip_are_named(tmp_path):
    srv = tmp_path / "srv"
    archive = _roco_server_tree(srv)
    checkout = tmp_path / "checkout" / "data" / "train" / "radiology"
    checkout.mkdir(parents=True)
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        (checkout / "dlinks.txt").write_bytes(
            z.read("roco-dataset-main/data/train/radiology/dlinks.txt")
        )
    (checkout / "captions.txt").write_bytes("ROCO_00001\t Röntgen\n".encode("latin-1"))
    with pytest.raises(itd.PairDataError, match=r"captions\.txt is not UTF-8 text"):
        itd.download_roco(tmp_path / "roco", repo=tmp_path / "checkout")
    (tmp_path / "fake.zip").write_bytes(HTML)
    with pytest.raises(itd.PairDataError, match=r"fake\.zip is not a zip archive"):
        itd.download_roco(tmp_path / "roco", repo=tmp_path / "fake.zip")


# ------------------------------------------------------------------------------------- brain MRI
def _nifti(
    path: Path, affine=None, shape=(12, 12, 10), dtype=np.int16, value=1, nan=0
) -> Path:
    data = np.zeros(shape, dtype=dtype)
    data[2:-2, 2:-2, 2:-2] = value
    if nan:
        data.reshape(-1)[:nan] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _subject(tmp_path: Path, **affines) -> dict[str, Path]:
    return {
        c: _nifti(tmp_path / f"s1-{c}.nii.gz", affines.get(c), value=1 + i)
        for i, c in enumerate(pi.CONTRASTS)
    }


def test_contrasts_whose_affines_differ_are_refused_naming_the_files(tmp_path):
    shifted = np.eye(4)
    shifted[:3, 3] = [30.0, 0.0, 0.0]  # a T2 with its origin 30 mm off
    with pytest.raises(
        ValueError,
        match=r"t2 \(.*s1-t2\.nii\.gz\) is not on the grid of t1.*30\.00 mm apart",
    ):
        pi.load_subject(_subject(tmp_path, t2=shifted))
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])  # a FLAIR with 2 mm voxels, same array shape
    with pytest.raises(
        ValueError,
        match=r"flair \(.*s1-flair\.nii\.gz\).*voxel sizes \[2\.0, 2\.0, 2\.0\]",
    ):
        pi.load_subject(_subject(tmp_path, flair=coarse))
    rounded = np.eye(4)
    rounded[:3, 3] = 1e-4  # header rounding is not another grid
    assert pi.load_subject(_subject(tmp_path, t1c=rounded)).shape == (4, 12, 12, 10)


def test_a_subject_with_nan_voxels_or_an_unreadable_file_is_refused_naming_it(tmp_path):
    paths = _subject(tmp_path)
    _nifti(paths["t1c"], dtype=np.float32, nan=5)
    with pytest.raises(
        ValueError, match=r"t1c volume .*s1-t1c\.nii\.gz has 5 NaN or infinite voxel"
    ):
        pi.load_subject(paths)
    _nifti(paths["t1c"])
    paths["t2"].write_bytes(b"\x1f\x8b" + b"not a gzip stream at all")
    with pytest.raises(
        ValueError, match=r"t2 volume .*s1-t2\.nii\.gz is not a readable NIfTI file"
    ):
        pi.load_subject(paths)


def _one_file_manifest(tmp_path: Path, path: Path):
    folder = tmp_path / "repo" / "data_manifests"
    folder.mkdir(parents=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    raw = {
        "name": "nan",
        "title": "t",
        "licence": "l",
        "source": "s",
        "citation": "c",
        "spatial_dims": 3,
        "format": "nifti",
        "files": {
            "s1/t1": {
                "filename": path.name,
                "image_size": 16,
                "local": str(path),
                "sha256": digest,
            }
        },
    }
    (folder / "nan.yaml").write_text(yaml.safe_dump(raw))
    return load_manifest(folder / "nan.yaml")


def test_a_verified_volume_with_nan_voxels_is_refused_not_emptied(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MEDVAE_DATA_ROOT", str(tmp_path))
    path = _nifti(
        tmp_path / "s1-t1.nii.gz",
        shape=(16, 16, 16),
        dtype=np.float32,
        value=100.0,
        nan=64,
    )
    manifest = _one_file_manifest(
        tmp_path, path
    )  # the checksum matches: the file itself holds the NaNs
    with pytest.raises(
        ValueError, match=r"s1-t1\.nii\.gz \(s1/t1\) has 64 NaN or infinite voxel"
    ):
        medvae_3d.load_brain_volume("s1", "t1", spacing=1, factor=4, manifest=manifest)


def test_nan_volumes_and_scores_do_not_pass_silently():
    volume = torch.rand(1, 1, 8, 8, 8)
    medvae_3d.check_volume(volume, 4)  # a good volume passes
    volume[0, 0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite voxel"):
        medvae_3d.check_volume(volume, 4)
    target = torch.rand(2, 1, 16, 16)
    mask = torch.ones(2, 1, 16, 16)
    pred = target.clone()
    pred[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="prediction has 1 NaN"):
        pi.masked_psnr(pred, target, mask)
    assert torch.isfinite(
        pi.masked_psnr((target + 0.01).clamp(0, 1), target, mask)
    ).all()


# ----------------------------------------------------------------------------------- student copy
def _solution_code_cells(nb) -> list[int]:
    """Indices of code cells between a solution's start and end markers (found from the markers)."""
    inside, found = False, []
    for i, cell in enumerate(markup.myst_notebook(nb).cells):
        inside = inside or "{solution-start}" in cell.source
        if inside and cell.cell_type == "code":
            found.append(i)
        inside = inside and "{solution-end}" not in cell.source
    return found


@pytest.mark.parametrize("tags", [[], ["Solution"], ["solutions"], ["hide-input"]])
def test_a_solution_cell_that_lost_its_tag_does_not_reach_the_student_copy(tags):
    nb = nbformat.read(REPO / "notebooks" / "01_data_prep.ipynb", as_version=4)
    solutions = _solution_code_cells(nb)
    assert solutions, "chapter 1 has solution code cells"
    for i in (
        solutions
    ):  # the marker cells keep their tag; the code cells lose or misspell it
        nb.cells[i].metadata["tags"] = list(tags)
    copy = student_copy.student_notebook(nb, "01_data_prep.ipynb")
    text = "\n".join(c.source for c in copy.cells)
    leaked = [
        nb.cells[i].source.splitlines()[0]
        for i in solutions
        if nb.cells[i].source in text
    ]
    assert not leaked, f"solution code in the student copy: {leaked}"
    original = student_copy.student_notebook(
        nbformat.read(REPO / "notebooks" / "01_data_prep.ipynb", as_version=4)
    )
    assert [c.source for c in copy.cells] == [c.source for c in original.cells]


def test_an_untagged_pair_of_markers_is_removed_with_everything_between():
    start = nbformat.v4.new_markdown_cell(
        "```{solution-start} ex-99-1\n:class: dropdown\n```"
    )
    end = nbformat.v4.new_markdown_cell("```{solution-end}\n```")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("Task."),
        start,
        nbformat.v4.new_code_cell("answer = secret_solution()"),
        nbformat.v4.new_markdown_cell("Discussion of the answer."),
        end,
        nbformat.v4.new_code_cell("exercises.check_99_1(answer)"),
    ]
    copy = student_copy.student_notebook(nb)
    assert [c.source for c in copy.cells] == [
        "Task.",
        student_copy.PLACEHOLDER,
        "exercises.check_99_1(answer)",
    ]


# ---------------------------------------------------------------------------------- checkpoints
_KILLED_WRITER = """
import sys, time, torch
from medvae_lib import training

def stuck_save(obj, f):  # writes part of the checkpoint, then hangs until it is killed
    f.write(b"half a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(600)

torch.save = stuck_save
training.save_checkpoint(sys.argv[1], 1, {"m": torch.nn.Linear(2, 2)}, {})
"""


def _writer(path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "writing"
    return proc


def test_temporary_checkpoints_of_killed_writers_are_removed_when_the_folder_is_locked(
    tmp_path, capsys
):
    path = tmp_path / CHECKPOINT_NAME
    writers = [_writer(path) for _ in range(3)]
    for proc in writers[:2]:  # two runs killed in the middle of a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert len(list(tmp_path.glob(".*.tmp"))) == 3, (
        "each writer has a temporary file of its own"
    )
    try:
        with RunLock(tmp_path):
            left = list(tmp_path.glob(".*.tmp"))
            assert len(left) == 1 and str(writers[2].pid) in left[0].name, (
                "only the living writer's file stays"
            )
    finally:
        writers[2].send_signal(signal.SIGKILL)
        writers[2].wait(30)
    assert "removed 2 temporary checkpoint file(s)" in capsys.readouterr().out
    with RunLock(tmp_path):
        assert not list(tmp_path.glob(".*.tmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
