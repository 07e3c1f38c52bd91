"""The pixel-versus-latent throughput benchmark (medvae_lib.benchmark): what it measures and reports. It
asserts no timing threshold except that latents 64x smaller than the image are faster to infer on."""

import math
import re

import pytest
import torch

from medvae_lib.benchmark import compare, main, throughput
from medvae_lib.latent_downstream import build_classifier


def tiny(in_channels=1, spatial_dims=2):
    torch.manual_seed(0)
    return build_classifier(in_channels, spatial_dims, width=4)


@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
def test_throughput_is_positive_and_finite(train):
    model = tiny()
    model.eval()
    before = [p.detach().clone() for p in model.parameters()]
    value = throughput(model, (1, 16, 16), batch_size=2, train=train, warmup=1, iters=2)
    assert math.isfinite(value) and value > 0
    assert not model.training, "throughput must leave the model in the train/eval state it found"
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert changed == train, "training takes Adam steps; inference leaves the weights alone"


def test_throughput_accepts_a_list_shape_and_no_warmup():
    assert throughput(tiny(3), [3, 8, 8], batch_size=2, train=True, warmup=0, iters=1) > 0


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
        ({"batch_size": 2.0}, ValueError, "batch_size must be a positive integer"),
        ({"iters": 0}, ValueError, "iters must be a positive integer"),
        ({"warmup": -1}, ValueError, "warmup must be a non-negative integer"),
        ({"input_shape": ()}, ValueError, "input_shape must be a non-empty tuple"),
        ({"input_shape": (1, 0, 8)}, ValueError, "every entry of input_shape"),
        ({"model": "resnet"}, TypeError, "model must be a torch.nn.Module"),
        ({"train": "yes"}, TypeError, "train must be True or False"),
        ({"device": "no-such-device"}, ValueError, "device must name a torch device"),
    ],
)
def test_throughput_rejects_bad_arguments(changes, error, message):
    arguments = {"model": tiny(), "input_shape": (1, 8, 8), "batch_size": 2, "train": False, "iters": 1}
    with pytest.raises(error, match=message):
        throughput(**{**arguments, **changes})


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_throughput_says_when_cuda_is_missing():
    with pytest.raises(ValueError, match="CUDA is not available"):
        throughput(tiny(), (1, 8, 8), 2, train=False, device="cuda", iters=1)


def test_throughput_refuses_to_train_a_frozen_model_or_a_batch_of_one():
    with pytest.raises(ValueError, match="trainable parameters"):
        throughput(tiny().requires_grad_(False), (1, 8, 8), 2, train=True, iters=1)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        throughput(tiny(), (1, 8, 8), 1, train=True, iters=1)
    assert throughput(tiny(), (1, 8, 8), 1, train=False, iters=1) > 0  # inference needs no batch statistics


@pytest.mark.parametrize(
    ("name", "size", "dims", "image", "latent"),
    [("medvae_8_4_2d", 64, "2D", "64x64", "4x8x8"), ("medvae_4_1_3d", 32, "3D", "32x32x32", "1x8x8x8")],
)
def test_compare_reports_both_modes_and_shapes(name, size, dims, image, latent):
    rows = compare(name, size, batch_size=2, iters=1, width=4)
    assert [row["mode"] for row in rows] == ["train", "inference"]
    for row in rows:
        assert (row["model"], row["dims"], row["image"], row["latent"]) == (name, dims, image, latent)
        assert row["pixels (img/s)"] > 0 and row["latents (img/s)"] > 0
        assert row["speed-up"] == pytest.approx(row["latents (img/s)"] / row["pixels (img/s)"])


def test_compare_rejects_unknown_models_and_indivisible_sizes():
    with pytest.raises(ValueError, match="unknown MedVAE model"):
        compare("medvae_2_1_2d", 64, 1)
    with pytest.raises(ValueError, match="divisible by 8"):
        compare("medvae_8_1_2d", 60, 1)
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        compare("medvae_8_1_2d", 0, 1)


def test_latents_are_faster_to_infer_on_than_pixels():
    # The classifiers compare() builds for medvae_8_1_2d at 64 px: an 8x8 latent has 64x fewer positions
    # than the 64x64 image; the fastest of 5 iterations keeps a busy machine from reversing an order this wide.
    speeds = {}
    for name, shape in {"pixels": (1, 64, 64), "latents": (1, 8, 8)}.items():
        torch.manual_seed(0)
        model = build_classifier(1, 2, width=16)
        speeds[name] = throughput(model, shape, batch_size=8, train=False, iters=5)
    assert speeds["latents"] > speeds["pixels"], speeds


def test_main_quick_prints_a_table(capsys):
    assert main(["--quick", "--models", "medvae_4_1_2d"]) == 0
    out = capsys.readouterr().out
    assert "torch " + torch.__version__ in out and "threads" in out
    table = [line for line in out.splitlines() if line.lstrip().startswith("medvae_4_1_2d")]
    assert len(table) == 2, out
    assert all(re.search(r"64x64 +1x16x16 .* \d+\.\dx +16x +16x$", line) for line in table), table
    assert "medvae_8_1_2d" not in out


@pytest.mark.parametrize(
    "argv", [["--iters", "0"], ["--models", "medvae_2_1_2d"], ["--batch-2d", "x"], ["--device", "no-such-device"]]
)
def test_main_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err
