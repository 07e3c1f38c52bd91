"""The chapters' exercises: every check accepts the reference answer and rejects a plausible wrong one
(both built here from small hand-made or real inputs), and every notebook uses the exercise pattern of
CONTRIBUTING.md ("Exercises"): labelled exercises, folded solutions tagged ``solution`` that CI executes,
and check cells whose committed output says "Right". The notebook tests run over all chapters, so a new
chapter is held to the same pattern."""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import itertools
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from medvae_lib import exercises
from medvae_lib import multimodal_theory as mt
from medvae_lib.data import (
    DataFile,
    Split,
    apply_transform,
    image_transform,
    verify_file,
)
from medvae_lib.markup import read_myst
from medvae_lib.models import build_autoencoder
from medvae_lib.teachers import FrozenTeacher

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def verdict(capsys, check, answer, *args):
    """(returned value, printed line) of one check."""
    ok = check(answer, *args)
    line = capsys.readouterr().out.strip()
    assert line.startswith("Right: " if ok else "Not yet: "), line
    return ok, line


@functools.cache
def committed_right_lines() -> dict[str, str]:
    """{check name: the line its check cell printed in the committed notebook}."""
    lines = {}
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            names = CHECK_CALL.findall(cell.source) if cell.cell_type == "code" else []
            streams = [
                o.text for o in cell.get("outputs", []) if o.output_type == "stream"
            ]
            if len(names) == 1 and "solution" not in tags(cell) and streams:
                lines[names[0]] = streams[0].strip()
    return lines


def prints_the_committed_line(name: str, line: str) -> None:
    """A check's "Right" line for a reference answer is the line its notebook committed (nbval compares
    them), so a change to the checks cannot change the book's outputs unnoticed."""
    committed = committed_right_lines().get(name)
    assert committed is not None, f"no notebook calls {name}"
    assert line == committed, (
        f"{name} now prints {line!r}; the notebook committed {committed!r}"
    )


def accepts_and_rejects(capsys, name, right, wrong, *args, hint=""):
    check = getattr(exercises, name)
    ok, line = verdict(capsys, check, right, *args)
    assert bool(ok) is True, f"{name} rejects the reference answer"
    prints_the_committed_line(name, line)
    ok, line = verdict(capsys, check, wrong, *args)
    assert bool(ok) is False, f"{name} accepts a wrong answer"
    assert hint in line, line


# --- the helpers ------------------------------------------------------------------------------------


def test_a_missing_answer_asks_for_one_and_unknown_checks_are_named(capsys):
    check = exercises.check_01_2
    assert bool(check(None)) is False
    assert capsys.readouterr().out.startswith("Not yet: set `answer` first")
    with pytest.raises(AttributeError, match="no exercise checks for chapter 99"):
        exercises.check_99_1  # noqa: B018
    with pytest.raises(AttributeError, match="chapter 01 has no check 'check_01_99'"):
        exercises.check_01_99  # noqa: B018
    assert set(exercises.all_checks()) >= {"check_01_1", "check_06_2"}


def test_as_number_names_what_it_expected():
    assert exercises.as_number(np.float32(2.5)) == 2.5
    with pytest.raises(TypeError, match="the ratio should be a single number"):
        exercises.as_number([1.0, 2.0], "the ratio")


class Hostile:
    """An answer whose comparison, printing, conversion, iteration and truth value all raise."""

    def _raise(self, *args):
        raise RuntimeError("a hostile answer")

    __eq__ = __ne__ = __lt__ = __repr__ = __float__ = __iter__ = __len__ = __bool__ = (
        _raise
    )
    __hash__ = object.__hash__


