"""The full-mode cost counter: its counts on the meta device are those of a real step,
activations are counted once, and the chapters' counts follow their settings."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from medvae_lib import full_mode_cost as fmc
from medvae_lib.medvae_stage1 import Stage1Config, Stage1Trainer


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


def test_chapter_2_counts_its_schedule_and_does_not_fit_a_t4():
    cost = fmc.chapter_02()
    from medvae_lib.medvae_stage1.settings import MODES

    s = MODES["full"]
    steps = sum(w.steps * w.runs for w in cost.work)
    # every seed: the warm-up, then both arms from adv_start to the end
    assert steps == s["comparison_seeds"] * (2 * s["steps"] - s["adv_start"])
    by = {w.label: w for w in cost.work}
    gen, disc = by["with GAN: generator"], by["with GAN: discriminator"]
    assert disc.step.flops < gen.step.flops / 2  # the discriminator is the small part
    row = fmc.summary(cost)
    assert row["T4 hours, estimate"] == pytest.approx(4 * row["T4 hours, at least"])
    assert row["T4 hours, at least"] > 10  # MedVAE's full network, 110,625 steps


@pytest.mark.parametrize("chapter", ["02", "03", "04", "05", "07", "08"])
def test_each_chapter_states_the_count_it_has(chapter):
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    (path,) = root.glob(f"notebooks/{chapter}_*.ipynb")
    intro = " ".join(
        "".join(json.loads(path.read_text())["cells"][0]["source"]).split()
    )
    assert fmc.statement(chapter) in intro, (
        f"{path.name}'s 'Time to run' should quote: {fmc.statement(chapter)}"
    )


def test_a_changed_setting_is_counted_and_an_unknown_one_refused():
    full = fmc.chapter_07()
    one_seed = fmc.chapter_07({"seeds": [0]})
    flops = [sum(w.flops for w in c.work) for c in (full, one_seed)]
    assert flops[1] == pytest.approx(flops[0] / 3)  # three seeds by default
    assert one_seed.peak_memory == full.peak_memory  # a step is the same step
    with pytest.raises(ValueError, match="batch_sise"):
        fmc.chapter_07({"batch_sise": 1})
    with pytest.raises(SystemExit):
        fmc.main(["--set", "steps=10"])  # which chapter's steps?


def test_finished_runs_kept_on_the_gpu_add_to_the_memory_of_the_last():
    one, three = fmc.chapter_02({"comparison_seeds": 1}), fmc.chapter_02()
    step = max(w.memory for w in three.work)
    # one seed: its warm-up and first arm wait while the second arm trains; three
    # seeds: the two earlier seeds' arms too
    assert one.peak_memory - step == pytest.approx(three.resident / 3)
    with pytest.raises(ValueError, match="ablation"):
        fmc.chapter_02({"ablation": False})


def test_frozen_vit_blocks_are_not_trained_in_the_count():
    def vit(c):
        return next(w for w in c.work if w.label == "ViT-B/16 towers").step

    half, none = fmc.chapter_08(), fmc.chapter_08({"pretrained_freeze_blocks": 0})
    assert vit(half).flops < vit(none).flops
    assert vit(half).activations < vit(none).activations
