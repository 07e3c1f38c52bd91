"""What each chapter's full mode costs on a free Colab GPU: counted, not timed.

No GPU was lent to this book's sessions, so full mode has never been timed. Instead, this
module *counts* the work of each chapter's full-mode training: it builds the chapter's own
trainer (or network) at full size on PyTorch's ``meta`` device, which has shapes but no
data, runs one step of each kind under ``torch.utils.flop_counter.FlopCounterMode``, and
multiplies by the number of steps and runs the chapter's full-mode settings ask for. The
same pass adds up the activations autograd keeps for the backward pass (through
``saved_tensors_hooks``), which with the weights, gradients and Adam's two moments gives
the memory a step needs. Nothing is computed: the whole count takes under a minute on a
CPU.

From the counts come two times for a T4 (Colab's free GPU):

* a **lower bound**, at the T4 datasheet's peak (8.1 TFLOP/s in float32, 65 in float16 on
  its tensor cores): no run can be faster;
* an **estimate**, at a quarter of that peak: an *assumption* (convolutional training
  commonly sustains a fraction of a GPU's peak; small layers and data loading sustain
  less), not a measurement. Measure it on a GPU before relying on it.

Only the training steps (and, for chapter 7, its sliding-window scoring) are counted, and
of them the matrix products, convolutions and attention (what ``FlopCounterMode``
counts; normalisation, element-wise operations and the optimiser are left out):
evaluation passes, data loading, CPU metrics and probes add to the time. A chapter that
cannot run on a T4 at all (its memory) still gets its T4-hours: a unit of work, to be
divided by what a larger GPU sustains.

The memory of a step is a lower bound too: the activations kept for the backward pass,
the weights, gradients and Adam moments of the step's networks, and the state of the
trainers that a chapter keeps on the GPU while it trains the next one; not the
gradients of activations during the backward pass, cuDNN's workspace, the CUDA context
or the allocator's slack.

The disk figure adds what a chapter downloads (sizes recorded in the manifests, the hub's
listings or the library's constants, each with its source) and what it writes
(checkpoints, computed from the parameter counts; caches, from their shapes).

Run it::

    .venv/bin/python -m medvae_lib.full_mode_cost          # the table for all chapters
    .venv/bin/python -m medvae_lib.full_mode_cost --chapter 02
    .venv/bin/python -m medvae_lib.full_mode_cost --chapter 07 --set seeds=[0]
    .venv/bin/python -m medvae_lib.full_mode_cost --paper  # at PAPER_SCALE

``--set`` counts a chapter with its settings changed as the notebook's ``overrides``
would change them: a way to size a run to the GPU at hand before starting it.

Full mode is sized by this count to a free Colab session: each chapter within a T4's
memory, ``COLAB_DISK_GB`` of disk and ``COLAB_SESSION_HOURS`` at the estimate (a test
holds it there). To fit, the trainers autocast to float16 on a GPU (the ``amp``
setting), finished runs a chapter keeps are parked off the GPU, and chapters 2, 5 and 7
train shorter than their papers. ``PAPER_SCALE`` in those chapters' settings holds the
longer schedules, for a larger GPU or several sessions; ``--paper`` counts them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

from .training import counted_precision, settings_for

GIB = 2**30
GB = 1e9

# NVIDIA T4 datasheet: 8.1 TFLOP/s single precision, 65 TFLOP/s mixed (FP16/FP32) on
# tensor cores; 16 GB of memory, of which Colab leaves about 15 GB to a program.
T4_PEAK = {"float32": 8.1e12, "float16": 65e12}
T4_MEMORY_GB = 15.0
SUSTAINED_FRACTION = 0.25  # an assumption, see the module's docstring

# Download sizes not computable from a manifest, with where each is recorded.
WEIGHTS = {
    "vgg16 (LPIPS backbone)": (
        528e6,
        "torchvision's listing of vgg16-397923af.pth (527.8 MB)",
    ),
    "MedVAE vae_4x_1c_2D.ckpt": (221e6, "the hub's listing of stanfordmimi/MedVAE"),
    "MedVAE vae_4x_1c_3D.ckpt": (644e6, "the hub's listing of stanfordmimi/MedVAE"),
    "BiomedCLIP weights": (784e6, "the hub's listing of microsoft/BiomedCLIP-..."),
    "CLIP ViT-B/16 weights": (
        599e6,
        "the hub's listing of timm/vit_base_patch16_clip_224",
    ),
    "all-MiniLM-L6-v2": (91e6, "the hub's listing of sentence-transformers"),
}


@dataclass
class StepCount:
    """One step of one kind, counted on the meta device."""

    flops: float  # floating-point operations (a multiply-add counts 2)
    activations: int  # bytes autograd keeps for the backward pass, each tensor once
    state: int  # bytes of weights, gradients and optimiser moments


@dataclass
class Work:
    """``steps`` steps of a counted kind, repeated ``runs`` times, in ``precision``."""

    label: str
    step: StepCount
    steps: int
    runs: int = 1
    precision: str = "float32"

    @property
    def flops(self) -> float:
        return self.step.flops * self.steps * self.runs

    @property
    def memory(self) -> float:
        """Bytes a step holds; under float16 autocast most activations take half."""
        kept = self.step.activations / (2 if self.precision == "float16" else 1)
        return kept + self.step.state


@dataclass
class ChapterCost:
    chapter: str
    work: list[Work] = field(default_factory=list)
    disk: list[tuple[str, float, str]] = field(
        default_factory=list
    )  # item, bytes, source
    note: str = ""
    # bytes other runs keep on the GPU while the largest step runs (finished trainers)
    resident: float = 0.0

    def seconds(self, fraction: float = 1.0) -> float:
        """Seconds on a T4 sustaining ``fraction`` of its peak in each run's precision."""
        return sum(w.flops / (T4_PEAK[w.precision] * fraction) for w in self.work)

    @property
    def peak_memory(self) -> float:
        return max((w.memory for w in self.work), default=0.0) + self.resident

    @property
    def disk_bytes(self) -> float:
        return sum(size for _, size, _ in self.disk)


