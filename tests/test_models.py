import importlib.util
import sys
import types

import pytest
import torch

from medvae_lib.models import (
    MEDVAE_CONFIGS,
    PUBLISHED,
    AttnBlock,
    build_autoencoder,
    decoder_output_layer,
    get_config,
    published_ddconfig,
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
        projected = model.project(z_mu)
    latent = (2, channels, *(side // factor,) * dims)
    assert reconstruction.shape == x.shape
    assert z_mu.shape == z_sigma.shape == projected.shape == latent
    assert (z_sigma > 0).all()
    assert get_config(name).latent_shape((side,) * dims) == latent[1:]
    assert get_config(name).compression == factor**dims / channels


def test_small_widths_follow_medvae_levels_and_decoder_depth():
    model = build_autoencoder("medvae_8_1_2d", width=8)
    assert [len(d.block) for d in model.encoder.down] == [1, 1, 1, 1]
    assert [len(u.block) for u in model.decoder.up] == [2, 2, 2, 2]  # blocks + 1
    assert model.encoder.conv_out.in_channels == 32  # 8 x ch_mult[-1] = 8 x 4
    assert model.encoder.norm_out.num_groups == 4
    assert isinstance(model.encoder.mid.attn_1, AttnBlock)
    full = PUBLISHED["medvae_4_1_2d"]
    assert (full.ch, full.ch_mult, full.num_res_blocks) == (128, (1, 2, 4), 2)


def test_bad_names_sizes_widths_and_inputs_are_explained():
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
    with pytest.raises(ValueError, match=r"takes \(N, 1, 2 sides\) images"):
        build_autoencoder("medvae_4_1_2d", width=8).encode(torch.rand(2, 3, 32, 32))


def test_mean_and_variance_come_from_twice_the_latent_channels():
    """MedVAE's double_z: the encoder gives 2 x latent_channels maps, so for a one-channel
    model the log-variance is not an affine function of the mean."""
    torch.manual_seed(0)
    model = build_autoencoder("medvae_4_1_2d", width=8).eval()
    assert model.encoder.conv_out.out_channels == 2
    assert model.quant_conv.in_channels == model.quant_conv.out_channels == 2
    with torch.no_grad():
        torch.nn.init.normal_(model.quant_conv.weight)
        mu, sigma = model.encode(torch.rand(4, 1, 32, 32))
    a, b = mu.flatten(), sigma.log().flatten()
    design = torch.stack([a, torch.ones_like(a)], 1)
    residual = b - design @ torch.linalg.lstsq(design, b[:, None]).solution[:, 0]
    assert residual.abs().max() > 1e-3, "log sigma must not be an affine function of mu"


def test_decoder_output_layer_is_the_last_convolution():
    model = build_autoencoder("medvae_8_4_2d", width=8)
    weight = decoder_output_layer(model)
    assert weight is model.decoder.conv_out.weight and weight.shape[0] == 1


# ---- equality with the official package (medvae==0.1.7) ------------------------------


@pytest.fixture(scope="module")
def official():
    """MedVAE's model classes and LoRA injection, imported without the package's
    ``__init__`` (which imports its training stack: accelerate, polars, omegaconf)."""
    spec = importlib.util.find_spec("medvae")
    assert spec is not None, (
        "install the official package: pip install --no-deps medvae==0.1.7"
    )
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "medvae"}
    package = types.ModuleType("medvae")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["medvae"] = package
    try:
        from medvae.models import AutoencoderKL_2D, AutoencoderKL_3D
        from medvae.utils.lora import inject_trainable_lora_extended

        yield {2: AutoencoderKL_2D, 3: AutoencoderKL_3D}, inject_trainable_lora_extended
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] == "medvae"]:
            del sys.modules[k]
        sys.modules.update(saved)


def official_model(official, name):
    classes, inject = official
    arch = PUBLISHED[name]
    ddconfig, embed_dim = published_ddconfig(name)
    model = classes[arch.spatial_dims](ddconfig=ddconfig, embed_dim=embed_dim)
    if arch.lora_rank:  # as medvae.utils.factory.build_model does
        inject(model, {"ResnetBlock", "AttnBlock"}, r=arch.lora_rank)
    with torch.no_grad():  # the adapters' up-projections start at zero: make them count
        for key, value in model.state_dict().items():
            if "lora_up" in key:
                value.normal_(0, 0.05)
    return model.eval()


