"""Chapter 5's library (medvae_lib.medvae_3d): inflation, the slice-wise losses, the 3D trainer, sliding-window
inference, the checks on volumes and files, and the downstream helpers. Tiny models on small random volumes,
and the real brain MRI files only where reading them is what is tested."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from medvae_lib import medvae_3d
from medvae_lib.medvae_3d import (
    SliceDiscriminator,
    SliceWise,
    Stage1Config3D,
    Stage1Trainer3D,
    axis_slices,
    check_volume,
    ct_to_unit,
    fit_window,
    inflate_autoencoder,
    inflate_state_dict,
    reconstruct_volume,
    twin_2d_model,
)
from medvae_lib.models import build_autoencoder

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "brain_mri"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def trained_like_2d(seed: int = 0):
    """A 2D model with random (not default) group-norm affines and biases, so that nothing passes by accident."""
    torch.manual_seed(seed)
    model = build_autoencoder("medvae_4_1_2d", width=8)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def test_inflated_encoder_reproduces_the_2d_encoder_on_identical_slices():
    m2 = trained_like_2d()
    m3 = inflate_autoencoder(m2, "medvae_4_1_3d", 8).eval()
    image = torch.rand(3, 1, 16, 16) * 2 - 1
    volume = image[..., None].expand(-1, -1, -1, -1, 12).contiguous()
    with torch.no_grad():
        mu2, sigma2 = m2.encode(image)
        mu3, sigma3 = m3.encode(volume)
        dec2, dec3 = m2.decode(mu2), m3.decode(mu3)
    assert mu3.shape == (3, 1, 4, 4, 3)
    torch.testing.assert_close(mu3, mu2[..., None].expand_as(mu3), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        sigma3, sigma2[..., None].expand_as(sigma3), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        dec3, dec2[..., None].expand_as(dec3), atol=1e-5, rtol=1e-4
    )
    # on a volume whose slices differ, it is not the 2D model slice by slice
    varied = torch.rand(1, 1, 16, 16, 8) * 2 - 1
    with torch.no_grad():
        per_slice = torch.stack([m2.encode(varied[..., k])[0] for k in (3, 7)], -1)
        assert (m3.encode(varied)[0] - per_slice).abs().max() > 1e-3


def test_inflation_puts_each_kernel_in_the_middle_plane_and_refuses_other_layouts():
    m2 = trained_like_2d()
    state = inflate_state_dict(
        m2.state_dict(), build_autoencoder("medvae_4_1_3d", width=8).state_dict()
    )
    name = "encoder.conv_in.weight"
    kernel = state[name]
    assert kernel.shape[-1] == 3 and torch.equal(kernel[..., 1], m2.state_dict()[name])
    assert not kernel[..., 0].any() and not kernel[..., 2].any()
    with pytest.raises(ValueError, match="layouts differ"):
        inflate_state_dict(
            m2.state_dict(), build_autoencoder("medvae_8_1_3d", width=8).state_dict()
        )
    with pytest.raises(ValueError, match="cannot be inflated"):
        inflate_state_dict(
            m2.state_dict(), build_autoencoder("medvae_4_1_3d", width=16).state_dict()
        )
    assert twin_2d_model("medvae_8_1_3d") == "medvae_8_1_2d"
    with pytest.raises(ValueError, match="not a 3D model"):
        twin_2d_model("medvae_4_1_2d")


def test_repeated_inflation_spreads_each_kernel_and_reads_every_slice():
    m2 = trained_like_2d()
    empty = build_autoencoder("medvae_4_1_3d", width=8).state_dict()
    state = inflate_state_dict(m2.state_dict(), empty, kernel="repeat")
    name = "encoder.conv_in.weight"
    for k in range(3):
        torch.testing.assert_close(state[name][..., k], m2.state_dict()[name] / 3)
    with pytest.raises(ValueError, match="kernel must be one of"):
        inflate_state_dict(m2.state_dict(), empty, kernel="middle")
    # which slice phases move the latent: one in four when centred, all when repeated
    x = torch.rand(4, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    moves = {}
    for kernel in ("centre", "repeat"):
        m3 = inflate_autoencoder(m2, "medvae_4_1_3d", 8, kernel=kernel).eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            base = m3.encode(x * 2 - 1)[0]
            moves[kernel] = []
            for phase in range(4):
                changed = x.clone()
                noise = torch.rand(changed[..., phase::4].shape, generator=g)
                changed[..., phase::4] = noise
                latent = m3.encode(changed * 2 - 1)[0]
                moves[kernel].append((latent - base).abs().mean().item())
    centre, repeat = moves["centre"], moves["repeat"]
    assert max(centre[:3]) < 0.2 * centre[3]  # the last phase of four is read
    assert min(repeat) > 0.5 * max(repeat)  # every phase is read about equally


def test_axis_slices_takes_every_slice_along_each_axis_once():
    v = torch.arange(2 * 4**3, dtype=torch.float32).reshape(2, 1, 4, 4, 4)
    s = axis_slices(v)
    assert s.shape == (2 * 12, 1, 4, 4)
    assert torch.equal(s[0, 0], v[0, 0, 0]) and torch.equal(
        s[1, 0], v[1, 0, 0]
    )  # volume varies fastest
    assert torch.equal(s[8, 0], v[0, 0, :, 0, :]) and torch.equal(
        s[16, 0], v[0, 0, :, :, 0]
    )
    assert s.sum() == 3 * v.sum()
    with pytest.raises(ValueError, match="cubic"):
        axis_slices(torch.zeros(1, 1, 4, 4, 6))


def test_slice_losses_average_over_slices_and_keep_one_logit_per_volume():
    loss = SliceWise(torch.nn.L1Loss())
    a, b = torch.zeros(2, 1, 4, 4, 4), torch.ones(2, 1, 4, 4, 4)
    b[0, 0, 0] = 0  # one slice of one volume right
    assert loss(b, a).item() == pytest.approx(torch.nn.functional.l1_loss(b, a).item())

    class MeanNet(torch.nn.Module):
        def forward(self, x):
            return [x.mean((1, 2, 3))[:, None, None, None]]

    logits = SliceDiscriminator(MeanNet())(
        torch.stack([torch.zeros(1, 4, 4, 4), torch.ones(1, 4, 4, 4)])
    )[-1]
    assert logits.shape == (2, 1) and logits[:, 0].tolist() == [0.0, 1.0]
    torch.manual_seed(0)
    some = SliceDiscriminator(MeanNet(), slices_per_axis=2)(torch.ones(3, 1, 4, 4, 4))[
        -1
    ]
    assert some.shape == (3, 1)
    with pytest.raises(ValueError, match="slices_per_axis"):
        SliceDiscriminator(MeanNet(), slices_per_axis=0)


def tiny_config(**kw):
    base = dict(
        model="medvae_4_1_3d",
        width=8,
        steps=3,
        batch_size=2,
        adv_start=1,
        adv_weight=0.1,
        disc_layers=1,
        disc_channels=8,
        disc_slices=2,
        log_every=1,
    )
    return Stage1Config3D(**{**base, **kw})


def test_3d_trainer_starts_inflated_trains_with_both_terms_and_checks_its_inputs():
    m2 = trained_like_2d()
    volumes = torch.rand(6, 1, 8, 8, 8)
    trainer = Stage1Trainer3D(tiny_config(), m2)
    start = trainer.autoencoder.encoder.conv_in.weight.detach().clone()
    assert torch.equal(start[..., 1], m2.encoder.conv_in.weight)
    history = trainer.fit(volumes)
    assert len(history) == 3 and "adv_g" in history[-1] and "d_loss" in history[-1]
    assert not torch.equal(trainer.autoencoder.encoder.conv_in.weight, start)
    assert all(np.isfinite(v) for row in history for v in row.values())
    with pytest.raises(ValueError, match="divisible"):
        trainer.fit(torch.rand(4, 1, 8, 8, 6))
    with pytest.raises(ValueError, match="one channel"):
        Stage1Trainer3D(tiny_config(), m2).fit(torch.rand(4, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="needs the 2D autoencoder"):
        Stage1Trainer3D(tiny_config())
    with pytest.raises(ValueError, match="3D model"):
        tiny_config(model="medvae_4_1_2d")
    with pytest.raises(ValueError, match="init_from"):
        Stage1Trainer3D(tiny_config(init_from="0" * 64), m2)
    scratch = Stage1Trainer3D(tiny_config(init="scratch"))
    assert scratch.autoencoder.encoder.conv_in.weight[..., 0].abs().sum() > 0


def test_check_volume_names_layout_divisibility_and_orientation_problems():
    with pytest.raises(ValueError, match="no batch and channel"):
        check_volume(torch.zeros(8, 8, 8))
    with pytest.raises(ValueError, match="add the batch axis"):
        check_volume(torch.zeros(1, 8, 8, 8))
    with pytest.raises(ValueError, match="channels last"):
        check_volume(torch.zeros(1, 8, 8, 8, 1))
    with pytest.raises(ValueError, match="divisible by the factor 4"):
        check_volume(torch.zeros(1, 1, 8, 8, 10), 4)
    from monai.data import MetaTensor

    lps = MetaTensor(
        torch.zeros(1, 1, 8, 8, 8),
        affine=torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0])),
    )
    with pytest.raises(ValueError, match="LPS orientation"):
        check_volume(lps, 4)
    check_volume(MetaTensor(torch.zeros(1, 1, 8, 8, 8), affine=torch.eye(4)), 4)
    padded = medvae_3d.pad_to_multiple(torch.ones(1, 1, 9, 8, 5), 4)
    assert padded.shape == (1, 1, 12, 8, 8) and padded.sum() == 9 * 8 * 5


def smooth_volume(side=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.interpolate(
        torch.rand(1, 1, 4, 4, 4, generator=g), size=(side,) * 3, mode="trilinear"
    )
    return v.clamp(0, 1)


def test_sliding_window_and_whole_volume_reconstructions_agree():
    torch.manual_seed(0)
    model = build_autoencoder("medvae_4_1_3d", width=8).eval()
    volume = smooth_volume(32)
    whole = reconstruct_volume(model, volume, 4, "whole")
    one_window = reconstruct_volume(model, volume, 4, "sliding", roi=32)
    torch.testing.assert_close(
        one_window, whole, atol=1e-5, rtol=1e-4
    )  # one window is the whole volume
    # 24^3 windows every 12 voxels: the group norms and the middle self-attention of an
    # untrained model see each window only, so the outputs differ, but far less than two
    # different models do (correlation about 0.6 against about 0)
    sliding = reconstruct_volume(model, volume, 4, "sliding", roi=24, overlap=0.5)
    assert sliding.shape == whole.shape
    assert (
        torch.corrcoef(torch.stack([sliding.flatten(), whole.flatten()]))[0, 1] > 0.45
    )
    torch.manual_seed(1)
    other = reconstruct_volume(
        build_autoencoder("medvae_4_1_3d", width=8).eval(), volume, 4, "whole"
    )
    assert (sliding - whole).abs().mean() < 0.5 * (other - whole).abs().mean()
    with pytest.raises(ValueError, match="multiple of 4"):
        reconstruct_volume(model, volume, 4, "sliding", roi=16, overlap=0.3)
    with pytest.raises(ValueError, match="divisible by the factor"):
        reconstruct_volume(model, volume[..., :30], 4, "whole")
    with pytest.raises(ValueError, match="'whole' or 'sliding'"):
        reconstruct_volume(model, volume, 4, "tiled")


def test_a_window_larger_than_the_volume_shrinks_onto_the_latent_grid(monkeypatch):
    # full mode's case: 160-voxel windows, overlap 0.25, brains 132 voxels deep; the
    # shrunk window must keep its step a multiple of the factor (132 -> step 99 is not)
    assert fit_window(160, 132, 0.25, 4) == 128
    assert fit_window(64, 132, 0.25, 4) == 64  # a window that fits is kept
    assert fit_window(40, 33, 0.25, 1) == 33  # latent windows: any side
    torch.manual_seed(0)
    model = build_autoencoder("medvae_4_1_3d", width=8).eval()
    volume = smooth_volume(40)[..., :36, :, :].contiguous()  # 36 -> step 27: off-grid
    windows = []
    inferer = medvae_3d.inference._inferer

    def recording(roi, *args, **kwargs):
        windows.append(roi)
        return inferer(roi, *args, **kwargs)

    monkeypatch.setattr(medvae_3d.inference, "_inferer", recording)
    out = reconstruct_volume(model, volume, 4, "sliding", roi=64, overlap=0.25)
    assert out.shape == volume.shape
    assert windows == [32, 8], "decoding takes the encoder's window over the factor"
    with pytest.raises(ValueError, match="latent grid"):
        fit_window(4, 4, 0.9, 4)


def test_peak_memory_of_a_sliding_window_is_below_a_whole_pass():
    torch.manual_seed(0)
    model = build_autoencoder("medvae_4_1_3d", width=8).eval()
    volume = smooth_volume(48)
    whole = medvae_3d.peak_memory(model, "medvae_4_1_3d", 8, volume, "whole")
    sliding = medvae_3d.peak_memory(
        model, "medvae_4_1_3d", 8, volume, "sliding", roi=16, overlap=0.25
    )
    assert whole["peak_bytes"] > 0 and sliding["peak_bytes"] < whole["peak_bytes"]
    torch.testing.assert_close(
        whole["reconstruction"],
        reconstruct_volume(model, volume, 4, "whole"),
        atol=1e-5,
        rtol=1e-4,
    )


def test_ct_is_clipped_to_the_medvae_window():
    hu = torch.tensor([-3000.0, -1000.0, 0.0, 1000.0, 3000.0])
    assert ct_to_unit(hu).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_reading_volumes_refuses_corrupt_and_4d_files(tmp_path):
    import nibabel as nib

    truncated = tmp_path / "bad.nii.gz"
    truncated.write_bytes(gzip.compress(b"not a nifti header" * 10)[:40])
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        medvae_3d.read_nifti(truncated)
    four_d = tmp_path / "stack.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), four_d)
    with pytest.raises(ValueError, match="one 3D volume per file"):
        medvae_3d.read_nifti(four_d)
    lps = tmp_path / "lps.nii.gz"
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])), lps)
    image = medvae_3d.read_nifti(lps)
    assert medvae_3d.orientation(image) == "RAS" and image.shape == (1, 4, 5, 6)
    assert torch.equal(
        image[0].as_tensor(),
        torch.as_tensor(data[::-1, ::-1, :].copy()).to(image.dtype),
    )


def test_a_real_brain_volume_is_verified_scaled_and_cropped():
    if not DATA.is_dir():
        pytest.fail(
            f"the brain MRI files are missing at {DATA}; see ../shared/data/README.md"
        )
    v = medvae_3d.load_brain_volume("BraTS-GLI-00001-000", "t1", spacing=4, factor=4)
    assert (
        v.shape[0] == 1
        and all(s % 4 == 0 for s in v.shape[1:])
        and max(v.shape[1:]) < 240 // 4
    )
    assert float(v.min()) == 0.0 and float(v.max()) == pytest.approx(1.0)
    assert 0.3 < float(medvae_3d.foreground(v[0]).float().mean()) < 1.0
    with pytest.raises(ValueError, match="unknown contrast"):
        medvae_3d.load_brain_volume("BraTS-GLI-00001-000", "dwi")
    with pytest.raises(ValueError, match="whole number"):
        medvae_3d.load_brain_volume("BraTS-GLI-00001-000", "t1", spacing=1.5)


def test_patches_are_mostly_brain_and_tiles_cover_without_overlap():
    v = torch.zeros(1, 16, 16, 16)
    v[0, :8] = 0.5 + 0.5 * torch.rand(8, 16, 16)
    p = medvae_3d.random_patches({"a": v}, 20, 8, seed=0, min_foreground=0.5)
    assert p.shape == (20, 1, 8, 8, 8)
    assert all(float((q > 0.01).float().mean()) >= 0.5 for q in p)
    boxes = medvae_3d.tile_boxes(v, 8, min_foreground=0.5)
    assert len(boxes) == 4 and all(b[0].start == 0 for b in boxes)
    assert medvae_3d.tiles(v, boxes).shape == (4, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="smaller than"):
        medvae_3d.random_patches({"a": v}, 2, 32)


def test_the_3d_settings_fit_their_model():
    for mode, s in medvae_3d.MODES.items():
        cfg = medvae_3d.get_config(s["model"])
        assert s["patch"] % cfg.factor == 0 and s["roi"] % cfg.factor == 0, mode
        assert s["tile"] % cfg.factor == 0 and s["val_slab"] >= s["patch"], mode
        assert int(s["roi"] * (1 - s["overlap"])) % cfg.factor == 0, mode
        assert len(s["people"]) == len(set(s["people"])) >= 3 and s["seeds"] >= 2, mode
        assert s["steps"] == max(s["eval_steps"]), mode


# -- leave-one-person-out folds ------------------------------------------------------------------------


def marked_people(people=("a", "b", "c"), shape=(12, 20, 12)):
    """Volumes whose brain voxels carry their person (tenths) and their y index (thousandths), inside a
    zero background, so a patch tells where it came from."""
    out = {}
    for k, person in enumerate(people):
        for contrast in ("t1", "flair"):
            y = torch.arange(shape[1], dtype=torch.float32)[None, :, None].expand(
                *shape
            )
            v = torch.zeros(1, *shape)
            v[0, 2:-2, :, 2:-2] = (0.1 * (k + 1) + 0.001 * y)[2:-2, :, 2:-2]
            out[f"{person}/{contrast}"] = v
    return out


def test_every_person_is_held_out_once_and_never_trains_its_own_fold():
    folds = medvae_3d.person_folds(["a", "b", "c"])
    assert [t for t, _ in folds] == ["a", "b", "c"]
    assert all(t not in train and len(train) == 2 for t, train in folds)
    with pytest.raises(ValueError, match="distinct"):
        medvae_3d.person_folds(["a", "a"])


def test_the_validation_slab_is_disjoint_from_training_and_the_test_person_is_untouched():
    volumes = marked_people()
    train, val = medvae_3d.hold_out_slab({"a/t1": volumes["a/t1"]}, 8)
    assert train["a/t1"].shape == (1, 12, 12, 12) and val["a/t1"].shape == (
        1,
        12,
        8,
        12,
    )
    assert torch.equal(torch.cat([train["a/t1"], val["a/t1"]], 2), volumes["a/t1"])
    with pytest.raises(ValueError, match="does not fit"):
        medvae_3d.hold_out_slab({"a/t1": volumes["a/t1"]}, 20)
    settings = {
        "train_contrasts": ["t1", "flair"],
        "test_contrasts": ["flair"],
        "val_slab": 8,
        "patch": 8,
    }
    data = medvae_3d.fold_data(
        volumes, "b", {**settings, "n_patches": 24, "n_val_patches": 8}, seed=0
    )
    assert list(data["test_volumes"]) == ["b/flair"]
    for key, kept in (
        ("patches", lambda y: y < 12),
        ("val_patches", lambda y: y >= 12),
    ):
        brain = data[key][data[key] > 0]
        person = torch.floor(brain * 10 + 1e-4)  # 1 for a, 2 for b, 3 for c
        assert set(person.unique().tolist()) == {1.0, 3.0}, (
            key
        )  # never b, the test person
        y = torch.round((brain - person / 10) * 1000)
        assert kept(y).all(), key
    with pytest.raises(ValueError, match="not among"):
        medvae_3d.fold_data(
            volumes, "z", {**settings, "n_patches": 4, "n_val_patches": 2}, seed=0
        )


def fake_tiles(shift_by_fold, seeds=(0, 1), n_tiles=6, noise=0.1, seed=0):
    """Tile scores of methods x and y for folds with a known mean difference x - y per fold."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for fold, shift in shift_by_fold.items():
        base = rng.normal(20, 2, n_tiles)
        for s in seeds:
            for method, offset in (("x", shift), ("y", 0.0)):
                values = base + offset + rng.normal(0, noise, n_tiles)
                rows += [
                    {
                        "fold": fold,
                        "seed": s,
                        "method": method,
                        "image": i,
                        "PSNR (dB)": v,
                        "MS-SSIM": v / 30,
                    }
                    for i, v in enumerate(values)
                ]
    return pd.DataFrame(rows)