UNREADABLE = {
    "a string of digits": "12",
    "text": "sixty-four",
    "bytes": b"17",
    "NaN": float("nan"),
    "infinity": float("inf"),
    "NaN in a sequence": [float("nan"), 0.5, 0.5],
    "a bool": True,
    "a complex number": 1 + 2j,
    "an object": object(),
    "an object whose __eq__ and __repr__ raise": Hostile(),
    "an endless iterator": itertools.count(),
    "a tensor that requires grad": torch.tensor(0.5, requires_grad=True),
    "tensors that require grad": torch.full((3,), 0.5, requires_grad=True),
    "a tensor on another device": torch.empty((), device="meta"),  # stands for a GPU
    "tensors on another device": torch.empty(3, device="meta"),
    "a set of strings": {"a", "b"},
    "a dict of text": {"pixels": "0.9"},
}


def required_arguments(check) -> int:
    """How many arguments besides ``answer`` a check needs."""
    parameters = list(inspect.signature(check).parameters.values())[1:]
    return sum(p.default is p.empty for p in parameters)


@pytest.mark.parametrize("name", sorted(exercises.all_checks()))
@pytest.mark.parametrize("kind", list(UNREADABLE))
def test_every_check_answers_not_yet_to_an_unreadable_answer(capsys, name, kind):
    """Whatever a student puts in ``answer``, a check prints "Not yet: <hint>" and never raises. The
    notebook's objects are replaced by None: an unreadable answer must be refused before they are used."""
    check = exercises.all_checks()[name]
    ok = check(UNREADABLE[kind], *[None] * required_arguments(check))
    line = capsys.readouterr().out.strip()
    assert bool(ok) is False and isinstance(ok, exercises.Verdict)
    assert line.startswith("Not yet: ") and len(line) > len("Not yet: ") + 10, line
    assert "\n" not in line, "one line"


def test_a_whole_number_is_whole_and_digits_are_not_numbers(capsys):
    sides = [16, 24, 32, 40, 48, 56, 64]
    assert exercises.check_01_2([float(s) for s in sides])  # 16.0 is 16
    capsys.readouterr()
    assert not exercises.check_01_2([16.9, *sides[1:]])  # int(16.9) would be 16
    assert "16.9 is not a whole number" in capsys.readouterr().out
    assert not exercises.check_01_2("1624")  # not 1, 6, 2, 4
    assert "got str" in capsys.readouterr().out
    assert not exercises.check_05_2(2.9, 4)  # 3 is right; 2.9 is not
    assert not exercises.check_05_1(63.9, (80, 96, 80), 4)  # 64 is right


def test_hints_name_the_problem_of_an_unreadable_answer(capsys):
    cases = [
        (exercises.check_05_2, "3", "not the text"),
        (exercises.check_05_2, float("nan"), "is nan"),
        (exercises.check_05_2, torch.tensor(3.0, requires_grad=True), "requires grad"),
        (exercises.check_05_2, torch.empty((), device="meta"), "device meta"),
        (exercises.check_05_2, [3, 3], "single number"),
        (exercises.check_01_1, itertools.count(), "more than 2"),
        (
            exercises.check_01_1,
            [0.5],
            "two numbers: (gap with minmax, gap with zscore) (got 1 item)",
        ),
        (
            exercises.check_04_1,
            {"pixels": float("nan")},
            "the AUROC of 'pixels' is nan",
        ),
        (exercises.check_07_2, Hostile(), "answer with one of"),
        (exercises.check_06_2, "a+e", "not a subset"),
    ]
    for check, answer, hint in cases:
        args = (
            [4] if check is exercises.check_05_2 else [None] * required_arguments(check)
        )
        assert not check(answer, *args)
        assert hint in capsys.readouterr().out, (check.__name__, hint)


def test_an_answer_that_reads_as_the_right_value_is_right(capsys):
    """Readers hand the check plain values: a float or str subclass whose ``__eq__`` raises, a numpy
    scalar, a CPU tensor without grad and a one-element list are judged by their value."""

    class OddFloat(float):
        def __eq__(self, other):
            raise RuntimeError("no")

        __hash__ = float.__hash__

    class OddStr(str):
        def __eq__(self, other):
            raise RuntimeError("no")

        __hash__ = str.__hash__

    for answer in (3, OddFloat(3.0), np.int64(3), torch.tensor(3), [3.0]):
        assert exercises.check_05_2(answer, 4), answer
    psnr = np.full((4, 4, 2), 20.0)
    psnr[:, 1] -= 5  # t1c is the hardest target
    assert exercises.check_07_2(OddStr("t1c"), psnr)
    assert not exercises.check_07_2(OddStr("t2"), psnr)
    assert capsys.readouterr().out.count("Right") == 6


