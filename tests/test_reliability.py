"""Regression tests for the failure cases of a hostile-but-realistic probe of medvae_lib: lost or corrupt
checkpoints, files outside the data folders, silent wrong results, untyped settings, flaky downloads."""

import os
import subprocess
import sys

import helpers
import numpy as np
import pytest
import torch
from helpers import HEADER, REPO, SHA, LoopbackServer

from medvae_lib import medvae_stage1
from medvae_lib.data import (
    ManifestError,
    NetworkError,
    fetch,
    load_manifest,
    load_medmnist_npz,
)
from medvae_lib.data_prep import prepare_splits
from medvae_lib.medvae_stage1 import Stage1Config, Stage1Trainer
from medvae_lib.metrics import ms_ssim, psnr
from medvae_lib.training import (
    CHECKPOINT_NAME,
    CheckpointWriteError,
    RunLock,
    read_checkpoint,
    save_checkpoint,
    settings_for,
)


@pytest.fixture(scope="module")
def images(manifest):
    return prepare_splits(manifest, "ci", 32, n={"train": 32})["train"][0]


def tiny(steps, **kw):
    return helpers.tiny(steps, **{"adv_start": 1, **kw})


# -- 1. no checkpoint is lost --------------------------------------------------------------------------
def test_a_checkpoint_with_other_settings_is_replaced_only_when_asked(images, tmp_path):
    Stage1Trainer(tiny(2, lr=1e-3)).fit(images, tmp_path)  # e.g. a long full-mode run
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(FileExistsError, match="other settings .*pass overwrite=True"):
        Stage1Trainer(tiny(1)).fit(images, tmp_path, resume=False)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    Stage1Trainer(tiny(1)).fit(images, tmp_path, resume=False, overwrite=True)
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 1
    # the same settings and data: starting afresh over one's own checkpoint needs no flag ...
    Stage1Trainer(tiny(2)).fit(images, tmp_path, resume=False)
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 2
    # ... unless it holds more progress than the new run will reach
    with pytest.raises(
        FileExistsError, match="holds 2 steps, more than the 1 of this run"
    ):
        Stage1Trainer(tiny(1)).fit(images, tmp_path, resume=False)
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 2


def test_resuming_onto_other_settings_is_refused_unless_overwrite(images, tmp_path):
    Stage1Trainer(tiny(2)).fit(images, tmp_path)
    with pytest.raises(
        FileExistsError, match="other settings.*overwrite=True to start afresh"
    ):
        Stage1Trainer(tiny(3, lr=1e-3)).fit(images, tmp_path, resume=True)
    fresh = Stage1Trainer(tiny(3, lr=1e-3))
    fresh.fit(images, tmp_path, resume=True, overwrite=True)
    assert [h["step"] for h in fresh.history][0] == 0, (
        "overwrite=True starts afresh instead of loading"
    )
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["extra"]["config"]["lr"] == 1e-3


def test_checkpoints_get_ordinary_file_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = save_checkpoint(
        tmp_path / CHECKPOINT_NAME, 1, {"m": torch.nn.Linear(2, 2)}, {}
    )
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_file_system_without_locks_warns_and_goes_on(images, tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="continuing without a lock"):
        Stage1Trainer(tiny(1)).fit(images, tmp_path)
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 1


# -- 2. concurrent writers -----------------------------------------------------------------------------
_WRITER = """
import sys, torch
from medvae_lib.training import save_checkpoint
model = torch.nn.Linear(200, 200)
for i in range(15):
    save_checkpoint(sys.argv[1], i, {"m": model}, {}, {"writer": sys.argv[2]})
"""


def test_two_processes_saving_to_one_folder_neither_crash_nor_corrupt(tmp_path):
    target = tmp_path / CHECKPOINT_NAME
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target), w],
            env=env,
            stderr=subprocess.PIPE,
        )
        for w in "ab"
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert read_checkpoint(target)["extra"]["writer"] in ("a", "b")
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME], (
        "no temporary files may be left"
    )


