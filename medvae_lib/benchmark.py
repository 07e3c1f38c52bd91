"""How much faster the same classifier trains and infers on MedVAE latents than on pixels.

For each MedVAE configuration (``medvae_lib.models.MEDVAE_CONFIGS``) this builds two classifiers of the
book's family (:func:`medvae_lib.models.build_classifier`, a small MONAI ResNet) that differ
only in their input: one reads the image (1 channel, ``image_size`` per side), the other the latent
(``latent_channels`` channels, ``image_size / factor`` per side). Width, depth, stem and head are the
same. It then measures, side by side in one call, images per second for

* training: forward, binary cross-entropy with logits on random 0/1 labels, backward, one Adam step;
* inference: forward in eval mode under ``torch.inference_mode``.

Inputs are random tensors made once before timing (speed does not depend on the values); warm-up
iterations are not timed; each timed iteration is read with ``time.perf_counter``, after
``torch.cuda.synchronize`` on a GPU, and the throughput is the batch over the fastest iteration (as
``timeit`` advises: slower ones are slowed by other processes, not by the model). :func:`compare` does
not count encoding the images into latents: MedVAE encodes a data set once and trains and evaluates
downstream models on the stored latents many times. :func:`end_to_end` counts it, for an image that
must be encoded before it is classified (online encoding), and gives the number of passes over the data
(training epochs, or evaluations) after which encoding once and reusing the latents has paid for the
encoder (:func:`break_even_passes`).

Why the speed-up is about the ratio of input sizes, and why not exactly. A convolutional network does a
fixed amount of work per spatial position in every layer, so its cost is proportional to the number of
positions of its input: ``factor**dims`` times fewer for a latent (16x or 64x in 2D, 64x or 512x in
3D). The input channels only enter the first convolution, so a 4-channel latent costs hardly more than
a 1-channel one: the speed-up follows the ratio of spatial positions, which is the ratio of input
values (``MedVAEConfig.compression``, ``factor**dims / latent_channels``) times the latent channels,
and equals it for the one-channel configurations. It mostly falls short of that ratio because of costs
that do not shrink with the input: the Adam step and the classifier head (the same for both models), the
per-call overhead of Python and of launching kernels, and the poorer use of the hardware by tiny feature
maps (a 16x16x16 latent leaves a GPU mostly idle). The larger the image and the batch, the closer the
speed-up comes to the ratio of positions; on a GPU, small latents are often limited by launch overhead,
so raise ``--batch-2d``/``--batch-3d`` there. On a CPU it can also exceed the ratio, when the image's
large activations spill out of processor caches that the latent's fit in.

Run it (defaults: all six configurations, 512x512 images and 128-voxel cubes; about a minute on two
idle CPU cores)::

    .venv/bin/python -m medvae_lib.benchmark                 # on the GPU if there is one, else the CPU
    .venv/bin/python -m medvae_lib.benchmark --device cuda --batch-2d 64 --batch-3d 8 --iters 20
    .venv/bin/python -m medvae_lib.benchmark --image-size-2d 1024 --models medvae_4_1_2d medvae_8_1_2d
    .venv/bin/python -m medvae_lib.benchmark --quick --models medvae_4_1_2d   # a smoke run in seconds
    .venv/bin/python -m medvae_lib.benchmark --encoder --models medvae_4_1_2d  # + the encoder's cost

``--encoder`` times the published configuration's encoder as well (:func:`encoder_table`): its
cost per image, and after how many passes over the data encoding once pays for itself.

The figures are measurements of the machine it runs on (processor, threads, GPU, library versions);
compare speed-ups, not throughputs, across machines. They vary from run to run: on two CPU cores the
speed-ups of two single measurements differ by up to a fifth, mostly on the latent side, whose
iterations take milliseconds (more ``--iters`` steady them). So each model is measured ``--repeats``
times (default 3, interleaved with the other models) and the table gives the median speed-up and its
range (:func:`summarize_repeats`). The paper's 2D figures are for 1024x1024 inputs
(``--image-size-2d 1024``). Run it
on an otherwise idle machine: when other processes share the CPU cores, PyTorch's threads wait for each
other at every operation, which slows the many short operations of a small latent batch most and can
shrink the measured speed-ups several-fold.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time

import torch
import torch.nn.functional as F

from medvae_lib.models import (
    MEDVAE_CONFIGS,
    build_classifier,
    get_config,
    grey_input,
)

MODES = ("train", "inference")
QUICK = {"image_size_2d": 64, "image_size_3d": 32, "iters": 1}


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that the clock measures it (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device must name a torch device such as 'cpu' or 'cuda', got {device!r}"
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} was asked for, but CUDA is not available here"
        )
    return device


def throughput(
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    train: bool,
    device="cpu",
    warmup: int = 2,
    iters: int = 5,
    seed: int = 0,
) -> float:
    """Images per second of ``model`` on random inputs of shape ``(batch_size, *input_shape)``.

    ``train=True`` times forward, binary cross-entropy with logits on random 0/1 labels, backward and
    an Adam step (the model's weights change); ``train=False`` times a forward pass in eval mode under
    ``torch.inference_mode``. ``warmup`` untimed iterations come first, then ``iters`` timed ones; the
    result is ``batch_size`` over the time of the fastest one, so that iterations slowed down by other
    processes do not count. The model is moved to ``device`` and left there, in the train/eval state it
    had before.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(input_shape, tuple | list) or not input_shape:
        raise ValueError(
            f"input_shape must be a non-empty tuple (channels, *spatial), got {input_shape!r}"
        )
    for side in input_shape:
        _positive_int(side, f"every entry of input_shape {tuple(input_shape)}")
    _positive_int(batch_size, "batch_size")
    _positive_int(iters, "iters")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    if not isinstance(train, bool):
        raise TypeError(f"train must be True or False, got {train!r}")
    device = _device(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if train and not parameters:
        raise ValueError("train=True needs a model with trainable parameters")
    if train and batch_size < 2:
        raise ValueError(
            "train=True needs batch_size >= 2: batch normalisation in training mode needs more than one value "
            "per channel, and the last stage of a ResNet can be 1x1"
        )

    was_training = model.training
    model.to(device)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *input_shape, generator=generator).to(device)
    seconds = []
    try:
        model.eval()
        with (
            torch.inference_mode()
        ):  # one untimed sample gives the shape of the logits, hence of the labels
            out = model(x[:1])
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            raise TypeError(
                f"model must return a floating-point tensor of logits, got {type(out).__name__}"
            )
        labels = (
            torch.randint(0, 2, (batch_size, *out.shape[1:]), generator=generator)
            .float()
            .to(device)
        )

        if train:
            model.train()
            optimizer = torch.optim.Adam(parameters, lr=1e-3)

            def step():
                optimizer.zero_grad(set_to_none=True)
                loss = F.binary_cross_entropy_with_logits(model(x), labels)
                loss.backward()
                optimizer.step()

        else:

            def step():
                with torch.inference_mode():
                    model(x)

        for _ in range(warmup):
            step()
        _synchronize(device)
        for _ in range(iters):
            start = time.perf_counter()
            step()
            _synchronize(device)
            seconds.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return batch_size / max(min(seconds), 1e-9)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def compare(
    config_name: str,
    image_size: int,
    batch_size: int,
    device="cpu",
    iters: int = 5,
    width: int = 16,
    stem_stride: int = 1,
) -> list[dict]:
    """Training and inference throughput of one classifier on pixels and on the latents of MedVAE model
    ``config_name``, for a square (2D) or cubic (3D) image of side ``image_size``.

    Returns one row per mode (``"train"``, ``"inference"``) with the model name, ``"dims"`` (``"2D"`` or
    ``"3D"``), the image and latent shapes (``"512x512"``, ``"4x64x64"``), both throughputs in images
    per second and ``"speed-up"`` (latents over pixels). Pixels and latents are measured one after the
    other in the same call, each on a freshly built, identically seeded classifier.
    """
    cfg = get_config(config_name)
    _positive_int(image_size, "image_size")
    image = (image_size,) * cfg.spatial_dims
    latent = cfg.latent_shape(
        image
    )  # checks that image_size is divisible by the factor
    inputs = {"pixels": (1, *image), "latents": latent}
    rows = []
    for mode in MODES:
        row = {
            "model": cfg.name,
            "dims": f"{cfg.spatial_dims}D",
            "image": _shape(image),
            "latent": _shape(latent),
            "mode": mode,
        }
        for kind, shape in inputs.items():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = build_classifier(
                    shape[0], cfg.spatial_dims, width=width, stem_stride=stem_stride
                )
            row[f"{kind} (img/s)"] = throughput(
                model, shape, batch_size, mode == "train", device, iters=iters
            )
        row["speed-up"] = row["latents (img/s)"] / row["pixels (img/s)"]
        rows.append(row)
    return rows


def summarize_repeats(rows: list[dict]) -> list[dict]:
    """One row per model and mode from the rows of repeated :func:`compare` calls: the median of each
    throughput and of the speed-up, and the speed-up's smallest and largest value over the repeats
    (``"speed-up min"``, ``"speed-up max"``) with their number (``"repeats"``). A single measurement
    says little on a shared machine; the spread says how far to trust the median."""
    import statistics

    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["mode"]), []).append(row)
    out = []
    for group in groups.values():
        speedups = [r["speed-up"] for r in group]
        out.append(
            {
                **{
                    k: v
                    for k, v in group[0].items()
                    if not k.endswith("(img/s)") and k != "speed-up"
                },
                **{
                    k: statistics.median(r[k] for r in group)
                    for k in ("pixels (img/s)", "latents (img/s)", "speed-up")
                },
                "speed-up min": min(speedups),
                "speed-up max": max(speedups),
                "repeats": len(group),
            }
        )
    return out


