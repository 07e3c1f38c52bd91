"""The full-mode cost counter: its counts on the meta device are those of a real step,
activations are counted once, and the chapters' counts follow their settings."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from medvae_lib import full_mode_cost as fmc
from medvae_lib.medvae_stage1 import Stage1Config, Stage1Trainer

_COUNTS: dict = {}


def cost(chapter: str, overrides: dict | None = None) -> fmc.ChapterCost:
    """A chapter's count, made once per test session (each takes seconds)."""
    key = (chapter, repr(sorted((overrides or {}).items())))
    if key not in _COUNTS:
        _COUNTS[key] = fmc.CHAPTERS[chapter](overrides)
    return _COUNTS[key]


def test_a_layer_output_kept_twice_is_counted_once_and_weights_are_state():
    with torch.device("meta"):
        net = torch.nn.Sequential(
            torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 5)
        )
        x = torch.rand(7, 10)
    count = fmc.count_step(lambda: net(x).sum().backward(), net)
    # kept: the input (7 x 10) and the ReLU's output (7 x 20), which the second layer
    # keeps too; the second layer's weight is state
    assert count.activations == (7 * 10 + 7 * 20) * 4
    n = sum(p.numel() for p in net.parameters())
    assert count.state == n * 4 * 4  # weight, gradient, Adam's two moments
    # forward 2*7*(10*20 + 20*5); backward: weight gradients of both, input gradient of
    # the second only (the input needs none)
    assert count.flops == 2 * 7 * (10 * 20 + 20 * 5) * 2 + 2 * 7 * 20 * 5


@pytest.mark.parametrize("step", [0, 6, 7])  # warm-up, generator, discriminator
def test_a_stage1_step_counted_on_meta_is_the_real_steps_count(step):
    cfg = Stage1Config(
        model="medvae_4_1_2d", width=8, batch_size=2, adv_start=6, adv_weight=0.5
    )
    cfg.alternate_updates = True
    torch.manual_seed(0)
    real = Stage1Trainer(cfg)
    with torch.device("meta"):
        meta = Stage1Trainer(cfg, device="meta")
    x = torch.rand(2, 1, 32, 32)
    counter = FlopCounterMode(display=False)
    with counter:
        real.train_step(x, step)
    counted = fmc.count_step(
        lambda: meta.train_step(x.to("meta"), step), meta.autoencoder
    )
    # the same operations, but for attention: on meta it runs as matrix products, which
    # are counted; on the CPU as a fused kernel the counter has no formula for
    assert counted.flops == pytest.approx(counter.get_total_flops(), rel=0.03)
    assert counted.activations > 0


def test_lpips_is_built_without_any_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    from medvae_lib.losses import perceptual_loss

    with fmc._lpips_without_download(), torch.device("meta"):
        loss = perceptual_loss("vgg", 2)
    n = sum(p.numel() for p in loss.parameters())
    assert n > 14e6  # VGG-16's convolutions: the real network, not a stand-in


def test_chapter_2_counts_its_schedule():
    count = cost("02")
    from medvae_lib.medvae_stage1.settings import MODES

    s = MODES["full"]
    steps = sum(w.steps * w.runs for w in count.work)
    # every seed: the warm-up, then both arms from adv_start to the end
    assert steps == s["comparison_seeds"] * (2 * s["steps"] - s["adv_start"])
    by = {w.label: w for w in count.work}
    gen, disc = by["with GAN: generator"], by["with GAN: discriminator"]
    assert disc.step.flops < gen.step.flops / 2  # the discriminator is the small part
    row = fmc.summary(count)
    assert row["T4 hours, estimate"] == pytest.approx(4 * row["T4 hours, at least"])


@pytest.mark.parametrize("chapter", ["02", "03", "04", "05", "07", "08"])
def test_each_chapters_full_mode_fits_a_free_colab_session(chapter):
    row = fmc.summary(cost(chapter))
    assert row["GPU memory (GB)"] <= fmc.T4_MEMORY_GB
    assert row["disk (GB)"] <= fmc.COLAB_DISK_GB
    assert row["T4 hours, estimate"] <= fmc.COLAB_SESSION_HOURS


