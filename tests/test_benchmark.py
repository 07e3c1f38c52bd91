"""The pixel-versus-latent throughput benchmark (medvae_lib.benchmark): what it measures and reports. It
asserts no timing threshold except that latents 64x smaller than the image are faster to infer on."""

import math
import re

import pytest
import torch

from medvae_lib.benchmark import (
    break_even_passes,
    compare,
    describe_end_to_end,
    end_to_end,
    main,
    summarize_repeats,
    throughput,
)
from medvae_lib.models import build_classifier


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
    assert not model.training, (
        "throughput must leave the model in the train/eval state it found"
    )
    changed = any(
        not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )
    assert changed == train, (
        "training takes Adam steps; inference leaves the weights alone"
    )


def test_throughput_accepts_a_list_shape_and_no_warmup():
    assert (
        throughput(tiny(3), [3, 8, 8], batch_size=2, train=True, warmup=0, iters=1) > 0
    )


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
    arguments = {
        "model": tiny(),
        "input_shape": (1, 8, 8),
        "batch_size": 2,
        "train": False,
        "iters": 1,
    }
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
    assert (
        throughput(tiny(), (1, 8, 8), 1, train=False, iters=1) > 0
    )  # inference needs no batch statistics


@pytest.mark.parametrize(
    ("name", "size", "dims", "image", "latent"),
    [
        ("medvae_8_4_2d", 64, "2D", "64x64", "4x8x8"),
        ("medvae_4_1_3d", 32, "3D", "32x32x32", "1x8x8x8"),
    ],
)
def test_compare_reports_both_modes_and_shapes(name, size, dims, image, latent):
    rows = compare(name, size, batch_size=2, iters=1, width=4)
    assert [row["mode"] for row in rows] == ["train", "inference"]
    for row in rows:
        assert (row["model"], row["dims"], row["image"], row["latent"]) == (
            name,
            dims,
            image,
            latent,
        )
        assert row["pixels (img/s)"] > 0 and row["latents (img/s)"] > 0
        assert row["speed-up"] == pytest.approx(
            row["latents (img/s)"] / row["pixels (img/s)"]
        )


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


def test_break_even_passes_is_the_encoding_time_over_the_time_saved_per_pass():
    # encoder 10 img/s (0.1 s per image); pixels 2 img/s (0.5 s), latents 20 img/s (0.05 s): a pass on
    # latents saves 0.45 s per image, so encoding once has paid for itself after 0.1 / 0.45 passes
    assert break_even_passes(10.0, 2.0, 20.0) == pytest.approx(0.1 / 0.45)
    assert break_even_passes(1.0, 10.0, 11.0) == pytest.approx(1.0 / (0.1 - 1 / 11))
    assert (
        break_even_passes(10.0, 5.0, 5.0) == math.inf
    )  # latents save nothing per pass
    assert break_even_passes(10.0, 5.0, 4.0) == math.inf
    with pytest.raises(
        ValueError, match="encoder throughput must be a positive number"
    ):
        break_even_passes(0.0, 1.0, 2.0)


def test_end_to_end_counts_the_encoder_and_leaves_it_untouched():
    from medvae_lib.models import build_autoencoder

    torch.manual_seed(0)
    autoencoder = build_autoencoder("medvae_4_1_2d", width=8)
    before = {k: v.clone() for k, v in autoencoder.state_dict().items()}
    rows = end_to_end(autoencoder, "medvae_4_1_2d", 32, batch_size=2, iters=2, width=4)
    assert [row["mode"] for row in rows] == ["train", "inference"]
    for row in rows:
        assert row["image"] == "32x32"
        once, online = (
            row["latents, encoded once (img/s)"],
            row["latents, encoded online (img/s)"],
        )
        assert once > 0 and online > 0 and row["encoder (img/s)"] > 0
        assert row["speed-up, encoded online"] == pytest.approx(
            online / row["pixels (img/s)"]
        )
        assert row["speed-up, encoded once"] == pytest.approx(
            once / row["pixels (img/s)"]
        )
        expected = break_even_passes(
            row["encoder (img/s)"], row["pixels (img/s)"], once
        )
        assert row["break-even passes"] == expected
    for key, value in autoencoder.state_dict().items():
        assert torch.equal(value, before[key]), f"the frozen encoder changed: {key}"
    assert not autoencoder.training
    assert not any(p.grad is not None for p in autoencoder.parameters()), (
        "no gradient reaches the encoder"
    )


def test_describe_end_to_end_says_slower_or_faster_and_when_encoding_pays():
    rows = [
        {"mode": "train", "image": "512x512", "speed-up, encoded online": 0.4,
         "speed-up, encoded once": 20.0, "break-even passes": 2.3},
        {"mode": "inference", "image": "512x512", "speed-up, encoded online": 1.5,
         "speed-up, encoded once": 3.0, "break-even passes": 0.2},
        {"mode": "inference", "image": "32x32", "speed-up, encoded online": 0.5,
         "speed-up, encoded once": 0.9, "break-even passes": math.inf},
    ]  # fmt: skip
    train, fast, never = describe_end_to_end(rows)
    assert (
        "0.40x the pixel classifier (slower)" in train
        and "within 3 training epochs (2.3)" in train
    )
    assert "(faster)" in fast and "within 1 pass over the same images (0.2)" in fast
    assert "never pays for itself" in never