def test_every_check_has_a_test():
    """Each check is exercised by a test file (this one, or tests/test_exercise_checks_NN.py of a chapter)."""
    tests = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_exercise*.py"))
    missing = [name for name in exercises.all_checks() if name not in tests]
    assert not missing, (
        f"checks without a test proving they accept the right answer and reject a wrong one: {missing}"
    )


# --- chapter 1 --------------------------------------------------------------------------------------


def hand_made_split(n: int = 12, side: int = 28, seed: int = 0) -> Split:
    """Images whose class 1 is brighter than class 0, with different contrast per image."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 150, size=(n, side, side)) + 60 * labels[:, None, None]
    return Split(images=images.astype(np.uint8), labels=labels.astype(np.int64))


def reference_gap(split: Split, norm: str) -> float:
    x = apply_transform(split.images, image_transform(32, normalisation=norm))
    means = x.flatten(1).mean(1).numpy()
    return float(means[split.labels == 1].mean() - means[split.labels == 0].mean())


def test_check_01_1(capsys):
    split = hand_made_split()
    right = (reference_gap(split, "minmax"), reference_gap(split, "zscore"))
    raw = split.images.reshape(len(split.labels), -1).mean(1)
    stored_values = (
        raw[split.labels == 1].mean() - raw[split.labels == 0].mean(),
        0.0,
    )  # 0-255, not normalised
    accepts_and_rejects(
        capsys, "check_01_1", right, stored_values, split, 32, hint="255 times"
    )
    accepts_and_rejects(
        capsys, "check_01_1", right, (-right[0], -right[1]), split, 32, hint="sign"
    )


def test_check_01_2(capsys):
    accepts_and_rejects(
        capsys,
        "check_01_2",
        [16, 24, 32, 40, 48, 56, 64],
        [16, 32, 64],
        hint="powers of two",
    )
    accepts_and_rejects(
        capsys,
        "check_01_2",
        list(range(16, 65, 8)),
        list(range(16, 65, 4)),
        hint="refused",
    )


def test_check_01_3(capsys, tmp_path):
    original = tmp_path / "data.npz"
    original.write_bytes(bytes(range(256)) * 8)
    entry = DataFile(
        key="x",
        filename="data.npz",
        image_size=28,
        sha256=hashlib.sha256(original.read_bytes()).hexdigest(),
    )
    copy = tmp_path / "copy" / "data.npz"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    content = bytearray(copy.read_bytes())
    content[len(content) // 2] ^= 0xFF
    copy.write_bytes(bytes(content))
    errors = []
    for path in (
        copy,
        tmp_path / "nowhere.npz",
    ):  # the changed copy; a path that does not exist
        try:
            verify_file(path, entry)
        except Exception as error:  # noqa: BLE001 - the exercise keeps whatever was raised
            errors.append(error)
    accepts_and_rejects(
        capsys, "check_01_3", errors[0], errors[1], hint="did not find your copy"
    )
    accepts_and_rejects(
        capsys,
        "check_01_3",
        errors[0],
        verify_file(original, entry),
        hint="put the exception",
    )


def test_check_01_4(capsys):
    from monai.transforms import Resize

    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, size=(28, 28)).astype(
        np.uint8
    )  # noise: all fine detail, aliasing is large
    x = torch.as_tensor(image[None] / 255.0, dtype=torch.float32)
    right = []
    for factor in (2, 3, 4):
        plain, smooth = (
            Resize((28 // factor,) * 2, mode="bilinear", anti_aliasing=aa)(x)
            for aa in (False, True)
        )
        right.append(
            float((torch.as_tensor(plain) - torch.as_tensor(smooth)).abs().mean())
        )
    accepts_and_rejects(
        capsys, "check_01_4", right, right[::-1], image, hint="reversed"
    )
    accepts_and_rejects(
        capsys, "check_01_4", right, [0.0, 0.0, 0.0], image, hint="enlarging"
    )


# --- chapter 2 --------------------------------------------------------------------------------------


def posterior(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 1, 8, 8, generator=g) * 1.5 + 4, torch.rand(
        6, 1, 8, 8, generator=g
    ) * 0.1 + 0.02


def test_check_02_2(capsys):
    mu, sigma = posterior()
    per_value = 0.5 * (mu**2 + sigma**2 - 2 * torch.log(sigma) - 1)
    rec = 700.0
    right = 1e-2 * per_value.flatten(1).sum(1).mean().item() / rec
    averaged = 1e-2 * per_value.mean().item() / rec
    accepts_and_rejects(
        capsys, "check_02_2", right, averaged, mu, sigma, rec, hint="sum per image"
    )
    accepts_and_rejects(
        capsys, "check_02_2", right, right * 1e-4, mu, sigma, rec, hint="1e-6"
    )


def test_check_02_3(capsys):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(8, 1, 16, 16, generator=g)
    noise = torch.linspace(0.01, 0.2, 8)[:, None, None, None] * torch.randn(
        8, 1, 16, 16, generator=g
    )
    reconstructions = (images + noise).clamp(0, 1)
    mse = ((reconstructions - images) ** 2).reshape(8, -1).mean(1).numpy()
    right = (
        float(np.mean(10 * np.log10(1 / mse))),
        float(10 * np.log10(1 / mse.mean())),
    )
    assert right[0] > right[1]
    accepts_and_rejects(
        capsys,
        "check_02_3",
        right,
        right[::-1],
        images,
        reconstructions,
        hint="swapped",
    )
    model_range = tuple(
        r - 10 * np.log10(4) for r in right
    )  # PSNR computed on [-1, 1] images with peak 1
    accepts_and_rejects(
        capsys,
        "check_02_3",
        right,
        model_range,
        images,
        reconstructions,
        hint="[-1, 1]",
    )


# --- chapter 3 --------------------------------------------------------------------------------------


def tiny_teacher() -> FrozenTeacher:
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 4, stride=4), torch.nn.Flatten()
    )
    return FrozenTeacher(
        encoder, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, name="tiny"
    )


def tiny_models():
    from medvae_lib.medvae_stage2 import ProjectionHead

    torch.manual_seed(0)
    autoencoder, head = (
        build_autoencoder("medvae_4_1_2d", width=8).eval(),
        ProjectionHead(1, hidden=8).eval(),
    )
    return autoencoder, head


def test_check_03_1(capsys):
    teacher = tiny_teacher()
    g = torch.Generator().manual_seed(2)
    images, latents = (
        torch.rand(5, 1, 16, 16, generator=g),
        torch.randn(5, 1, 4, 4, generator=g) * 3,
    )
    with torch.no_grad():
        a, b = teacher(images), teacher(latents / 4.6)
    right = ((a - b) ** 2).sum(1).mean().item()
    averaged = ((a - b) ** 2).mean().item()
    accepts_and_rejects(
        capsys,
        "check_03_1",
        right,
        averaged,
        teacher,
        images,
        latents,
        hint="averaged over the embedding",
    )
    with torch.no_grad():
        unrendered = ((a - teacher(latents)) ** 2).sum(1).mean().item()
    accepts_and_rejects(
        capsys, "check_03_1", right, unrendered, teacher, images, latents, hint="render"
    )


def test_check_03_2(capsys):
    autoencoder, head = tiny_models()
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mu = autoencoder.encode(images * 2 - 1)[0]

        def psnr_of(latent):
            decoded = ((autoencoder.decode(latent) + 1) / 2).clamp(0, 1)
            return (
                (10 * torch.log10(1 / ((decoded - images) ** 2).flatten(1).mean(1)))
                .mean()
                .item()
            )

        right, stage1 = psnr_of(head(mu)), psnr_of(mu)
    assert abs(right - stage1) > 0.05
    accepts_and_rejects(
        capsys,
        "check_03_2",
        right,
        stage1,
        autoencoder,
        head,
        images,
        hint="decode(mu)",
    )


def test_check_03_3(capsys):
    latents = torch.linspace(-3, 9, 64).reshape(1, 1, 8, 8)
    right = tuple(
        float(((latents / s >= 0) & (latents / s <= 1)).float().mean())
        for s in (4.6, 1.0)
    )
    assert right[0] > right[1] > 0
    accepts_and_rejects(
        capsys, "check_03_3", right, right[::-1], latents, hint="swapped"
    )
    accepts_and_rejects(
        capsys,
        "check_03_3",
        right,
        (100 * right[0], 100 * right[1]),
        latents,
        hint="percentages",
    )


# --- chapter 4 --------------------------------------------------------------------------------------


def probe_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    train_y, val_y = torch.arange(60) % 2, torch.arange(40) % 2
    inputs = {}
    for name, signal in (("pixels", 0.8), ("stage-1 latent", 0.5)):
        inputs[name] = {
            split: torch.randn(len(y), 1, 4, 4, generator=g)
            + signal * y[:, None, None, None].float()
            for split, y in (("train", train_y), ("val", val_y))
        }
    return inputs, train_y, val_y


def test_check_04_1(capsys):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    inputs, train_y, val_y = probe_inputs()
    right, on_train = {}, {}
    for name, x in inputs.items():
        xt, xv = (
            x["train"].reshape(60, -1).double().numpy(),
            x["val"].reshape(40, -1).double().numpy(),
        )
        scaler = StandardScaler().fit(xt)
        model = LogisticRegression(C=1.0, max_iter=2000).fit(
            scaler.transform(xt), train_y.numpy()
        )
        right[name] = roc_auc_score(
            val_y.numpy(), model.decision_function(scaler.transform(xv))
        )
        on_train[name] = roc_auc_score(
            train_y.numpy(), model.decision_function(scaler.transform(xt))
        )
    accepts_and_rejects(
        capsys, "check_04_1", right, on_train, inputs, train_y, val_y, hint="cs=(1.0,)"
    )
    accepts_and_rejects(
        capsys,
        "check_04_1",
        right,
        {"pixels": 0.9},
        inputs,
        train_y,
        val_y,
        hint="one validation",
    )


def test_check_04_2(capsys):
    from medvae_lib.latent_downstream import linear_probe, probe_scores

    inputs, train_y, val_y = probe_inputs(1)
    x = inputs["stage-1 latent"]
    scores = probe_scores(
        linear_probe(x["train"], train_y, x["val"], val_y)[0], x["val"]
    )
    labels = val_y.numpy()
    pos, neg = scores[labels == 1], scores[labels == 0]
    right = float(
        np.mean(
            [
                1.0 if p > n else 0.5 if p == n else 0.0
                for p, n in itertools.product(pos, neg)
            ]
        )
    )
    accuracy = float(np.mean((scores > 0) == (labels == 1)))
    assert abs(right - accuracy) > 1e-6
    accepts_and_rejects(
        capsys, "check_04_2", right, accuracy, inputs, train_y, val_y, hint="accuracy"
    )
    accepts_and_rejects(
        capsys,
        "check_04_2",
        right,
        1 - right,
        inputs,
        train_y,
        val_y,
        hint="normal image scores",
    )


# --- chapter 6 --------------------------------------------------------------------------------------


def test_check_06_1(capsys):
    problem = mt.Problem(overlap=0.3)
    a_star = problem.arrays["h_star"] @ problem.arrays["g_star"]
    target = (
        a_star @ problem.arrays["cov_s"] @ a_star.T
    )  # covariance of A* x: all four modalities see everything
    right = float(
        (np.trace(target) - np.linalg.eigvalsh(target).max()) / problem.task_dim
    )
    assert right > 0.1
    accepts_and_rejects(capsys, "check_06_1", right, 0.0, problem, hint="two numbers")
    accepts_and_rejects(
        capsys, "check_06_1", right, mt.eta_population(problem, "a"), problem
    )


def test_check_06_2(capsys):
    problem = mt.Problem(overlap=0.3)
    eta = {s: mt.eta_population(problem, s) for s in mt.all_subsets()}
    gains = {
        f"{x}+{y}": min(eta[x], eta[y]) - eta[f"{x}+{y}"]
        for x, y in itertools.combinations(mt.MODALITIES, 2)
    }
    right, worst = max(gains, key=gains.get), min(gains, key=gains.get)
    accepts_and_rejects(
        capsys, "check_06_2", right, worst, problem, hint="take the largest"
    )
    accepts_and_rejects(
        capsys, "check_06_2", right, "a+e", problem, hint="not a subset"
    )


# --- chapters 5, 7 and 8: their own test files test the hints; here, the committed lines -----------


def right_line(capsys, name, right, *args) -> str:
    ok, line = verdict(capsys, getattr(exercises, name), right, *args)
    assert bool(ok) is True, f"{name} rejects the reference answer"
    return line


def test_checks_of_chapters_5_7_and_8_print_their_committed_lines(capsys):
    from medvae_lib import contrastive_benchmark as cb
    from medvae_lib import personalized_invariant as pi
    from medvae_lib.training import settings_for

    prints_the_committed_line(
        "check_05_1", right_line(capsys, "check_05_1", 64.0, (80, 96, 80), 4, 1)
    )
    prints_the_committed_line("check_05_2", right_line(capsys, "check_05_2", 3, 4))

    settings = dict(
        settings_for(pi.MODES, "ci", {}), image_size=32, features=(4, 4, 8, 8, 16, 4)
    )
    settings.update(prior_heads=2, ssim_kernel=3)
    torch.manual_seed(0)
    model = pi.build_model(settings, "full")
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 6:-6, 8:-8] = 1
    samples = torch.cat([torch.rand(2, 4, 32, 32) * mask, mask], 1)
    paper = pi.off_diagonal_mean(
        pi.paper_protocol_scores(model, samples, settings)["psnr"]
    ).mean()
    brain = pi.off_diagonal_mean(
        pi.synthesis_scores(model, samples, settings)["psnr"]
    ).mean()
    line = right_line(capsys, "check_07_1", paper - brain, model, samples, settings)
    prints_the_committed_line("check_07_1", line)
    psnr = np.full((4, 4, 2), 20.0)
    psnr[:, 3] -= 5
    prints_the_committed_line(
        "check_07_2", right_line(capsys, "check_07_2", "flair", psnr)
    )

    rng = np.random.default_rng(0)
    sim, positives = rng.normal(size=(12, 12)), np.eye(12, dtype=bool)
    top5 = np.argsort(-sim, axis=1)[:, :5]
    recall = float(np.mean([positives[i, top5[i]].any() for i in range(12)]))
    prints_the_committed_line(
        "check_08_1", right_line(capsys, "check_08_1", recall, sim, positives)
    )
    prompts = torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(0))
    images = torch.nn.functional.normalize(
        torch.randn(9, 8, generator=torch.Generator().manual_seed(1)), dim=-1
    )
    labels = np.arange(9) % 3
    single = torch.nn.functional.normalize(prompts[:, 0], dim=-1)
    accuracy = float((cb.zero_shot_predict(images, single) == labels).mean())
    line = right_line(capsys, "check_08_2", accuracy, images, prompts, labels)
    prints_the_committed_line("check_08_2", line)


# --- the pattern in every notebook ---------------------------------------------------------------


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


EXERCISE = re.compile(r"```\{exercise\}[^\n]*\n:label: (\S+)")
START = re.compile(r"```\{solution-start\} (\S+)")
CHECK_CALL = re.compile(r"exercises\.(check_\w+)\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_follow_the_pattern(path):
    cells = read_myst(path).cells  # as the book reads the notebook (medvae_lib.markup)
    number = path.stem[:2]
    exercise_at = {
        i: m.group(1) for i, c in enumerate(cells) if (m := EXERCISE.search(c.source))
    }
    labels = list(exercise_at.values())
    assert labels, f"{path.name}: no {{exercise}} (see CONTRIBUTING.md, Exercises)"
    assert labels == [f"ex-{number}-{k}" for k in range(1, len(labels) + 1)], (
        f"{path.name}: label the exercises ex-{number}-1, ex-{number}-2, ... in order; found {labels}"
    )
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    first = min(exercise_at)
    assert (
        text.find("## Exercises")
        < text.find(cells[first].source)
        < text.find("## What's next")
    ), f"{path.name}: the exercises belong in the ## Exercises section"
    inside = False
    for i, cell in enumerate(cells):
        start, end = START.search(cell.source), "```{solution-end}" in cell.source
        if start:
            assert not inside, (
                f"{path.name}: solution of {start.group(1)} starts before the last one ended"
            )
            assert ":class: dropdown" in cell.source, (
                f"{path.name}: fold the solution of {start.group(1)} (dropdown)"
            )
            previous = max(j for j in exercise_at if j < i)
            assert start.group(1) == exercise_at[previous], (
                f"{path.name}: the solution after {exercise_at[previous]} is labelled {start.group(1)}"
            )
            inside = True
        if start or end or inside:
            assert "solution" in tags(cell), (
                f"{path.name}: cell {i} of a solution is not tagged 'solution'"
            )
        elif "solution" in tags(cell):
            raise AssertionError(
                f"{path.name}: cell {i} is tagged 'solution' outside a solution"
            )
        if end:
            assert inside, (
                f"{path.name}: solution-end without solution-start (cell {i})"
            )
            inside = False
    assert not inside, f"{path.name}: the last solution has no solution-end"
    started = [START.search(c.source).group(1) for c in cells if START.search(c.source)]
    assert started == labels, (
        f"{path.name}: every exercise needs one solution; exercises {labels}, solutions {started}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_checks_exist_and_the_committed_solutions_pass_them(path):
    cells = nbformat.read(path, as_version=4).cells
    known = exercises.all_checks()
    for cell in cells:
        if cell.cell_type != "code" or "solution" in tags(cell):
            continue
        for name in CHECK_CALL.findall(cell.source):
            assert name in known, (
                f"{path.name} calls exercises.{name}, which does not exist"
            )
            assert name.startswith(f"check_{path.stem[:2]}_"), (
                f"{path.name} calls another chapter's {name}"
            )
            assert "nbval-check-output" in tags(cell), (
                f"{path.name}: tag the cell calling {name} for nbval"
            )
            streams = [o for o in cell.outputs if o.output_type == "stream"]
            assert streams and streams[0].text.startswith("Right"), (
                f"{path.name}: the committed solution does not pass {name}: {streams[0].text if streams else 'no output'}"
            )


def assigned(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def loaded(source: str) -> set[str]:
    return {
        n.id
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nothing_outside_a_solution_needs_it(path):
    """The student copy drops the solutions: no later cell may use a name only a solution defines
    (``answer`` aside, which the copy sets to None)."""
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    shared = set().union(
        *(assigned(c.source) for c in code if "solution" not in tags(c))
    )
    only_in_solutions = (
        set().union(*(assigned(c.source) for c in code if "solution" in tags(c)))
        - shared
        - {"answer"}
    )
    for cell in code:
        if "solution" not in tags(cell):
            used = loaded(cell.source) & only_in_solutions
            assert not used, (
                f"{path.name}: a cell outside the solutions uses {sorted(used)}, defined only in a solution"
            )