def test_a_run_folder_is_locked_while_a_run_trains_there(images, tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RuntimeError, match="another run is training in"):
            Stage1Trainer(tiny(1)).fit(images, tmp_path)
    Stage1Trainer(tiny(1)).fit(images, tmp_path)  # released


def test_a_failed_write_leaves_the_old_checkpoint_and_no_temporary_file(
    tmp_path, monkeypatch
):
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, 1, {"m": model}, {})

    def disk_full(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0"
        )

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(
        CheckpointWriteError, match=f"could not write checkpoint {path}"
    ):
        save_checkpoint(path, 2, {"m": model}, {})
    monkeypatch.undo()
    assert read_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]


# -- 3. non-finite values ------------------------------------------------------------------------------
def test_checkpoints_with_non_finite_weights_or_negative_steps_are_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", 3, {"m": model}, {})
    with pytest.raises(ValueError, match=r"non-finite weights in m: \['weight'\]"):
        read_checkpoint(tmp_path / "nan.pt")
    save_checkpoint(tmp_path / "neg.pt", -1, {"m": torch.nn.Linear(3, 2)}, {})
    with pytest.raises(ValueError, match="records step -1"):
        read_checkpoint(tmp_path / "neg.pt")


def test_metrics_refuse_non_finite_images():
    x = torch.rand(2, 1, 32, 32)
    y = x.clone()
    y[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="1 prediction image"):
        psnr(y, x)
    with pytest.raises(ValueError, match="1 target image"):
        ms_ssim(x, y, kernel_size=7)


# -- 4. manifests cannot reach outside the data folders ------------------------------------------------
@pytest.mark.parametrize(
    "entry, message",
    [
        (
            "{filename: x.npz, image_size: 28, local: ../../../etc/passwd, sha256: '%s'}"
            % SHA,
            "outside the data folder",
        ),
        (
            "{filename: ../../x.npz, image_size: 28, url: 'https://e.org/x', sha256: '%s'}"
            % SHA,
            "plain file name",
        ),
        (
            "{filename: /tmp/x.npz, image_size: 28, url: 'https://e.org/x', sha256: '%s'}"
            % SHA,
            "plain file name",
        ),
        (
            "{filename: x.npz, image_size: 28, url: 'https://e.org/x', sha265: '%s'}"
            % SHA,
            r"unknown field\(s\) \['sha265'\]",
        ),
        (
            "{filename: x.npz, image_size: 28, url: 'https://e.org/x', sha256: '%s', n_sample: {train: 1}}"
            % SHA,
            r"unknown field\(s\) \['n_sample'\]",
        ),
        (
            "{filename: x.npz, image_size: 28, url: 'https://e.org/x', sha256: 'abc'}",
            "sha256 must be 64 hex digits",
        ),
        (
            "{filename: x.npz, image_size: '28', url: 'https://e.org/x', sha256: '%s'}"
            % SHA,
            "image_size must be int",
        ),
        (
            "{filename: x.npz, image_size: 28, url: 'https://e.org/x', sha256: '%s', n_samples: {train: -1}}"
            % SHA,
            "counts >= 0",
        ),
        (
            "{filename: x.npz, image_size: 28, url: 'ftp://e.org/x', sha256: '%s'}"
            % SHA,
            "must start with https://",
        ),
        (
            "{filename: x.npz, image_size: null, url: 'https://e.org/x', sha256: '%s'}"
            % SHA,
            "lacks 'image_size'",
        ),
    ],
)
def test_manifest_entries_are_checked_against_a_schema(tmp_path, entry, message):
    path = tmp_path / "m.yaml"
    path.write_text(HEADER + f"files:\n  a: {entry}\n")
    with pytest.raises(ManifestError, match=message):
        load_manifest(path)