def _state_bytes(*modules: torch.nn.Module) -> int:
    """Weights of every module, plus gradient and Adam's two moments of the trainable ones."""
    total = 0
    for module in modules:
        for p in module.parameters():
            size = p.numel() * p.element_size()
            total += size * (4 if p.requires_grad else 1)
    return total


def _weight_bytes(*modules: torch.nn.Module) -> int:
    """Weights alone: what a parked trainer keeps on the GPU of a module it keeps."""
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def count_step(step: Callable[[], object], *modules: torch.nn.Module) -> StepCount:
    """Run ``step`` (meta tensors only) and count its operations and kept activations.

    ``modules`` are the networks the step uses: their weights are state, not
    activations. A tensor that several operations keep (a layer's output that the next
    layer also keeps as its input) is counted once, by its storage."""
    weights = {p.untyped_storage()._cdata for m in modules for p in m.parameters()}
    kept: dict[int, torch.UntypedStorage] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in weights:
            kept[storage._cdata] = storage  # the reference keeps the key unique
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    activations = sum(storage.nbytes() for storage in kept.values())
    return StepCount(counter.get_total_flops(), activations, _state_bytes(*modules))


@contextlib.contextmanager
def _lpips_without_download():
    """Build MONAI's LPIPS with random weights: same network, no download."""
    import torchvision
    from monai.losses import PerceptualLoss

    init, build_vgg16 = PerceptualLoss.__init__, torchvision.models.vgg16

    def no_weights(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "pretrained": False})

    def vgg16(*args, **kwargs):
        return build_vgg16(weights=None)

    with (
        mock.patch.object(PerceptualLoss, "__init__", no_weights),
        mock.patch("torchvision.models.vgg16", vgg16),
    ):
        yield


def _meta(shape) -> torch.Tensor:
    return torch.rand(shape, device="meta")


