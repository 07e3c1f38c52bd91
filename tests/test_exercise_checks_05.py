"""Chapter 5's exercise checks accept the right answer and reject plausible wrong ones."""

import pytest

from medvae_lib import exercises


def test_05_1_accepts_the_compression_and_rejects_the_2d_figure(capsys):
    assert exercises.check_05_1(64.0, (80, 96, 80), 4)
    assert capsys.readouterr().out.startswith("Right")
    assert not exercises.check_05_1(16, (80, 96, 80), 4)  # the 2D compression
    assert "third axis" in capsys.readouterr().out
    assert not exercises.check_05_1(4, (80, 96, 80), 4)  # the factor per side
    assert not exercises.check_05_1(20 * 24 * 20, (80, 96, 80), 4)  # the latent's size
    assert exercises.check_05_1(512, (64, 64, 64), 8)


def test_05_1_refuses_a_shape_the_factor_does_not_divide(capsys):
    with pytest.raises(ValueError, match="divisible"):
        exercises.check_05_1(64, (81, 96, 80), 4)
    # a text answer is the student's slip, not the chapter's: "Not yet", no traceback
    assert not exercises.check_05_1("sixty-four", (80, 96, 80), 4)
    assert capsys.readouterr().out.startswith("Not yet: ")


def test_05_2_accepts_the_last_phase_and_rejects_the_first(capsys):
    assert exercises.check_05_2(3, 4)
    assert capsys.readouterr().out.startswith("Right")
    assert not exercises.check_05_2(0, 4)
    assert "END" in capsys.readouterr().out
    assert not exercises.check_05_2(1, 4)
    assert exercises.check_05_2(7, 8)
    assert not exercises.check_05_2(3, 8)