class _EncodedFirst(torch.nn.Module):
    """``classifier(encode(x))`` with a frozen encoder: ``encode`` is a function, not a submodule, so
    its weights are neither trained nor switched to training mode, and only the classifier learns."""

    def __init__(self, encode, classifier: torch.nn.Module):
        super().__init__()
        self.encode = encode
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = self.encode(x)
        return self.classifier(z)


def break_even_passes(encoder: float, pixels: float, latents: float) -> float:
    """Passes over a data set (training epochs, or evaluations of a test set) after
    which encoding it once and working on the stored latents has cost less time than
    working on the pixels.

    The arguments are throughputs in images per second: the encoder's, and the
    classifier's on pixels and on latents. Encoding costs ``1 / encoder`` seconds per
    image once; each pass then saves ``1 / pixels - 1 / latents``. Returns ``inf`` when
    latents save nothing per pass."""
    for value, name in ((encoder, "encoder"), (pixels, "pixels"), (latents, "latents")):
        if not (isinstance(value, int | float) and value > 0):
            raise ValueError(
                f"{name} throughput must be a positive number, got {value!r}"
            )
    saved = 1 / pixels - 1 / latents
    return (1 / encoder) / saved if saved > 0 else float("inf")


def end_to_end(
    autoencoder: torch.nn.Module,
    config_name: str,
    image_size: int,
    batch_size: int,
    device="cpu",
    iters: int = 5,
    width: int = 16,
    stem_stride: int = 1,
    measured: list[dict] | None = None,
) -> list[dict]:
    """Throughput with the encoder counted: the classifier on pixels, on latents encoded once and
    stored (what :func:`compare` times), and on latents encoded on the fly by ``autoencoder``'s
    posterior mean (online encoding: the frozen encoder runs on every batch, then the classifier).

    One row per mode (``"train"``, ``"inference"``) with the three throughputs in images per second,
    the encoder's alone, both speed-ups over pixels, and ``"break-even passes"``
    (:func:`break_even_passes`: epochs for training, evaluations for inference). All are measured
    here, one after the other, on random images of side ``image_size``; ``measured``, the rows of
    :func:`compare` for the same model, size, batch and classifier in this run, saves timing the
    pixel and stored-latent classifiers a second time."""
    cfg = get_config(config_name)
    _positive_int(image_size, "image_size")
    image = (1, *(image_size,) * cfg.spatial_dims)
    latent = cfg.latent_shape(image[1:])
    device = _device(device)
    autoencoder = autoencoder.eval().to(device)

    def encode(x):
        return autoencoder.encode(x)[0]

    with torch.inference_mode():
        got = tuple(encode(torch.zeros(1, *image, device=device)).shape[1:])
    if got != tuple(latent):
        raise ValueError(
            f"the autoencoder gives latents of shape {got}, {config_name} has {tuple(latent)}"
        )

    def fresh(channels: int) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_classifier(
                channels, cfg.spatial_dims, width=width, stem_stride=stem_stride
            )

    timing = {"batch_size": batch_size, "device": device, "iters": iters}
    encoder = throughput(
        _EncodedFirst(encode, torch.nn.Identity()), image, train=False, **timing
    )
    known = {}
    for row in measured or []:
        if (row["model"], row["image"]) != (cfg.name, _shape(image[1:])):
            raise ValueError(
                f"measured rows are for {row['model']} at {row['image']}, not {cfg.name}"
            )
        known[row["mode"]] = row["pixels (img/s)"], row["latents (img/s)"]
    rows = []
    for mode in MODES:
        train = mode == "train"
        if mode in known:
            pixels, once = known[mode]
        else:
            pixels = throughput(fresh(1), image, train=train, **timing)
            once = throughput(fresh(latent[0]), latent, train=train, **timing)
        online = throughput(
            _EncodedFirst(encode, fresh(latent[0])), image, train=train, **timing
        )
        rows.append(
            {
                "model": cfg.name,
                "image": _shape(image[1:]),
                "mode": mode,
                "pixels (img/s)": pixels,
                "latents, encoded once (img/s)": once,
                "latents, encoded online (img/s)": online,
                "encoder (img/s)": encoder,
                "speed-up, encoded once": once / pixels,
                "speed-up, encoded online": online / pixels,
                "break-even passes": break_even_passes(encoder, pixels, once),
            }
        )
    return rows


