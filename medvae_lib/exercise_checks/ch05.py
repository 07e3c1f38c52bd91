"""Checks of chapter 5's exercises (``05_medvae_3d``); ``exercises.check_05_<n>`` finds them."""

from __future__ import annotations

import math

from ..exercises import answer_check, number, report


@answer_check(number("the compression (voxels per latent value)"))
def check_05_1(value: float, shape, factor: int, latent_channels: int = 1) -> bool:
    """Exercise 5.1: voxels of a volume of ``shape`` per value of its 3D latent (``factor`` per side,
    ``latent_channels`` channels)."""
    if len(shape) != 3 or any(s % factor for s in shape):
        raise ValueError(
            f"the check needs a 3D shape divisible by {factor}, got {tuple(shape)}"
        )
    latent = math.prod(s // factor for s in shape) * latent_channels
    expected = math.prod(shape) / latent
    if math.isclose(value, expected, rel_tol=1e-6):
        return report(
            True,
            f"{expected:g} voxels per latent value, whatever the volume's size",
            "",
        )
    if math.isclose(value, factor**2 / latent_channels, rel_tol=1e-6):
        hint = "that is the 2D figure: a 3D latent is also smaller along the third axis"
    elif math.isclose(value, factor, rel_tol=1e-6):
        hint = "that is the factor per side; the volume shrinks along each of its three sides"
    elif math.isclose(value, latent, rel_tol=1e-6):
        hint = "that is the number of latent values; divide the number of voxels by it"
    else:
        hint = "count the voxels (product of the three sides) and the latent values (each side / factor, times channels)"
    return report(False, "", hint)


@answer_check(number("the slice index modulo the factor"))
def check_05_2(value: float, factor: int = 4) -> bool:
    """Exercise 5.2: the slice phase (index modulo ``factor``, along the last axis) that the untrained
    inflated model reconstructs best: the one slice in ``factor`` its stride-2 kernels read."""
    expected = factor - 1
    if value == expected:
        return report(
            True,
            f"slices {expected}, {expected + factor}, ... are read; the other {factor - 1} of every {factor} are copies",
            "",
        )
    if value == 0:
        hint = (
            "MedVAE's down-sampling pads one zero slice at the END and the centred kernel reads the middle of "
            "three: output slice j reads input slice 2j + 1, twice over"
        )
    elif not 0 <= value < factor or value != int(value):
        hint = f"give an index modulo {factor}: a whole number from 0 to {factor - 1}"
    else:
        hint = "compare how far the latent moves for each phase once more, averaged over several patches"
    return report(False, "", hint)
