"""The frozen teacher of stage 2 (medvae_lib.teachers), on a tiny open_clip model written to disk in the
format of BiomedCLIP's hub repository (open_clip_config.json + weights). Nothing here reaches a hub."""

import time

import huggingface_hub.constants
import pytest
import torch
from helpers import TINY_CLIP_PREPROCESS, write_open_clip_config, write_open_clip_dir
from torchvision.transforms import (
    CenterCrop,
    Compose,
    InterpolationMode,
    Normalize,
    Resize,
)

from medvae_lib.teachers import (
    CLIP_MEAN,
    CLIP_STD,
    FrozenTeacher,
    load_open_clip_teacher,
)

SIZE, DIM = 32, 16


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any accidental hub access fails at once instead of downloading."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two directories of the same seeded model (hub-style .bin and .safetensors weights) and a differently
    seeded model, with the original models to compare against."""
    root = tmp_path_factory.mktemp("teachers")
    original = write_open_clip_dir(root / "bin", 0, "open_clip_pytorch_model.bin")
    write_open_clip_dir(root / "safetensors", 0, "open_clip_model.safetensors")
    other = write_open_clip_dir(root / "other", 1, "open_clip_pytorch_model.bin")
    return {"root": root, "original": original, "other": other}


@pytest.fixture(scope="module")
def teacher(tiny):
    return load_open_clip_teacher(f"local-dir:{tiny['root'] / 'bin'}")


def images(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("form", ["local-dir", "plain path"])
def test_loaded_teacher_embeds_with_the_saved_weights(tiny, form):
    directory = tiny["root"] / ("bin" if form == "local-dir" else "safetensors")
    teacher = load_open_clip_teacher(
        f"local-dir:{directory}" if form == "local-dir" else directory
    )
    assert isinstance(teacher, FrozenTeacher)
    assert teacher.name == f"local-dir:{directory}"
    weights = (
        "open_clip_pytorch_model.bin"
        if form == "local-dir"
        else "open_clip_model.safetensors"
    )
    assert (
        str(directory.resolve()) in teacher.provenance and weights in teacher.provenance
    )
    assert teacher.image_size == SIZE and teacher.embedding_dim == DIM
    assert teacher.mean == pytest.approx(TINY_CLIP_PREPROCESS["mean"])
    assert teacher.std == pytest.approx(TINY_CLIP_PREPROCESS["std"])

    x = images(
        2, 1, 40, 48
    )  # not square, not the model's size: resize and crop both act
    with torch.no_grad():
        got = teacher(x)
        expected = tiny["original"].encode_image(teacher.preprocess(x))
        unrelated = tiny["other"].encode_image(teacher.preprocess(x))
    assert got.shape == (2, DIM)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (got - unrelated).abs().max() > 1e-3, (
        "the embeddings match a differently seeded model"
    )


def test_teacher_is_frozen_but_passes_gradients_to_the_input(teacher):
    params = list(teacher.parameters())
    assert params and not any(p.requires_grad for p in params)

    parent = torch.nn.ModuleDict({"teacher": teacher, "head": torch.nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training
    assert not any(m.training for m in teacher.modules()), (
        "train() switched the teacher out of eval mode"
    )
    teacher.train(True)
    assert not any(m.training for m in teacher.modules())

    x = images(2, 1, 24, 24).requires_grad_(True)
    teacher(x).pow(2).sum().backward()
    assert (
        x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    )
    assert all(p.grad is None for p in teacher.parameters())


def test_preprocess_expands_resizes_crops_and_normalises(teacher):
    mean, std = (
        torch.tensor(teacher.mean).view(1, 3, 1, 1),
        torch.tensor(teacher.std).view(1, 3, 1, 1),
    )

    grey = images(2, 1, 20, 50)
    out = teacher.preprocess(grey)
    assert out.shape == (2, 3, SIZE, SIZE)
    unnormalised = out * std + mean
    torch.testing.assert_close(
        unnormalised[:, 1:], unnormalised[:, :1].expand(-1, 2, -1, -1)
    )
    torch.testing.assert_close(out, teacher.preprocess(grey.expand(-1, 3, -1, -1)))
    assert teacher.preprocess(images(1, 3, 64, 64)).shape == (1, 3, SIZE, SIZE)

    # A constant image stays constant through the (normalised) bicubic resize: only (c - mean) / std is left.
    constant = torch.full((1, 1, 17, 23), 0.7)
    expected = ((0.7 - torch.tensor(teacher.mean)) / torch.tensor(teacher.std)).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(
        teacher.preprocess(constant), expected.expand(1, 3, SIZE, SIZE)
    )

    # Downsampling is MedVAE's: torchvision's bicubic, antialiased resize of the shorter side, then the centre crop.
    medvae = Compose(
        [
            Resize(size=SIZE, interpolation=InterpolationMode.BICUBIC, antialias=True),
            CenterCrop((SIZE, SIZE)),
            Normalize(mean=list(teacher.mean), std=list(teacher.std)),
        ]
    )
    rgb = images(2, 3, 80, 64)
    torch.testing.assert_close(teacher.preprocess(rgb), medvae(rgb))

    # The shorter side is resized (here already SIZE) and the centre cropped, not the whole image squashed.
    stripes = torch.zeros(1, 1, SIZE, 3 * SIZE)
    stripes[..., SIZE : 2 * SIZE] = 1.0
    expected = ((1.0 - torch.tensor(teacher.mean)) / torch.tensor(teacher.std)).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(
        teacher.preprocess(stripes), expected.expand(1, 3, SIZE, SIZE)
    )


def test_teacher_defaults_and_embedding_dim_from_a_dummy_run():
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    teacher = FrozenTeacher(encoder, image_size=8)
    assert teacher.mean == CLIP_MEAN and teacher.std == CLIP_STD
    assert teacher.embedding_dim == 5
    assert teacher(images(3, 3, 8, 8)).shape == (3, 5)
    assert (
        not any(p.requires_grad for p in encoder.parameters()) and not teacher.training
    )


def test_missing_directory_config_or_weights_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    for model_id in (f"local-dir:{missing}", str(missing), missing):
        with pytest.raises(FileNotFoundError, match="does not exist") as info:
            load_open_clip_teacher(model_id)
        assert str(missing) in str(info.value) and "open_clip_config.json" in str(
            info.value
        )

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "open_clip_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="has no open_clip_config.json") as info:
        load_open_clip_teacher(f"local-dir:{empty}")
    assert str(empty) in str(info.value) and "open_clip_pytorch_model.bin" in str(
        info.value
    )

    no_weights = tmp_path / "no_weights"
    write_open_clip_config(no_weights)
    with pytest.raises(FileNotFoundError, match="no weights file") as info:
        load_open_clip_teacher(no_weights)
    assert str(no_weights) in str(info.value)


def test_hub_access_fails_fast_offline_with_a_hint():
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="local-dir"):
        load_open_clip_teacher("hf-hub:medvae-lib-tests/no-such-model")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.rand(3, 32, 32), "dimensions"),
        (torch.rand(1, 1, 4, 32, 32), "dimensions"),
        (torch.rand(1, 2, 32, 32), "channels"),
        (torch.rand(1, 4, 32, 32), "channels"),
        (torch.zeros(0, 3, 32, 32), "empty"),
        (torch.randint(0, 255, (1, 3, 32, 32)), "floating point"),
        (torch.full((1, 3, 32, 32), float("nan")), "non-finite"),
        (torch.tensor([[[[0.5, float("inf")]]]]), "non-finite"),
    ],
)
def test_wrong_inputs_are_rejected(teacher, bad, message):
    with pytest.raises(ValueError, match=message):
        teacher(bad)