def test_unknown_top_level_fields_and_bad_dims_are_errors(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(HEADER + "licenses: x\nfiles: {}\n")
    with pytest.raises(ManifestError, match=r"unknown field\(s\) \['licenses'\]"):
        load_manifest(path)
    path.write_text(
        HEADER.replace("spatial_dims: 2", "spatial_dims: 4")
        + "files: {a: {filename: x, image_size: 1, url: 'https://e', md5: '%s'}}\n"
        % ("a" * 32)
    )
    with pytest.raises(ManifestError, match="spatial_dims must be 2 or 3"):
        load_manifest(path)


def test_the_real_manifest_passes_the_schema():
    manifest = load_manifest("pneumoniamnist")
    assert manifest.file("ci").local.is_relative_to(
        (REPO.parent / "shared" / "data").resolve()
    )


# -- 6. inputs are checked up front --------------------------------------------------------------------
def _npz(path, **changes):
    rng = np.random.default_rng(0)
    arrays = {}
    for s in ("train", "val", "test"):
        arrays[f"{s}_images"] = rng.integers(0, 255, (4, 8, 8), dtype=np.uint8)
        arrays[f"{s}_labels"] = np.array([[0], [1], [0], [1]])
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def test_npz_inputs_are_checked_with_the_file_and_split_named(tmp_path):
    with pytest.raises(ValueError, match="train_labels must be whole class numbers"):
        load_medmnist_npz(
            _npz(
                tmp_path / "f.npz", train_labels=np.array([[0.7], [1.7], [0.0], [1.0]])
            )
        )
    with pytest.raises(ValueError, match="the val split is empty"):
        load_medmnist_npz(
            _npz(
                tmp_path / "e.npz",
                val_images=np.zeros((0, 8, 8), np.uint8),
                val_labels=np.zeros((0, 1)),
            )
        )
    rgb = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(
        ValueError,
        match=r"test_images have shape \(8, 8, 3\) per image, the manifest says \(8, 8\)",
    ):
        load_medmnist_npz(
            _npz(tmp_path / "rgb.npz", test_images=rgb), image_size=8, spatial_dims=2
        )
    with pytest.raises(
        ValueError, match=r"the manifest says \(8, 8, 8\)"
    ):  # a manifest saying 3D for 2D data
        load_medmnist_npz(_npz(tmp_path / "d.npz"), image_size=8, spatial_dims=3)
    assert load_medmnist_npz(
        _npz(tmp_path / "ok.npz", train_labels=np.array([[0.0], [1.0], [0.0], [1.0]]))
    )["train"].labels.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize(
    "content", [b"", b"PK\x03\x04 truncated", b"\x80\x04\x95 pickled", b"just text"]
)
def test_unreadable_files_get_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.npz is not a readable .npz file"):
        load_medmnist_npz(path)


def test_a_truncated_npz_names_the_file(tmp_path):
    good = _npz(tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        load_medmnist_npz(tmp_path / "cut.npz")


# -- 5. resume only onto the same data; the refusal happens before anything is loaded ------------------
def test_a_refused_resume_leaves_the_trainer_untouched(images, tmp_path):
    Stage1Trainer(tiny(2)).fit(images, tmp_path)
    other = Stage1Trainer(tiny(3, kl_weight=0.5))
    before = {k: v.clone() for k, v in other.autoencoder.state_dict().items()}
    with pytest.raises(ValueError, match="other settings"):
        other.load(tmp_path / CHECKPOINT_NAME)
    assert all(
        torch.equal(v, before[k]) for k, v in other.autoencoder.state_dict().items()
    )
    resumed = Stage1Trainer(
        tiny(3, log_every=2)
    )  # a harmless setting does not block a resume
    resumed.fit(images, tmp_path)
    assert resumed.step == 3
    with pytest.raises(FileExistsError, match="other data"):
        Stage1Trainer(tiny(4)).fit(images[:16], tmp_path)


# -- 7. settings are typed -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        ({"adv_weight": "a tenth"}, "'adv_weight' must be a finite number"),
        ({"resume": "no"}, "'resume' must be True or False"),
        ({"n_train": 10.5}, "'n_train' must be None or an integer"),
        ({"steps": 10.5}, "'steps' must be an integer"),
        ({"width": 16.0}, "'width' must be a string or an integer"),
    ],
)
def test_settings_overrides_must_have_the_right_type(override, message):
    with pytest.raises(TypeError, match=message):
        settings_for(medvae_stage1.MODES, "ci", override)


