import pytest
import torch

from medvae_lib.models import (
    MEDVAE_CONFIGS,
    build_autoencoder,
    count_parameters,
    decoder_output_layer,
    get_config,
)

EXPECTED = {  # name: (dims, factor, latent channels)
    "medvae_4_1_2d": (2, 4, 1),
    "medvae_4_3_2d": (2, 4, 3),
    "medvae_8_1_2d": (2, 8, 1),
    "medvae_8_4_2d": (2, 8, 4),
    "medvae_4_1_3d": (3, 4, 1),
    "medvae_8_1_3d": (3, 8, 1),
}


def test_the_six_medvae_configs():
    assert {
        n: (c.spatial_dims, c.factor, c.latent_channels)
        for n, c in MEDVAE_CONFIGS.items()
    } == EXPECTED


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
    assert build_autoencoder("medvae_8_1_2d", width=8).encoder.channels == (
        8,
        16,
        32,
        32,
    )


def test_bad_names_sizes_and_widths_are_explained():
    with pytest.raises(
        ValueError, match="unknown MedVAE model 'medvae_2_1_2d'; choose one of"
    ):
        get_config("medvae_2_1_2d")
    with pytest.raises(
        ValueError, match=r"needs every side divisible by 8; got \(28, 28\)"
    ):
        get_config("medvae_8_1_2d").latent_shape((28, 28))
    with pytest.raises(ValueError, match="is 3D; got image shape"):
        get_config("medvae_4_1_3d").latent_shape((32, 32))
    with pytest.raises(
        ValueError, match="width must be 'full' or a positive multiple of 8"
    ):
        build_autoencoder("medvae_4_1_2d", width=12)


def test_mean_and_variance_come_from_twice_the_latent_channels():
    """MedVAE's double_z: the encoder gives 2 x latent_channels maps, so for a one-channel model the
    log-variance is not an affine function of the mean (as it is with MONAI's default layout)."""
    torch.manual_seed(0)
    model = build_autoencoder("medvae_4_1_2d", width=8).eval()
    assert model.encoder.blocks[-1].conv.out_channels == 2
    assert (
        model.quant_conv_mu.conv.in_channels
        == model.quant_conv_log_sigma.conv.in_channels
        == 2
    )
    with torch.no_grad():
        torch.nn.init.normal_(model.quant_conv_mu.conv.weight)
        torch.nn.init.normal_(model.quant_conv_log_sigma.conv.weight)
        mu, sigma = model.encode(torch.rand(4, 1, 32, 32))
    a, b = mu.flatten(), sigma.log().flatten()
    design = torch.stack([a, torch.ones_like(a)], 1)
    residual = b - design @ torch.linalg.lstsq(design, b[:, None]).solution[:, 0]
    assert residual.abs().max() > 1e-3, "log sigma must not be an affine function of mu"


def test_decoder_output_layer_is_the_last_convolution():
    model = build_autoencoder("medvae_8_4_2d", width=8)
    weight = decoder_output_layer(model)
    assert weight is model.decoder.blocks[-1].conv.weight and weight.shape[0] == 1
    model.decoder.blocks[-1] = torch.nn.Identity()
    with pytest.raises(TypeError, match="does not end in a convolution"):
        decoder_output_layer(model)
