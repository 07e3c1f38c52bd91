"""The chapter 7 exercise checks accept the right answer and reject plausible wrong ones."""

import numpy as np
import torch

from medvae_lib import personalized_invariant as pi
from medvae_lib.exercise_checks import ch07
from medvae_lib.training import settings_for


def _setup():
    s = dict(
        settings_for(pi.MODES, "ci", {}),
        image_size=32,
        features=(4, 4, 8, 8, 16, 4),
        prior_heads=2,
        ssim_kernel=3,
    )
    torch.manual_seed(0)
    model = pi.build_model(s, "full")
    images = torch.rand(3, 4, 32, 32)
    mask = torch.zeros(3, 1, 32, 32)
    mask[..., 6:-6, 8:-8] = 1
    return model, torch.cat([images * mask, mask], 1), s


def test_check_07_1_accepts_the_protocol_gap_and_rejects_its_negative(capsys):
    model, samples, s = _setup()
    gap = ch07.protocol_gap(model, samples, s)
    assert gap > 0
    assert ch07.check_07_1(gap, model, samples, s)
    assert not ch07.check_07_1(-gap, model, samples, s)
    assert "other way round" in capsys.readouterr().out
    assert not ch07.check_07_1(gap + 1.0, model, samples, s)


def test_check_07_2_accepts_the_worst_target_and_rejects_the_worst_source(capsys):
    psnr = np.full((4, 4, 5), 20.0)
    psnr[:, 2] -= 5  # t2 is hard to predict (a column)
    psnr[3, :] -= 3  # flair is a poor source (a row)
    psnr[2, 2] = 30.0
    assert ch07.hardest_target(psnr) == "t2"
    assert ch07.check_07_2("t2", psnr)
    assert not ch07.check_07_2("flair", psnr)
    assert "worst *source*" in capsys.readouterr().out
    assert not ch07.check_07_2("T2 weighted", psnr)


def test_check_07_4_accepts_the_swap_loss_and_rejects_its_negative(capsys):
    model, samples, s = _setup()
    donors = samples.flip(0)
    loss = ch07.swap_loss(model, samples, donors)
    assert loss != 0, "an untrained decoder reads X_h"
    assert ch07.check_07_4(loss, model, samples, donors)
    assert not ch07.check_07_4(-loss, model, samples, donors)
    assert "other way round" in capsys.readouterr().out
    assert not ch07.check_07_4(loss + 1.0, model, samples, donors)
    assert ch07.swap_loss(model, samples, samples) == 0, "its own X_h loses nothing"


def test_same_height_picks_the_nearest_slice_of_the_other_person():
    a = pi.SubjectData("a", torch.arange(3.0)[:, None], np.array([0.1, 0.5, 0.9]), 0.0)
    b = pi.SubjectData(
        "b", torch.arange(10.0, 14.0)[:, None], np.array([0.0, 0.4, 0.6, 1.0]), 0.0
    )
    assert pi.same_height(a, b).flatten().tolist() == [10.0, 11.0, 13.0]