def test_fold_table_intervals_use_seeds_per_fold_and_people_pooled():
    tiles = fake_tiles({"p1": 1.0, "p2": 1.5, "p3": 0.8})
    table = medvae_3d.fold_table(tiles, [("x", "y")], metrics=("PSNR (dB)",))
    assert list(table.index.get_level_values("fold")) == ["p1", "p2", "p3", "pooled"]
    per_fold = table.loc[("x - y", "PSNR (dB)", "p1")]
    assert per_fold["df"] == 1  # two seeds, one person: a t interval over seeds
    assert per_fold["mean difference"] == pytest.approx(1.0, abs=0.1)
    pooled = table.loc[("x - y", "PSNR (dB)", "pooled")]
    assert pooled["mean difference"] == pytest.approx(1.1, abs=0.1)
    assert pooled["95% CI low"] > 0
    assert medvae_3d.fold_verdict(table, "x - y", "PSNR (dB)").startswith(
        "ahead in every fold and seed"
    )


def test_folds_that_disagree_are_read_as_depending_on_the_person():
    tiles = fake_tiles({"p1": 2.0, "p2": 2.0, "p3": -1.0})
    table = medvae_3d.fold_table(tiles, [("x", "y")], metrics=("PSNR (dB)",))
    assert medvae_3d.fold_verdict(table, "x - y", "PSNR (dB)").startswith(
        "depends on the person"
    )
    same_sign = medvae_3d.fold_table(
        fake_tiles({"p1": 0.02, "p2": 0.01, "p3": 0.03}, noise=1.0), [("x", "y")]
    )
    assert medvae_3d.fold_verdict(same_sign, "x - y", "MS-SSIM").startswith(
        ("not detectable", "depends on the person")
    )