def _stage1_steps(trainer, batch: torch.Tensor) -> dict[str, StepCount]:
    """The three kinds of stage-1 step: before ``adv_start``, the adversarial generator
    step and (alternating updates) the discriminator-only step."""
    c = trainer.config
    mods = (trainer.autoencoder, trainer.discriminator, trainer.perceptual)
    kinds = {"warm-up": c.adv_start - (c.adv_start % 2)}
    if c.adv_weight > 0:
        kinds["generator"] = kinds["warm-up"] + 2
        kinds["discriminator"] = kinds["warm-up"] + 3
    return {
        name: count_step(lambda s=step: trainer.train_step(batch, s), *mods)
        for name, step in kinds.items()
    }


def _adversarial_work(label, counts, steps, adv_start, runs, p) -> list[Work]:
    """Steps before ``adv_start``, then generator and discriminator steps in turn, in
    precision ``p``."""
    if "generator" not in counts:  # no adversarial term: every step is a warm-up step
        return [Work(f"{label}: warm-up", counts["warm-up"], steps, runs, p)]
    after = steps - adv_start
    return [
        Work(f"{label}: warm-up", counts["warm-up"], adv_start, runs, p),
        Work(f"{label}: generator", counts["generator"], (after + 1) // 2, runs, p),
        Work(f"{label}: discriminator", counts["discriminator"], after // 2, runs, p),
    ]


def _checkpoint_bytes(*modules) -> float:
    """A checkpoint: every module's weights and Adam's two moments (float32)."""
    return sum(3 * p.numel() * 4 for m in modules for p in m.parameters())


def _array_bytes(manifest: str, key: str, dims: int) -> tuple[str, float, str]:
    """Size of a MedMNIST-layout file, uncompressed (uint8): an upper bound."""
    from .data import load_manifest

    spec = load_manifest(manifest).files[key]
    n = sum(spec.n_samples.values())
    size = n * spec.image_size**dims
    source = f"{n} images of {spec.image_size}^{dims}, uncompressed: at most"
    return spec.filename, float(size), source


def chapter_02(overrides=None) -> ChapterCost:
    from .medvae_stage1 import Stage1Trainer
    from .medvae_stage1.settings import MODES, stage1_config

    s = settings_for(MODES, "full", overrides)
    if not s["ablation"] or s["comparison_steps"] is not None:
        raise ValueError(
            "the count follows full mode's schedule (the ablation, seeds on the exported "
            "model's own steps): keep ablation=True and comparison_steps=None"
        )
    with _lpips_without_download(), torch.device("meta"):
        t = Stage1Trainer(stage1_config(s, 0), device="meta")
    side = s["image_size"]
    counts = _stage1_steps(t, _meta((s["batch_size"], 1, side, side)))
    seeds, steps, start = s["comparison_seeds"], s["steps"], s["adv_start"]
    p = counted_precision(s["amp"])
    arm = _adversarial_work("with GAN", counts, steps, start, seeds, p)
    work = [
        Work("warm-up", counts["warm-up"], start, seeds, p),
        *arm[1:],
        Work("without GAN", counts["warm-up"], steps - start, seeds, p),
    ]
    # each seed: a warm-up and two arms; while the last arm trains, its warm-up stays
    # on the GPU and the finished arms are parked (Trainer.park): their autoencoders
    # (and perceptual networks, which a trainer keeps beside its modules)
    idle = _state_bytes(t.autoencoder, t.discriminator, t.perceptual)
    idle += (2 * seeds - 1) * _weight_bytes(t.autoencoder, t.perceptual)
    ckpt = _checkpoint_bytes(t.autoencoder, t.discriminator)
    return ChapterCost(
        "02",
        work,
        [
            _array_bytes("pneumoniamnist", "128", 2),
            ("vgg16 (LPIPS backbone)", *WEIGHTS["vgg16 (LPIPS backbone)"]),
            ("MedVAE 2D weights", *WEIGHTS["MedVAE vae_4x_1c_2D.ckpt"]),
            (
                f"{3 * seeds} checkpoints ({seeds} seeds x 3 runs)",
                3 * seeds * ckpt,
                "parameters x 12 bytes",
            ),
        ],
        resident=idle,
    )


def chapter_03(overrides=None) -> ChapterCost:
    import timm

    from .medvae_stage2 import Stage2Config, Stage2Trainer
    from .medvae_stage2.settings import MODES
    from .models import build_autoencoder
    from .teachers import FrozenTeacher

    s = settings_for(MODES, "full", overrides)
    with torch.device("meta"):
        ae = build_autoencoder(s["model"], s["width"])
        vit = timm.create_model("vit_base_patch16_224", num_classes=512)
        teacher = FrozenTeacher(vit, 224, name=s["teacher"])
        fields = Stage2Config.__dataclass_fields__
        cfg = Stage2Config(**{k: v for k, v in s.items() if k in fields})
        t = Stage2Trainer(cfg, ae, teacher, device="meta")
    # its checks and normalisation read values, which meta tensors have not: resize only
    teacher.preprocess = lambda im: torch.nn.functional.interpolate(
        im.expand(-1, 3, -1, -1), size=(224, 224), mode="bicubic"
    )
    x = _meta((s["batch_size"], 1, s["image_size"], s["image_size"]))
    count = count_step(lambda: t.train_step(x, 0), t.head, ae, teacher)
    return ChapterCost(
        "03",
        [Work("stage-2 head", count, s["steps"])],
        [
            ("BiomedCLIP weights", *WEIGHTS["BiomedCLIP weights"]),
            ("head checkpoint", _checkpoint_bytes(t.head), "parameters x 12 bytes"),
        ],
        note="reads chapter 2's exported model and the cached 128 px images",
    )


def chapter_04(overrides=None) -> ChapterCost:
    from .data_prep import MODES as DATA
    from .latent_downstream import MODES
    from .medvae_stage1 import Stage1Config, Stage1Trainer
    from .models import build_classifier

    s, side = settings_for(MODES, "full", overrides), DATA["full"]["image_size"]
    with torch.device("meta"):
        net = build_classifier(1, 2, width=s["classifier_width"], stem_stride=1)
    opt = torch.optim.AdamW(net.parameters())

    def classify(x):
        net(x).float().sum().backward()
        opt.step()

    work, seeds = [], len(s["classifier_seeds"])
    # pixels, and four 32x32 inputs: two latents, a resize, the published latent
    for label, size, runs in (
        ("classifier, pixels", side, seeds),
        ("latents", 32, 4 * seeds),
    ):
        x = _meta((s["classifier_batch_size"], 1, size, size))
        count = count_step(lambda x=x: classify(x), net)
        work.append(Work(label, count, s["classifier_steps"], runs))
    for model in s["sweep_models"]:
        cfg = Stage1Config(
            model=model,
            width=s["sweep_width"],
            batch_size=s["sweep_batch_size"],
            adv_weight=0,
        )
        with torch.device("meta"):
            t = Stage1Trainer(cfg, device="meta")
        x = _meta((s["sweep_batch_size"], 1, side, side))
        count = count_step(lambda t=t, x=x: t.train_step(x, 0), t.autoencoder)
        p = counted_precision(cfg.amp)
        work.append(Work(model, count, s["sweep_steps"], len(s["sweep_seeds"]), p))
    return ChapterCost(
        "04",
        work,
        [("MedVAE 2D weights", *WEIGHTS["MedVAE vae_4x_1c_2D.ckpt"])],
        note="chapters 2 and 3's models and images are read from their caches",
    )


def chapter_05(overrides=None) -> ChapterCost:
    from .medvae_3d.settings import MODES
    from .medvae_3d.trainer import Stage1Trainer3D, stage1_3d_config
    from .models import build_autoencoder

    s = settings_for(MODES, "full", overrides)
    with _lpips_without_download(), torch.device("meta"):
        ae2d = build_autoencoder("medvae_4_1_2d", "full")
        t = Stage1Trainer3D(stage1_3d_config(s, 0, "scratch"), ae2d, device="meta")
    p = s["patch"]
    counts = _stage1_steps(t, _meta((s["batch_size"], 1, p, p, p)))
    runs = len(s["people"]) * s["seeds"] * 2
    precision = counted_precision(s["amp"])
    work = _adversarial_work(
        "3D stage 1", counts, s["steps"], s["adv_start"], runs, precision
    )
    # scoring: the validation patches at step 0 and each evaluation step, and each test
    # person's volumes, whole, by both starts (1 mm brains: sides <= 140)
    ae = t.autoencoder

    def reconstruct(x):
        with torch.no_grad():
            ae.decode(ae.encode(x)[0])

    patches = _meta((1, 1, s["patch"], s["patch"], s["patch"]))
    evaluations = len({0, *s["eval_steps"]}) * s["n_val_patches"]
    work.append(
        Work(
            "validation patches",
            count_step(lambda: reconstruct(patches), ae),
            evaluations,
            runs,
            precision,
        )
    )
    volume = _meta((1, 1, 140, 140, 140))
    work.append(
        Work(
            "test volumes, whole",
            count_step(lambda: reconstruct(volume), ae),
            len(s["test_contrasts"]),
            runs,
            precision,
        )
    )
    # while a later fold trains one start, its other start stays on the GPU, and the
    # first fold's trainers (kept for the chapter's later sections) are parked
    # (Trainer.park): their autoencoders and perceptual networks; and the inflated
    # model the chapter shows in section 5.2
    idle = _state_bytes(t.autoencoder, t.discriminator, t.perceptual)
    idle += 2 * s["seeds"] * _weight_bytes(t.autoencoder, t.perceptual)
    idle += _weight_bytes(t.autoencoder)
    return ChapterCost(
        "05",
        work,
        [
            ("MedVAE 3D weights", *WEIGHTS["MedVAE vae_4x_1c_3D.ckpt"]),
            ("vgg16 (LPIPS backbone)", *WEIGHTS["vgg16 (LPIPS backbone)"]),
            _array_bytes("adrenalmnist3d", "64", 3),
            _array_bytes("organmnist3d", "64", 3),
            _array_bytes("nodulemnist3d", "64", 3),
            (
                f"{runs} checkpoints",
                runs * _checkpoint_bytes(t.autoencoder, t.discriminator),
                "parameters x 12 bytes",
            ),
        ],
        note=f"{runs} runs = {len(s['people'])} held-out people x {s['seeds']} seeds x 2 starts",
        resident=idle,
    )


def chapter_07(overrides=None) -> ChapterCost:
    from .personalized_invariant.model import build_model
    from .personalized_invariant.settings import MODES, VARIANTS

    s = settings_for(MODES, "full", overrides)
    side, k, b = s["image_size"], 4, s["batch_size"]
    work, checkpoints = [], 0.0
    for variant in s["variants"]:
        # MONAI's SwinUNETR reads a value while it is built: build on the CPU, then move
        net = build_model(s, variant).to("meta")
        opt = torch.optim.AdamW(net.parameters())
        x = _meta((k * b, k, side, side, side))

        def forward_only(x, net=net):
            # as under torch.no_grad, which MultiheadAttention's tracked hooks refuse
            net.requires_grad_(False)
            try:
                net(x)
            finally:
                net.requires_grad_(True)

        def step(net=net, opt=opt, x=x, ssl=VARIANTS[variant]["ssl"]):
            out = net(x)
            if ssl:  # the second view's contrastive features, without gradient
                forward_only(x)
            out["out"].float().sum().backward()
            opt.step()

        p = counted_precision(s["amp"])
        work.append(
            Work(variant, count_step(step, net), s["steps"], len(s["seeds"]), p)
        )
        # scoring: 4 sources x 27 windows of 96^3 per test or validation volume
        window = _meta((1, k, side, side, side))
        score = count_step(lambda f=forward_only, w=window: f(w), net)
        n_val = round(s["n_train_subjects"] * s["val_fraction"])
        # MONAI's sliding window, overlap 0.5: windows per side over the volume box
        per_side = [math.ceil((v - side) / (side // 2)) + 1 for v in s["volume_size"]]
        windows = k * math.prod(per_side) * (s["n_test_subjects"] + n_val)
        work.append(Work(f"{variant}: scoring", score, windows, len(s["seeds"]), p))
        if s["checkpoint_every"]:
            checkpoints += len(s["seeds"]) * _checkpoint_bytes(net)
    return ChapterCost(
        "07",
        work,
        [
            (
                "BraTS 2023 GLI training set (Synapse), zip and unpacked",
                28e9,
                "about 1,250 people x 4 volumes of 2.7 MB, gzipped, twice (download_brats "
                "keeps the zip); an estimate",
            ),
            ("a checkpoint per run", checkpoints, "parameters x 12 bytes"),
        ],
        note="needs a BraTS 2023 folder (a Synapse download)",
    )


def chapter_08(overrides=None) -> ChapterCost:
    import timm

    from .contrastive_benchmark.models import ImageEncoder
    from .contrastive_benchmark.settings import METHODS, MODES

    s = settings_for(MODES, "full", overrides)
    b, side = s["batch_size"], s["image_size"]
    with torch.device("meta"):
        scratch = ImageEncoder(s["widths"])
        vit = timm.create_model("vit_base_patch16_224", num_classes=0)
    # as PretrainedImageEncoder.freeze_stages: the embedding (patches, class token,
    # positions) and the first blocks
    for part in (vit.patch_embed, vit.cls_token, vit.pos_embed):
        part.requires_grad_(False)
    vit.blocks[: s["pretrained_freeze_blocks"]].requires_grad_(False)

    def step(net, x):
        out = net(x)
        (out[0] if isinstance(out, tuple) else out).float().sum().backward()

    # every method, CLIP with a random text encoder, and exercise 8's one run
    runs_scratch = (len(METHODS) + 1) * len(s["seeds"]) + 1
    tokens = 28_300 * s["max_tokens"] * 384 * 2  # float16 token states
    return ChapterCost(
        "08",
        [
            Work(
                "scratch image tower",
                count_step(lambda: step(scratch, _meta((b, 1, side, side))), scratch),
                s["steps"],
                runs_scratch,
                "float16",
            ),
            Work(
                "ViT-B/16 towers",
                count_step(lambda: step(vit, _meta((b, 3, 224, 224))), vit),
                s["steps"],
                2 * len(s["seeds"]),
                "float16",
            ),
        ],
        [
            ("CLIP ViT-B/16 weights", *WEIGHTS["CLIP ViT-B/16 weights"]),
            ("BiomedCLIP weights", *WEIGHTS["BiomedCLIP weights"]),
            ("all-MiniLM-L6-v2", *WEIGHTS["all-MiniLM-L6-v2"]),
            ("PMC-OA split file and sample", 0.6e9, "20,000 images; an estimate"),
            ("ROCO figures", 1.0e9, "up to 5,000 figures; an estimate"),
            ("two text caches", 2 * tokens, "28,300 texts x 64 tokens x 384 x 2 bytes"),
        ],
        note="ROCO's figures come one PMC article package each: up to 5,000 downloads",
    )


def no_gpu(chapter: str, disk, note: str) -> ChapterCost:
    return ChapterCost(chapter, [], disk, note)


CHAPTERS: dict[str, Callable[[], ChapterCost]] = {
    "01": lambda overrides=None: no_gpu(
        "01", [_array_bytes("pneumoniamnist", "128", 2)], "no training: CPU only"
    ),
    "02": chapter_02,
    "03": chapter_03,
    "04": chapter_04,
    "05": chapter_05,
    "06": lambda overrides=None: no_gpu(
        "06", [], "simulations and small MLPs on the CPU"
    ),
    "07": chapter_07,
    "08": chapter_08,
}


def summary(cost: ChapterCost) -> dict:
    """A chapter's row: PFLOP counted, T4 hours (lower bound, estimate), memory, disk."""
    return {
        "chapter": cost.chapter,
        "PFLOP": sum(w.flops for w in cost.work) / 1e15,
        "T4 hours, at least": cost.seconds() / 3600,
        "T4 hours, estimate": cost.seconds(SUSTAINED_FRACTION) / 3600,
        "GPU memory (GB)": cost.peak_memory / GB,
        "disk (GB)": cost.disk_bytes / GB,
        "note": cost.note,
    }


def _hours(h: float) -> str:
    return f"{h:.1f} h" if h < 10 else f"{h:,.0f} h"


def statement(chapter: str, overrides=None) -> str:
    """The sentence a chapter's "Time to run" quotes (a test keeps them equal)."""
    return _sentence(summary(CHAPTERS[chapter](overrides)))


# What a free Colab session gives (issue 21): one T4 (T4_MEMORY_GB), about 70 GB of free
# disk, a session of a few hours. Full mode is sized to fit these at the estimate.
COLAB_DISK_GB = 70.0
COLAB_SESSION_HOURS = 4.0


def paper_scale(chapter: str) -> dict:
    """The overrides that run a chapter's full mode at the papers' longer schedule
    (``PAPER_SCALE`` of its settings module), or ``{}`` where full mode already is."""
    import importlib

    module = {
        "02": "medvae_stage1.settings",
        "05": "medvae_3d.settings",
        "07": "personalized_invariant.settings",
    }.get(chapter)
    if module is None:
        return {}
    return dict(importlib.import_module(f"{__package__}.{module}").PAPER_SCALE)


def _sentence(row: dict) -> str:
    memory = row["GPU memory (GB)"]
    fits = "" if memory <= T4_MEMORY_GB else f", more than a T4's {T4_MEMORY_GB:.0f}"
    return (
        f"{row['PFLOP']:,.0f} PFLOP of training: at least "
        f"{_hours(row['T4 hours, at least'])} of a T4 at its peak, about "
        f"{_hours(row['T4 hours, estimate'])} at a quarter of it; at least "
        f"{memory:.0f} GB of GPU memory{fits}; {row['disk (GB)']:.1f} GB of disk"
    )


def _setting(text: str) -> tuple[str, object]:
    import ast

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a word, e.g. --set perceptual=ssim


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapter", choices=sorted(CHAPTERS), action="append")
    parser.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="count full mode with this setting changed, as the notebook's overrides "
        "(one --chapter only), e.g. --chapter 07 --set batch_size=1 --set seeds=[0]",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="count the chapters at PAPER_SCALE, the longer schedule a notebook "
        "runs with overrides=PAPER_SCALE (--set applies on top)",
    )
    args = parser.parse_args(argv)
    if args.set and len(args.chapter or []) != 1:
        parser.error("--set changes one chapter's settings: name it with --chapter")
    import pandas as pd

    rows, details = [], []
    for chapter in args.chapter or sorted(CHAPTERS):
        changes = {**(paper_scale(chapter) if args.paper else {}), **dict(args.set)}
        cost = CHAPTERS[chapter](changes or None)
        rows.append(summary(cost))
        for w in cost.work:
            details.append(
                {
                    "chapter": chapter,
                    "work": w.label,
                    "TFLOP/step": w.step.flops / 1e12,
                    "steps x runs": w.steps * w.runs,
                    "memory (GB)": w.memory / GB,
                    "precision": w.precision,
                }
            )
        for item, size, source in cost.disk:
            details.append(
                {"chapter": chapter, "disk": item, "GB": size / GB, "source": source}
            )
    with pd.option_context("display.width", 120, "display.max_colwidth", 60):
        print(pd.DataFrame(rows).round(2).to_string(index=False))
        print()
        table = pd.DataFrame(details).round(3).astype(object).fillna("")
        print(table.to_string(index=False))
    print()
    for row in rows:
        if row["PFLOP"]:
            print(f"{row['chapter']}: {_sentence(row)}")


if __name__ == "__main__":
    main()
