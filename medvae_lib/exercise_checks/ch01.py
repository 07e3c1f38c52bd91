"""Checks for the exercises of chapter 1 (data preparation). Each computes the expected answer itself from
the objects the notebook passes (validation data only) and says what a typical wrong answer got wrong."""

from __future__ import annotations

import numpy as np

from ..data import ChecksumError, Split, apply_transform, image_transform
from ..exercises import answer_check, close, numbers, report, whole_numbers
from ..models import get_config


def class_brightness_gap(split: Split, image_size: int, normalisation: str) -> float:
    """Mean over pneumonia images minus mean over normal images of each image's mean value, after
    ``normalisation`` (label 1 is pneumonia, 0 normal)."""
    x = apply_transform(
        split.images, image_transform(image_size, normalisation=normalisation)
    )
    means = x.flatten(1).mean(1).double().numpy()
    labels = np.asarray(split.labels).ravel()
    return float(means[labels == 1].mean() - means[labels == 0].mean())


@answer_check(
    numbers(2, "each gap", "give two numbers: (gap with minmax, gap with zscore)")
)
def check_01_1(got: list[float], split: Split, image_size: int) -> bool:
    """``answer``: (gap with minmax, gap with zscore), the class brightness gap of the validation split."""
    minmax, zscore = (
        class_brightness_gap(split, image_size, n) for n in ("minmax", "zscore")
    )
    if close(got, [minmax, zscore], rtol=1e-2, atol=1e-3):
        return report(
            True,
            "min-max scaling keeps the brightness difference between the classes; z-scoring each image removes it, "
            "so an autoencoder trained on z-scored images would no longer have to reproduce it.",
            "",
        )
    if close(got[0], 255 * minmax, rtol=1e-2):
        return report(
            False,
            "",
            "the minmax gap is 255 times too large: use the normalised images, not the 0-255 values",
        )
    if close(got, [-minmax, -zscore], rtol=1e-2, atol=1e-3):
        return report(
            False,
            "",
            "the sign is flipped: take pneumonia (label 1) minus normal (label 0)",
        )
    if close(got[0], minmax, rtol=1e-2):
        return report(
            False,
            "",
            "the minmax gap is right; z-score each image (normalisation='zscore') for the second",
        )
    return report(
        False,
        "",
        "per image take the mean value after the transform, then average those means over each class of the "
        "validation split, and subtract: pneumonia minus normal",
    )


def sides_that_fit(model: str, sides) -> list[int]:
    """The sides (square images) that ``model`` accepts."""
    factor = get_config(model).factor
    return [int(s) for s in sides if s % factor == 0]


@answer_check(whole_numbers("each side", "give a list of whole numbers, e.g. [16, 24]"))
def check_01_2(
    answer: list[int], model: str = "medvae_8_1_2d", sides=range(16, 65)
) -> bool:
    """``answer``: the sides from 16 to 64 (inclusive) of square images that ``model`` accepts."""
    expected = sides_that_fit(model, sides)
    got = sorted(answer)
    if got == expected:
        return report(
            True,
            f"{model} halves each side {get_config(model).levels - 1} times, so a side must be divisible by "
            f"{get_config(model).factor}.",
            "",
        )
    if got == [s for s in expected if s & (s - 1) == 0]:
        return report(
            False, "", "powers of two fit, but they are not the only sides that do"
        )
    if set(got) > set(expected):
        return report(
            False,
            "",
            "some of your sides are refused: try each with latent_shape((s, s)) and catch the error",
        )
    if set(got) < set(expected):
        return report(
            False, "", "some sides that fit are missing: try every side from 16 to 64"
        )
    return report(
        False,
        "",
        "try each side s from 16 to 64 with get_config(model).latent_shape((s, s))",
    )


@answer_check()  # the answer is an exception object: only isinstance is asked of it
def check_01_3(answer) -> bool:
    """``answer``: the exception ``verify_file(copy, datafile)`` raised for a copy with one byte changed."""
    if isinstance(answer, ChecksumError):
        return report(
            True,
            "the copy has the same size as the original, so a size check would accept it; its checksum differs, "
            "so verify_file refuses it and says which file and why.",
            "",
        )
    if isinstance(answer, FileNotFoundError):
        return report(
            False,
            "",
            "verify_file did not find your copy: pass the path of the file you changed",
        )
    if not isinstance(answer, BaseException):
        return report(
            False,
            "",
            "put the exception itself in answer (except Exception as error: answer = error); "
            "if verify_file raised none, the copy was not changed",
        )
    return report(
        False,
        "",
        f"verify_file raised {type(answer).__name__}, not a checksum error: check what you passed",
    )


def aliasing_differences(image: np.ndarray, factors=(2, 3, 4)) -> list[float]:
    """Mean |without - with anti-aliasing| of ``image`` (uint8, 0-255) shrunk by each factor with MONAI's
    bilinear ``Resize``, on the [0, 1] scale (what Figure 1.3 shows)."""
    import torch
    from monai.transforms import Resize

    x = torch.as_tensor(np.asarray(image)[None].astype(np.float32) / 255.0)
    side = min(x.shape[1:])
    out = []
    for factor in factors:
        plain, smooth = (
            Resize((side // factor,) * 2, mode="bilinear", anti_aliasing=aa)(x)
            for aa in (False, True)
        )
        out.append(
            float((torch.as_tensor(plain) - torch.as_tensor(smooth)).abs().mean())
        )
    return out


@answer_check(
    numbers(
        3,
        "each difference",
        "give three numbers: the mean absolute difference at 2x, 3x and 4x",
    )
)
def check_01_4(got: list[float], image: np.ndarray) -> bool:
    """``answer``: [mean |difference| at 2x, 3x, 4x] between shrinking without and with anti-aliasing."""
    expected = aliasing_differences(image)
    if close(got, expected, rtol=1e-3, atol=1e-6):
        return report(
            True,
            "the more an image is shrunk, the more detail would fold into false patterns without the blur.",
            "",
        )
    if close(got, expected[::-1], rtol=1e-3, atol=1e-6):
        return report(False, "", "the order is reversed: 2x first, then 3x, then 4x")
    if close(got, [255 * e for e in expected], rtol=1e-3):
        return report(
            False,
            "",
            "255 times too large: divide the image by 255 first, as Figure 1.3 does",
        )
    if all(abs(g) < 1e-6 for g in got):
        return report(
            False,
            "",
            "no difference: that happens when enlarging; shrink to side // factor",
        )
    return report(
        False,
        "",
        "for each factor, Resize((side // factor,) * 2, mode='bilinear', anti_aliasing=False / True) on the "
        "image in [0, 1], then the mean of the absolute difference",
    )