def describe_end_to_end(rows: list[dict]) -> list[str]:
    """One sentence per row of :func:`end_to_end`, with its measured numbers: how the latent classifier
    compares with the pixel one once the encoder is counted, and after how many passes encoding once
    has paid for itself."""
    passes = {"train": "training epoch", "inference": "pass over the same images"}
    lines = []
    for row in rows:
        online, once = row["speed-up, encoded online"], row["speed-up, encoded once"]
        n = row["break-even passes"]
        if math.isinf(n):
            pays = "encoding once never pays for itself (latents save no time per pass)"
        else:
            k = max(1, math.ceil(n))
            unit = (
                passes[row["mode"]]
                .replace("epoch", "epochs")
                .replace("pass ", "passes ")
            )
            pays = f"encoding once pays for itself within {k} {passes[row['mode']] if k == 1 else unit} ({n:.2g})"
        lines.append(
            f"{row['mode']} at {row['image']}: latents encoded online run at {online:.2f}x the pixel "
            f"classifier ({'faster' if online > 1 else 'slower'}), stored latents at {once:.1f}x; {pays}"
        )
    return lines


def _positive_arg(text: str) -> int:
    try:
        return _positive_int(int(text), "the value")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        ) from None


def _parser() -> argparse.ArgumentParser:
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser = argparse.ArgumentParser(
        prog="python -m medvae_lib.benchmark",
        description=(
            "Throughput of one classifier (the book's small MONAI ResNet) on pixels and on MedVAE latents, "
            "training and inference, and the speed-up. The defaults (all six models, batches of 8 images "
            "and 2 volumes, 2 warm-up and 5 timed iterations, width 16) take about a minute on two idle CPU cores; "
            "on a GPU raise the batches and --iters for stable figures."
        ),
    )
    # MedVAE's 2D fine-tuning loader resizes images to 384x384 and its 3D ones take random 64^3 crops
    # (``load_2d_finetune``, ``load_*_3d_finetune`` in medvae/utils/loaders.py of the MedVAE repository).
    parser.add_argument(
        "--image-size-2d",
        type=_positive_arg,
        default=512,
        help="side of the square 2D image (default 512; MedVAE's 2D fine-tuning loader resizes to 384)",
    )
    parser.add_argument(
        "--image-size-3d",
        type=_positive_arg,
        default=128,
        help=(
            "side of the cubic 3D volume (default 128; MedVAE fine-tunes its 3D models on random 64^3 crops "
            "and encodes whole foreground-cropped volumes, sides a multiple of 16)"
        ),
    )
    parser.add_argument(
        "--batch-2d",
        type=_positive_arg,
        default=8,
        help="2D images per batch (default 8)",
    )
    parser.add_argument(
        "--batch-3d",
        type=_positive_arg,
        default=2,
        help="3D volumes per batch (default 2)",
    )
    parser.add_argument(
        "--iters",
        type=_positive_arg,
        default=5,
        help="timed iterations per measurement, after 2 warm-up ones",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_arg,
        default=3,
        help="measurements of each model, interleaved; the table gives their median and range (default 3)",
    )
    parser.add_argument(
        "--width",
        type=_positive_arg,
        default=16,
        help="channels of the classifier's first stage (default 16)",
    )
    parser.add_argument(
        "--stem-stride",
        type=_positive_arg,
        default=2,
        help=(
            "stride of the classifier's first convolution, the same for pixels and latents (default 2). The "
            "book's chapter 4 uses 1 on its small images so that a latent and a small image go through the same "
            "layers; at full size every practical ResNet downsamples in its stem (torchvision's by 4), and "
            "a stride-1 stem would run the first stage at full resolution, take several times as long and "
            "overstate the speed-up (fixed costs weigh less)"
        ),
    )
    parser.add_argument(
        "--device",
        default=default_device,
        help=f"torch device (default {default_device}: cuda if available)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(MEDVAE_CONFIGS),
        choices=list(MEDVAE_CONFIGS),
        metavar="MODEL",
        help=f"MedVAE configurations to measure (default all: {', '.join(MEDVAE_CONFIGS)})",
    )
    parser.add_argument(
        "--encoder",
        action="store_true",
        help=(
            "also time the published configuration's encoder (random weights: speed does not "
            "depend on their values) and report its cost per image and the passes after which "
            "encoding once pays for itself. Heavy: on two CPU cores seconds per 512x512 image; "
            "use a GPU for the 3D models"
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run in seconds: 64 px 2D images, 32-voxel cubes, 1 timed iteration (overrides those options)",
    )
    return parser


def _sizes(args, cfg) -> tuple[int, int]:
    """(image side, batch size) of the command line for a 2D or 3D configuration."""
    if cfg.spatial_dims == 2:
        return args.image_size_2d, args.batch_2d
    return args.image_size_3d, args.batch_3d


def _timing(args, device) -> dict:
    return {
        "device": device,
        "iters": args.iters,
        "width": args.width,
        "stem_stride": args.stem_stride,
    }


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    try:
        device = _device(args.device)
    except ValueError as error:
        parser.error(str(error))
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    print(
        f"device: {device} ({name}); torch {torch.__version__}; {torch.get_num_threads()} CPU threads"
    )
    print(
        f"classifier: MONAI ResNet, width {args.width}, stem stride {args.stem_stride}; batches of "
        f"{args.batch_2d} (2D) and {args.batch_3d} (3D); 2 warm-up and {args.iters} timed iteration(s); "
        f"{args.repeats} measurement(s) of each, interleaved: medians, and the speed-up's range"
    )
    rows = []
    start = time.perf_counter()
    for _ in range(
        args.repeats
    ):  # interleaved, so a slow spell of the machine hits every model alike
        for model_name in args.models:
            cfg = get_config(model_name)
            for row in compare(model_name, *_sizes(args, cfg), **_timing(args, device)):
                row["value ratio"] = cfg.compression
                row["position ratio"] = cfg.factor**cfg.spatial_dims
                rows.append(row)
    table = pd.DataFrame(summarize_repeats(rows))
    for column in ("pixels (img/s)", "latents (img/s)"):
        table[column] = table[column].map(lambda v: f"{v:,.1f}")
    table["speed-up"] = table["speed-up"].map(lambda v: f"{v:.1f}x")
    table["range"] = [
        f"{a:.1f}-{b:.1f}x"
        for a, b in zip(table["speed-up min"], table["speed-up max"], strict=True)
    ]
    for column in ("value ratio", "position ratio"):
        table[column] = table[column].map(lambda v: f"{v:.3g}x")
    columns = [
        "model",
        "dims",
        "image",
        "latent",
        "mode",
        "pixels (img/s)",
        "latents (img/s)",
        "speed-up",
    ]
    print(
        table[[*columns, "range", "value ratio", "position ratio"]].to_string(
            index=False
        )
    )
    print("speed-up: median over the measurements; range: their smallest and largest")
    print("value ratio: image values per latent value (factor**dims / latent channels)")
    print("position ratio: image positions per latent position (factor**dims)")
    if args.encoder:
        print(
            encoder_table(summarize_repeats(rows), args, device).to_string(index=False)
        )
        print(
            "encoder: the published configuration's encoder (posterior mean), per image; "
            "break-even: passes over the data after which encoding once has paid for itself"
        )
    print(f"measured in {time.perf_counter() - start:.0f} s")
    return 0


def encoder_table(summary: list[dict], args, device):
    """For each model of ``summary`` (:func:`summarize_repeats` rows), the published
    configuration's encoder timed with :func:`end_to_end` on the same images, batches and
    classifier, reusing the pixel and stored-latent throughputs already measured."""
    import pandas as pd

    from .models import build_autoencoder

    out = []
    for model_name in dict.fromkeys(r["model"] for r in summary):
        cfg = get_config(model_name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            autoencoder = build_autoencoder(model_name, width="full", in_channels=1)
        if autoencoder.arch.in_channels != 1:  # the 3-channel published models
            autoencoder = _GreyInput(autoencoder)
        rows = end_to_end(
            autoencoder,
            model_name,
            *_sizes(args, cfg),
            **_timing(args, device),
            measured=[r for r in summary if r["model"] == model_name],
        )
        for row in rows:
            out.append(
                {
                    "model": model_name,
                    "image": row["image"],
                    "mode": row["mode"],
                    "encoder (ms/image)": f"{1000 / row['encoder (img/s)']:,.1f}",
                    "online speed-up": f"{row['speed-up, encoded online']:.2f}x",
                    "break-even passes": f"{row['break-even passes']:.2g}",
                }
            )
    return pd.DataFrame(out)


class _GreyInput(torch.nn.Module):
    """A three-channel published model fed a grey image on each channel."""

    def __init__(self, autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def encode(self, x):
        return self.autoencoder.encode(grey_input(self.autoencoder, x))


if __name__ == "__main__":
    sys.exit(main())