@pytest.mark.parametrize("chapter", ["02", "05", "07"])
def test_paper_scale_is_a_valid_override_that_counts_more(chapter):
    paper = fmc.paper_scale(chapter)
    assert paper  # these chapters train shorter than their papers in full mode
    full, longer = cost(chapter), cost(chapter, paper)
    assert sum(w.flops for w in longer.work) > 2 * sum(w.flops for w in full.work)
    assert fmc.summary(longer)["T4 hours, estimate"] > fmc.COLAB_SESSION_HOURS
    assert fmc.paper_scale("03") == {}


def test_float16_runs_are_counted_at_the_float16_peak():
    fp16, fp32 = cost("02"), cost("02", {"amp": "off"})
    assert {w.precision for w in fp16.work} == {"float16"}
    assert fp32.seconds() == pytest.approx(
        fp16.seconds() * fmc.T4_PEAK["float16"] / fmc.T4_PEAK["float32"]
    )
    assert fp32.peak_memory > fp16.peak_memory  # activations in half the bytes


@pytest.mark.parametrize("chapter", ["02", "03", "04", "05", "07", "08"])
def test_each_chapter_states_the_count_it_has(chapter):
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    (path,) = root.glob(f"notebooks/{chapter}_*.ipynb")
    intro = " ".join(
        "".join(json.loads(path.read_text())["cells"][0]["source"]).split()
    )
    said = fmc._sentence(fmc.summary(cost(chapter)))  # fmc.statement(chapter)
    assert said in intro, f"{path.name}'s 'Time to run' should quote: {said}"
    paper = fmc.paper_scale(chapter)
    if paper:  # and what PAPER_SCALE, which it offers, would cost
        assert fmc._sentence(fmc.summary(cost(chapter, paper))) in intro


def test_the_checkpoints_chapters_5_and_7_say_drive_does_or_does_not_hold():
    def checkpoints(cost):
        return sum(size for item, size, _ in cost.disk if "checkpoint" in item) / 1e9

    # chapter 5: more than a free Google Drive's 15 GB; chapter 7: within it
    assert checkpoints(cost("05")) > 15 > checkpoints(cost("07"))


def test_a_changed_setting_is_counted_and_an_unknown_one_refused():
    full = cost("07")
    one_seed = cost("07", {"seeds": [0]})
    flops = [sum(w.flops for w in c.work) for c in (full, one_seed)]
    from medvae_lib.personalized_invariant.settings import MODES

    seeds = len(MODES["full"]["seeds"])  # two by default
    assert flops[1] == pytest.approx(flops[0] / seeds)
    assert one_seed.peak_memory == full.peak_memory  # a step is the same step
    with pytest.raises(ValueError, match="batch_sise"):
        cost("07", {"batch_sise": 1})
    with pytest.raises(SystemExit):
        fmc.main(["--set", "steps=10"])  # which chapter's steps?


def test_finished_runs_are_parked_and_only_their_encoders_add_to_the_memory():
    one, three = cost("02", {"comparison_seeds": 1}), cost("02")
    with fmc._lpips_without_download(), torch.device("meta"):
        from medvae_lib.medvae_stage1.settings import MODES, stage1_config

        t = Stage1Trainer(stage1_config(MODES["full"], 0), device="meta")
    encoder = sum(p.numel() * 4 for p in t.autoencoder.parameters())
    encoder += sum(p.numel() * 4 for p in t.perceptual.parameters())
    # two more seeds: four more finished arms, each parked with its autoencoder only
    # (and the perceptual network beside it)
    assert three.resident - one.resident == 4 * encoder
    assert three.peak_memory - one.peak_memory == 4 * encoder
    with pytest.raises(ValueError, match="ablation"):
        cost("02", {"ablation": False})


def test_frozen_vit_blocks_are_not_trained_in_the_count():
    def vit(c):
        return next(w for w in c.work if w.label == "ViT-B/16 towers").step

    half, none = cost("08"), cost("08", {"pretrained_freeze_blocks": 0})
    assert vit(half).flops < vit(none).flops
    assert vit(half).activations < vit(none).activations
