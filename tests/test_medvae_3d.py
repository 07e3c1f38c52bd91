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
    torch.testing.assert_close(sigma3, sigma2[..., None].expand_as(sigma3), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dec3, dec2[..., None].expand_as(dec3), atol=1e-5, rtol=1e-4)
    # on a volume whose slices differ, it is not the 2D model slice by slice
    varied = torch.rand(1, 1, 16, 16, 8) * 2 - 1
    with torch.no_grad():
        per_slice = torch.stack([m2.encode(varied[..., k])[0] for k in (3, 7)], -1)
        assert (m3.encode(varied)[0] - per_slice).abs().max() > 1e-3


def test_inflation_puts_each_kernel_in_the_middle_plane_and_refuses_other_layouts():
    m2 = trained_like_2d()
    state = inflate_state_dict(m2.state_dict(), build_autoencoder("medvae_4_1_3d", width=8).state_dict())
    name = "encoder.blocks.0.conv.weight"
    kernel = state[name]
    assert kernel.shape[-1] == 3 and torch.equal(kernel[..., 1], m2.state_dict()[name])
    assert not kernel[..., 0].any() and not kernel[..., 2].any()
    with pytest.raises(ValueError, match="layouts differ"):
        inflate_state_dict(m2.state_dict(), build_autoencoder("medvae_8_1_3d", width=8).state_dict())
    with pytest.raises(ValueError, match="cannot be inflated"):
        inflate_state_dict(m2.state_dict(), build_autoencoder("medvae_4_1_3d", width=16).state_dict())
    assert twin_2d_model("medvae_8_1_3d") == "medvae_8_1_2d"
    with pytest.raises(ValueError, match="not a 3D model"):
        twin_2d_model("medvae_4_1_2d")


def test_axis_slices_takes_every_slice_along_each_axis_once():
    v = torch.arange(2 * 4**3, dtype=torch.float32).reshape(2, 1, 4, 4, 4)
    s = axis_slices(v)
    assert s.shape == (2 * 12, 1, 4, 4)
    assert torch.equal(s[0, 0], v[0, 0, 0]) and torch.equal(s[1, 0], v[1, 0, 0])  # volume varies fastest
    assert torch.equal(s[8, 0], v[0, 0, :, 0, :]) and torch.equal(s[16, 0], v[0, 0, :, :, 0])
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

    logits = SliceDiscriminator(MeanNet())(torch.stack([torch.zeros(1, 4, 4, 4), torch.ones(1, 4, 4, 4)]))[-1]
    assert logits.shape == (2, 1) and logits[:, 0].tolist() == [0.0, 1.0]
    torch.manual_seed(0)
    some = SliceDiscriminator(MeanNet(), slices_per_axis=2)(torch.ones(3, 1, 4, 4, 4))[-1]
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
    start = trainer.autoencoder.encoder.blocks[0].conv.weight.detach().clone()
    assert torch.equal(start[..., 1], m2.encoder.blocks[0].conv.weight)
    history = trainer.fit(volumes)
    assert len(history) == 3 and "adv_g" in history[-1] and "d_loss" in history[-1]
    assert not torch.equal(trainer.autoencoder.encoder.blocks[0].conv.weight, start)
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
    assert scratch.autoencoder.encoder.blocks[0].conv.weight[..., 0].abs().sum() > 0


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

    lps = MetaTensor(torch.zeros(1, 1, 8, 8, 8), affine=torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0])))
    with pytest.raises(ValueError, match="LPS orientation"):
        check_volume(lps, 4)
    check_volume(MetaTensor(torch.zeros(1, 1, 8, 8, 8), affine=torch.eye(4)), 4)
    padded = medvae_3d.pad_to_multiple(torch.ones(1, 1, 9, 8, 5), 4)
    assert padded.shape == (1, 1, 12, 8, 8) and padded.sum() == 9 * 8 * 5


def smooth_volume(side=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.interpolate(torch.rand(1, 1, 4, 4, 4, generator=g), size=(side,) * 3, mode="trilinear")
    return v.clamp(0, 1)


def test_sliding_window_and_whole_volume_reconstructions_agree():
    torch.manual_seed(0)
    model = build_autoencoder("medvae_4_1_3d", width=8).eval()
    volume = smooth_volume(32)
    whole = reconstruct_volume(model, volume, 4, "whole")
    one_window = reconstruct_volume(model, volume, 4, "sliding", roi=32)
    torch.testing.assert_close(one_window, whole, atol=1e-5, rtol=1e-4)  # one window is the whole volume
    # 24^3 windows every 12 voxels: the group norms of an untrained model see each window's statistics, so
    # the outputs differ, but far less than two different models do
    sliding = reconstruct_volume(model, volume, 4, "sliding", roi=24, overlap=0.5)
    assert sliding.shape == whole.shape
    assert torch.corrcoef(torch.stack([sliding.flatten(), whole.flatten()]))[0, 1] > 0.7
    torch.manual_seed(1)
    other = reconstruct_volume(build_autoencoder("medvae_4_1_3d", width=8).eval(), volume, 4, "whole")
    assert (sliding - whole).abs().mean() < 0.5 * (other - whole).abs().mean()
    with pytest.raises(ValueError, match="multiple of 4"):
        reconstruct_volume(model, volume, 4, "sliding", roi=16, overlap=0.3)
    with pytest.raises(ValueError, match="divisible by the factor"):
        reconstruct_volume(model, volume[..., :30], 4, "whole")
    with pytest.raises(ValueError, match="'whole' or 'sliding'"):
        reconstruct_volume(model, volume, 4, "tiled")


def test_peak_memory_of_a_sliding_window_is_below_a_whole_pass():
    torch.manual_seed(0)
    model = build_autoencoder("medvae_4_1_3d", width=8).eval()
    volume = smooth_volume(48)
    whole = medvae_3d.peak_memory(model, "medvae_4_1_3d", 8, volume, "whole")
    sliding = medvae_3d.peak_memory(model, "medvae_4_1_3d", 8, volume, "sliding", roi=16, overlap=0.25)
    assert whole["peak_bytes"] > 0 and sliding["peak_bytes"] < whole["peak_bytes"]
    torch.testing.assert_close(
        whole["reconstruction"], reconstruct_volume(model, volume, 4, "whole"), atol=1e-5, rtol=1e-4
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
    assert torch.equal(image[0].as_tensor(), torch.as_tensor(data[::-1, ::-1, :].copy()).to(image.dtype))


def test_a_real_brain_volume_is_verified_scaled_and_cropped():
    if not DATA.is_dir():
        pytest.fail(f"the brain MRI files are missing at {DATA}; see ../shared/data/README.md")
    v = medvae_3d.load_brain_volume("BraTS-GLI-00001-000", "t1", spacing=4, factor=4)
    assert v.shape[0] == 1 and all(s % 4 == 0 for s in v.shape[1:]) and max(v.shape[1:]) < 240 // 4
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
        assert int(s["roi"] * (1 - s["overlap"])) % cfg.factor == 0, mode
        assert not set(s["train_subjects"]) & (set(s["val_subjects"]) | set(s["test_subjects"])), mode
        assert s["steps"] == max(s["eval_steps"]), mode
