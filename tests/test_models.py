import pytest
import torch

from medvae_lib.models import MEDVAE_CONFIGS, build_autoencoder, count_parameters, get_config

EXPECTED = {  # name: (dims, factor, latent channels)
    "medvae_4_1_2d": (2, 4, 1),
    "medvae_4_3_2d": (2, 4, 3),
    "medvae_8_1_2d": (2, 8, 1),
    "medvae_8_4_2d": (2, 8, 4),
    "medvae_4_1_3d": (3, 4, 1),
    "medvae_8_1_3d": (3, 8, 1),
}


def test_the_six_medvae_configs():
    assert {n: (c.spatial_dims, c.factor, c.latent_channels) for n, c in MEDVAE_CONFIGS.items()} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_per_config(name):
    dims, factor, channels = EXPECTED[name]
    side = 32 if dims == 2 else 16
    model = build_autoencoder(name, width=8).eval()
    x = torch.rand(2, 1, *(side,) * dims)
    with torch.no_grad():
        reconstruction, z_mu, z_sigma = model(x)
        z = model.encode_stage_2_inputs(x)
    latent = (2, channels, *(side // factor,) * dims)
    assert reconstruction.shape == x.shape
    assert z_mu.shape == z_sigma.shape == z.shape == latent
    assert (z_sigma > 0).all()
    assert get_config(name).latent_shape((side,) * dims) == latent[1:]
    assert get_config(name).compression == factor**dims / channels


def test_full_width_is_medvae_sized():
    model = build_autoencoder("medvae_4_3_2d", width="full")
    assert model.encoder.channels == (128, 256, 512)
    assert 40e6 < count_parameters(model) < 60e6
    assert build_autoencoder("medvae_8_1_2d", width=8).encoder.channels == (8, 16, 32, 32)


def test_bad_names_sizes_and_widths_are_explained():
    with pytest.raises(ValueError, match="unknown MedVAE model 'medvae_2_1_2d'; choose one of"):
        get_config("medvae_2_1_2d")
    with pytest.raises(ValueError, match=r"needs every side divisible by 8; got \(28, 28\)"):
        get_config("medvae_8_1_2d").latent_shape((28, 28))
    with pytest.raises(ValueError, match="is 3D; got image shape"):
        get_config("medvae_4_1_3d").latent_shape((32, 32))
    with pytest.raises(ValueError, match="width must be 'full' or a positive multiple of 8"):
        build_autoencoder("medvae_4_1_2d", width=12)