def outputs(model, x, official_side):
    """(mean, std, decoding of the mean, stage-2 latent of the mean) of either class."""
    with torch.no_grad():
        if official_side:
            posterior = model.encode(x)
            mu, sigma = posterior.mean, posterior.std
            decoded = model.decode(mu)
            forward = model(x, sample_posterior=False)
            assert torch.equal(forward[0], decoded)
            projected = model.channel_proj(model.channel_ds(mu) + mu)
        else:
            mu, sigma = model.encode(x)
            decoded, projected = model.decode(mu), model.project(mu)
    return mu, sigma, decoded, projected


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_state_dicts_move_both_ways_and_outputs_equal_the_official_model(
    official, name
):
    arch = PUBLISHED[name]
    torch.manual_seed(0)
    reference = official_model(official, name)
    ours = build_autoencoder(name, width="full").eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    side = 32 if arch.spatial_dims == 2 else 16
    x = torch.rand(1, arch.in_channels, *(side,) * arch.spatial_dims) * 2 - 1
    # float32 through some fifty layers, attention computed by different kernels: up to
    # about 2e-5 apart on CPUs without AVX-512; a wrong layer is off by far more
    tol = 1e-4
    for a, b in zip(outputs(reference, x, True), outputs(ours, x, False), strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= tol * max(1.0, a.abs().max().item())
    # the reverse: our weights into the official class
    torch.manual_seed(1)
    ours = build_autoencoder(name, width="full").eval()
    with torch.no_grad():
        for key, value in ours.state_dict().items():
            if "lora_up" in key:
                value.normal_(0, 0.05)
    reference.load_state_dict(ours.state_dict(), strict=True)
    for a, b in zip(outputs(reference, x, True), outputs(ours, x, False), strict=True):
        assert (a - b).abs().max() <= tol * max(1.0, a.abs().max().item())


def test_published_checkpoint_is_verified_then_loaded_as_the_official_model(
    official, tmp_path, monkeypatch
):
    """A checkpoint in MedVAE's format ({"state_dict": ...}, written by torch.save)
    loads into the book's model, which then computes what the official model computes;
    a file whose sha256 differs, or that lacks weights, is refused with the reason."""
    import hashlib

    import huggingface_hub

    from medvae_lib import models

    torch.manual_seed(0)
    reference = official_model(official, "medvae_4_3_2d")
    path = tmp_path / "vae_4x_3c_2D.ckpt"
    state = dict(reference.state_dict())
    state["loss.logvar"] = torch.zeros(())  # training state a checkpoint may carry
    torch.save({"state_dict": state}, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    model = models.load_published("medvae_4_3_2d", path, sha)
    assert model.ignored_keys == ["loss.logvar"]
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    for a, b in zip(outputs(reference, x, True), outputs(model, x, False), strict=True):
        assert (a - b).abs().max() <= 1e-5 * max(1.0, a.abs().max().item())
    with pytest.raises(ValueError, match="is not the 0{64} stated"):
        models.load_published("medvae_4_3_2d", path, "0" * 64)
    with pytest.raises(
        ValueError, match=r"not a medvae_4_1_2d checkpoint: \d+ weights"
    ):
        models.load_published("medvae_4_1_2d", path, sha)

    # the download: pinned revision, and the sha256 the hub states (the LFS ETag)
    seen = {}

    def metadata(url):
        seen["url"] = url
        return types.SimpleNamespace(etag=f'"{sha}"')

    def download(repo, filename, revision, cache_dir=None):
        seen["download"] = (repo, filename, revision)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    model = models.published_model("medvae_4_3_2d")
    assert models.HUB_REVISION in seen["url"]
    assert seen["download"] == (
        "stanfordmimi/MedVAE",
        "model_weights/vae_4x_3c_2D.ckpt",
        models.HUB_REVISION,
    )
    metadata_without_lfs = types.SimpleNamespace(etag='"abc"')
    monkeypatch.setattr(
        huggingface_hub, "get_hf_file_metadata", lambda url: metadata_without_lfs
    )
    with pytest.raises(ValueError, match="states no sha256"):
        models.published_model("medvae_4_3_2d")