def test_end_to_end_reuses_the_rows_compare_measured():
    from medvae_lib.models import build_autoencoder

    autoencoder = build_autoencoder("medvae_4_1_2d", width=8)
    measured = [
        {"model": "medvae_4_1_2d", "image": "32x32", "mode": "train", "pixels (img/s)": 2.0,
         "latents (img/s)": 20.0},
        {"model": "medvae_4_1_2d", "image": "32x32", "mode": "inference", "pixels (img/s)": 4.0,
         "latents (img/s)": 40.0},
    ]  # fmt: skip
    rows = end_to_end(
        autoencoder,
        "medvae_4_1_2d",
        32,
        batch_size=2,
        iters=1,
        width=4,
        measured=measured,
    )
    assert [
        (r["pixels (img/s)"], r["latents, encoded once (img/s)"]) for r in rows
    ] == [(2.0, 20.0), (4.0, 40.0)]
    assert rows[0]["speed-up, encoded once"] == 10.0
    with pytest.raises(ValueError, match="not medvae_4_1_2d"):
        end_to_end(
            autoencoder,
            "medvae_4_1_2d",
            64,
            batch_size=2,
            iters=1,
            width=4,
            measured=measured,
        )


def test_end_to_end_rejects_an_autoencoder_of_another_configuration():
    from medvae_lib.models import build_autoencoder

    with pytest.raises(
        ValueError, match=r"latents of shape \(1, 8, 8\), medvae_8_4_2d has \(4, 4, 4\)"
    ):
        end_to_end(
            build_autoencoder("medvae_4_1_2d", width=8),
            "medvae_8_4_2d",
            32,
            batch_size=2,
            iters=1,
        )


def test_main_quick_prints_a_table(capsys):
    assert main(["--quick", "--models", "medvae_4_1_2d"]) == 0
    out = capsys.readouterr().out
    assert "torch " + torch.__version__ in out and "threads" in out
    table = [
        line for line in out.splitlines() if line.lstrip().startswith("medvae_4_1_2d")
    ]
    assert len(table) == 2, out
    assert all(
        re.search(r"64x64 +1x16x16 .* \d+\.\dx +\d+\.\d-\d+\.\dx +16x +16x$", line)
        for line in table
    ), table
    assert "medvae_8_1_2d" not in out


def test_main_times_the_published_encoder_on_request(capsys, monkeypatch):
    """--encoder adds the published configuration's encoder cost per image; a
    three-channel published model gets the grey image on each of its channels. (The
    published layout is narrowed to 8 channels here: the plumbing is under test.)"""
    import dataclasses

    from medvae_lib import models

    narrow = dataclasses.replace(models.PUBLISHED["medvae_4_3_2d"], ch=8, norm_groups=4)
    monkeypatch.setitem(models.PUBLISHED, "medvae_4_3_2d", narrow)
    args = ["--quick", "--models", "medvae_4_3_2d", "--repeats", "1", "--encoder"]
    args += ["--batch-2d", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = [
        line
        for line in out.splitlines()
        if line.lstrip().startswith("medvae_4_3_2d") and "x " in line
    ]
    costs = [r for r in rows if re.search(r"64x64 +(train|inference) +[\d,]+\.\d ", r)]
    assert len(costs) == 2, out
    assert "encoder (ms/image)" in out and "break-even" in out


def test_repeats_are_summarised_by_their_median_and_range():
    def row(mode, pixels, latents):
        return {
            "model": "m",
            "dims": "2D",
            "image": "8x8",
            "latent": "1x2x2",
            "mode": mode,
            "pixels (img/s)": pixels,
            "latents (img/s)": latents,
            "speed-up": latents / pixels,
        }

    rows = [
        row("train", 10, 100),
        row("inference", 10, 50),
        row("train", 10, 300),
        row("train", 20, 100),
    ]
    train, inference = summarize_repeats(rows)
    assert (train["mode"], inference["mode"]) == ("train", "inference")
    assert train["repeats"] == 3 and inference["repeats"] == 1
    assert train["speed-up"] == 10.0  # the median of 10, 30 and 5, not their mean (15)
    assert (train["speed-up min"], train["speed-up max"]) == (5.0, 30.0)
    assert train["pixels (img/s)"] == 10 and train["latents (img/s)"] == 100
    assert (
        inference["speed-up"]
        == inference["speed-up min"]
        == inference["speed-up max"]
        == 5.0
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--iters", "0"],
        ["--models", "medvae_2_1_2d"],
        ["--batch-2d", "x"],
        ["--device", "no-such-device"],
    ],
)
def test_main_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err