def test_the_settings_search_never_sees_the_test_person(monkeypatch):
    """Every fold's candidates train on the other people and are scored on their slab; the candidate
    with the best validation PSNR at the last step is chosen per fold."""
    import pandas as pd

    volumes = marked_people()
    seen = []

    def fake_train_fold(data, settings, seed, autoencoder_2d, device="cpu", label=""):
        assert "test_volumes" not in data
        seen.append(
            (
                label,
                set(
                    torch.floor(data["patches"][data["patches"] > 0] * 10 + 1e-4)
                    .unique()
                    .tolist()
                ),
            )
        )
        psnr_at_end = 20.0 + 10 * settings["lr"]
        curve = pd.DataFrame(
            [
                {"run": r, "step": s, "PSNR (dB)": psnr_at_end * s / 4, "MS-SSIM": 0.5}
                for r in ("inflated", "scratch")
                for s in (0, 4)
            ]
        )
        return {}, curve

    # settings_search looks train_fold up in the submodule that defines both
    monkeypatch.setattr(medvae_3d.folds, "train_fold", fake_train_fold)
    settings = {
        "people": ["a", "b", "c"],
        "train_contrasts": ["t1", "flair"],
        "test_contrasts": ["t1"],
        "val_slab": 8,
        "patch": 8,
        "n_patches": 12,
        "n_val_patches": 4,
        "lr": 1e-4,
    }
    table, chosen = medvae_3d.settings_search(
        volumes, settings, {"slow": {"lr": 0.1}, "fast": {"lr": 0.3}}, 0, None
    )
    assert chosen == {"a": "fast", "b": "fast", "c": "fast"}
    assert set(table["fold"]) == {"a", "b", "c"} and len(seen) == 6
    for label, people in seen:
        test_person = label.split()[0]
        assert {"a": 1.0, "b": 2.0, "c": 3.0}[test_person] not in people