def test_typed_overrides_are_accepted_and_numeric_strings_parsed():
    settings = settings_for(
        medvae_stage1.MODES,
        "ci",
        {"lr": 1, "width": "full", "resume": True, "n_train": 100},
    )
    assert settings["lr"] == 1 and settings["width"] == "full"
    # YAML 1.1 (papermill -y "overrides: {lr: 1e-4}") reads 1e-4 as a string
    parsed = settings_for(
        medvae_stage1.MODES,
        "ci",
        {"lr": "1e-4", "adv_weight": "0.1", "steps": "700", "n_train": "100"},
    )
    assert (parsed["lr"], parsed["adv_weight"], parsed["steps"], parsed["n_train"]) == (
        1e-4,
        0.1,
        700,
        100,
    )
    assert type(parsed["steps"]) is int
    with pytest.raises(ValueError, match="'n_train' must be None or a count"):
        settings_for(medvae_stage1.MODES, "ci", {"n_train": -1})


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"lr": -1.0}, ValueError, "lr must be positive"),
        ({"steps": 10.5}, TypeError, "steps must be an integer"),
        ({"kl_weight": float("nan")}, TypeError, "kl_weight must be a finite number"),
        ({"log_every": 0}, ValueError, "log_every must be at least 1"),
        ({"adv_weight": "0.1"}, TypeError, "adv_weight must be a finite number"),
        ({"adaptive_adv": "yes"}, TypeError, "adaptive_adv must be True or False"),
        ({"perceptual": "lpips"}, ValueError, "unknown perceptual loss"),
    ],
)
def test_stage1_config_checks_types_and_ranges(change, error, message):
    with pytest.raises(error, match=message):
        Stage1Config(**change)


def test_fit_takes_only_booleans_for_resume(images, tmp_path):
    with pytest.raises(TypeError, match="resume and overwrite must be True or False"):
        Stage1Trainer(tiny(1)).fit(images, tmp_path, resume="no")


# -- 8. downloads --------------------------------------------------------------------------------------
def test_downloads_retry_transient_failures(manifest, ci_file, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "pneumoniamnist.npz").write_bytes(ci_file.read_bytes())
    with LoopbackServer(served, fail=2) as server:
        path = fetch(
            manifest,
            "ci",
            cache_dir=tmp_path / "cache",
            url=server.url("pneumoniamnist.npz"),
        )
    assert path.is_file() and server.requests == 3


def test_network_errors_are_reported_as_network_errors_and_leave_nothing(
    manifest, tmp_path
):
    served = tmp_path / "served"
    served.mkdir()
    cache = tmp_path / "cache"
    with LoopbackServer(served) as server:
        with pytest.raises(
            NetworkError, match="HTTP 404"
        ):  # a typo in the URL: not a checksum problem
            fetch(manifest, "ci", cache_dir=cache, url=server.url("typo.npz"))
        assert server.requests == 1, "a 404 is not retried"
    with pytest.raises(NetworkError, match="could not download"):
        fetch(
            manifest,
            "ci",
            cache_dir=cache,
            url=server.url("pneumoniamnist.npz"),
            retries=2,
        )  # server is gone
    with pytest.raises(
        NetworkError, match="check the URL"
    ):  # malformed, not a checksum problem
        fetch(manifest, "ci", cache_dir=cache, url="http://exa mple.org:x/f")
    assert not cache.exists() or not any(cache.iterdir())


def test_a_list_stands_for_a_tuple_setting_as_papermill_passes_it():
    from medvae_lib import contrastive_benchmark as cb

    settings = settings_for(cb.MODES, "full", {"seeds": [0], "extra_train_sets": []})
    assert settings["seeds"] == (0,) and settings["extra_train_sets"] == ()
    with pytest.raises(TypeError, match="'seeds' must be"):
        settings_for(cb.MODES, "full", {"seeds": "(0,)"})