def _checkpointed_fold(**changes):
    """Settings and data of a tiny fold that checkpoints (chapter 5's resume tests)."""
    from dataclasses import asdict

    settings = {
        **asdict(tiny_config()),
        "ms_ssim_kernel": 3,
        "spacing": 2,
        **changes,
    }
    g = torch.Generator().manual_seed(0)
    data = {
        "patches": torch.rand(6, 1, 16, 16, 16, generator=g),
        "val_patches": torch.rand(2, 1, 16, 16, 16, generator=g),
    }
    return settings, data


def test_a_fold_checkpoints_each_run_and_a_second_call_resumes(tmp_path, monkeypatch):
    m2 = trained_like_2d()
    settings, data = _checkpointed_fold(eval_steps=[3], checkpoint_every=2)
    first, curve = medvae_3d.train_fold(data, settings, 0, m2, "cpu", "p", tmp_path)
    saved = {p.parent.name for p in tmp_path.rglob("checkpoint.pt")}
    assert saved == {"inflated", "scratch"}
    # a second call (a reader's rerun after a disconnect) resumes both runs at their
    # last step instead of training them again
    steps = []
    monkeypatch.setattr(Stage1Trainer3D, "train_step", lambda s, *a: steps.append(a))
    again, curve_again = medvae_3d.train_fold(
        data, settings, 0, m2, "cpu", "p", tmp_path
    )
    assert not steps and all(t.step == 3 for t in again.values())
    last = curve[curve.step == 3].reset_index(drop=True)
    import pandas as pd

    pd.testing.assert_frame_equal(
        curve_again[curve_again.step == 3].reset_index(drop=True), last
    )


def test_a_resumed_fold_reports_the_scores_it_had_before_the_resume(tmp_path):
    m2 = trained_like_2d()
    settings, data = _checkpointed_fold(steps=4, eval_steps=[2, 4], checkpoint_every=1)
    _, curve = medvae_3d.train_fold(data, settings, 0, m2, "cpu", "p", tmp_path)
    # a rerun after a disconnect at the end: both runs resume at step 4, and the
    # curve still has its step-2 scores (not step 4's again), equal to the first
    _, again = medvae_3d.train_fold(data, settings, 0, m2, "cpu", "p", tmp_path)
    import pandas as pd

    assert sorted(again.step) == [0, 0, 2, 2, 4, 4]
    pd.testing.assert_frame_equal(again, curve)
