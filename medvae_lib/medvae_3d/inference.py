"""Whole volumes: encode and decode in one pass or window by window (MONAI's sliding
window, as MedVAE's inference), and the peak memory and time of each, measured in a
fresh process on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..medvae_stage1 import from_model_range, to_model_range
from ..models import build_autoencoder, get_config
from ..training import autocast
from .volumes import check_volume


@torch.no_grad()
def encode_whole(
    autoencoder, volume: torch.Tensor, factor: int, device="cpu"
) -> torch.Tensor:
    """The posterior mean of a whole (N, 1, X, Y, Z) volume in [0, 1] in one pass (memory grows with the volume)."""
    check_volume(volume, factor)
    autoencoder.eval()
    return autoencoder.encode(to_model_range(volume.to(device)))[0]


@torch.no_grad()
def decode_whole(autoencoder, latent: torch.Tensor, device="cpu") -> torch.Tensor:
    """A whole latent decoded in one pass, in [0, 1]."""
    autoencoder.eval()
    return from_model_range(autoencoder.decode(latent.to(device)))


def _inferer(roi: int, overlap: float, factor: int, device, batch: int = 1):
    from monai.inferers import SlidingWindowInferer

    if roi % factor:
        raise ValueError(
            f"the window side {roi} must be divisible by the factor {factor}"
        )
    step = int(roi * (1 - overlap))
    if step < 1 or step % factor:
        raise ValueError(
            f"windows of {roi} with overlap {overlap} start every {step} voxels; choose them so that the step is "
            f"a positive multiple of {factor}, or the windows' latents do not lie on one grid"
        )
    return SlidingWindowInferer(
        roi_size=(roi,) * 3,
        sw_batch_size=batch,
        overlap=overlap,
        mode="gaussian",
        sw_device=device,
        device="cpu",
        progress=False,
    )


def fit_window(roi: int, side: int, overlap: float, factor: int) -> int:
    """The window for a volume whose smallest side is ``side``: ``roi`` if it fits,
    else the largest side that fits and keeps :func:`_inferer`'s grid (a multiple of
    ``factor`` whose step between windows is one too). A 132-voxel side with factor 4
    and overlap 0.25 gives 128 (step 96), not 132 (step 99, off the latent grid)."""
    for r in range(min(roi, side) // factor * factor, 0, -factor):
        step = int(r * (1 - overlap))
        if step >= 1 and step % factor == 0:
            return r
    raise ValueError(
        f"no window of at most {min(roi, side)} voxels keeps windows with overlap "
        f"{overlap} on the latent grid of factor {factor}"
    )


@torch.no_grad()
def encode_sliding(
    autoencoder, volume, factor: int, roi: int = 64, overlap: float = 0.25, device="cpu"
):
    """The posterior mean of a whole volume from ``roi``^3 windows (MONAI
    ``SlidingWindowInferer``, Gaussian blending of overlapping windows, as MedVAE's
    ``MVAE._process_3d``): memory bounded by one window. The output is ``factor`` times
    smaller per side; MONAI places each window's latent at its scaled position."""
    check_volume(volume, factor)
    if min(volume.shape[2:]) < roi:
        roi = fit_window(roi, min(volume.shape[2:]), overlap, factor)
    autoencoder.eval()
    inferer = _inferer(roi, overlap, factor, device)
    return inferer(to_model_range(volume), lambda x: autoencoder.encode(x)[0])


@torch.no_grad()
def decode_sliding(
    autoencoder, latent, factor: int, roi: int = 64, overlap: float = 0.25, device="cpu"
):
    """A whole latent decoded from windows of ``roi / factor`` latent voxels a side,
    blended as in :func:`encode_sliding`; returns the volume in [0, 1]."""
    if roi % factor:
        raise ValueError(
            f"the window side {roi} must be divisible by the factor {factor}"
        )
    if min(latent.shape[2:]) * factor < roi:  # the window encode_sliding shrank to
        roi = fit_window(roi, min(latent.shape[2:]) * factor, overlap, factor)
    side = roi // factor
    autoencoder.eval()
    inferer = _inferer(side, overlap, 1, device)
    return from_model_range(inferer(latent, lambda z: autoencoder.decode(z)))


def reconstruct_volume(
    autoencoder,
    volume,
    factor: int,
    method: str = "sliding",
    roi: int = 64,
    overlap=0.25,
    device="cpu",
    amp="auto",
):
    """Encode and decode a whole (N, 1, X, Y, Z) volume: ``"whole"`` in one pass each,
    ``"sliding"`` window by window; under float16 autocast on a GPU (the ``amp`` setting)."""
    if method not in ("whole", "sliding"):
        raise ValueError(f"method must be 'whole' or 'sliding', got {method!r}")
    with autocast(amp, device):
        if method == "whole":
            z = encode_whole(autoencoder, volume, factor, device)
            return decode_whole(autoencoder, z, device).float().cpu()
        z = encode_sliding(autoencoder, volume, factor, roi, overlap, device)
        return (
            decode_sliding(autoencoder, z, factor, roi, overlap, device).float().cpu()
        )


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _probe() -> None:
    """Entry point of the memory probe's child process (see :func:`peak_memory`)."""
    import resource
    import threading

    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    from safetensors.torch import load_file

    model = build_autoencoder(args["model"], width=args["width"])
    model.load_state_dict(load_file(args["weights"]))
    volume = torch.load(args["volume"], weights_only=True)
    factor = get_config(args["model"]).factor
    side = (
        min(args["roi"], *volume.shape[2:]) // factor * factor
    )  # one window: warms up the same code path
    small = volume[..., :side, :side, :side]
    reconstruct_volume(
        model, small, factor, args["method"], args["roi"], args["overlap"]
    )  # warm-up: imports, pools
    import gc

    gc.collect()
    before = _rss_bytes()
    high_water = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )  # includes the imports' peak
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    out = reconstruct_volume(
        model, volume, factor, args["method"], args["roi"], args["overlap"]
    )
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if (
        maxrss > high_water
    ):  # the call set a new high-water mark: the kernel's figure is exact
        peak[0] = max(peak[0], maxrss)
    torch.save(out, args["output"])
    print(json.dumps({"peak_bytes": peak[0] - before, "seconds": seconds}))


def peak_memory(
    autoencoder,
    model: str,
    width,
    volume,
    method: str,
    roi: int = 64,
    overlap: float = 0.25,
    device="cpu",
):
    """Run :func:`reconstruct_volume` on ``volume`` and measure its peak memory, in bytes above what was in
    use before it, and its time in seconds; returns ``{"peak_bytes", "seconds", "reconstruction"}``.

    On CUDA: ``torch.cuda.max_memory_allocated``. On a CPU PyTorch's allocations are invisible to
    ``tracemalloc``, so the call runs in a fresh Python process (the same weights and volume, passed
    through temporary files) whose resident set size (RSS) is read before the call and, during it,
    sampled every millisecond and taken from the kernel's high-water mark."""
    device = torch.device(device)
    if device.type == "cuda":
        factor = get_config(model).factor
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        out = reconstruct_volume(
            autoencoder, volume, factor, method, roi, overlap, device
        )
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        return {
            "peak_bytes": torch.cuda.max_memory_allocated(device) - before,
            "seconds": seconds,
            "reconstruction": out,
        }
    from ..training import export_weights

    with tempfile.TemporaryDirectory() as tmp:
        weights, vol, output = (
            Path(tmp) / "w.safetensors",
            Path(tmp) / "v.pt",
            Path(tmp) / "out.pt",
        )
        export_weights(weights, autoencoder)
        torch.save(volume.contiguous().clone(), vol)
        args = {
            "model": model,
            "width": width,
            "weights": str(weights),
            "volume": str(vol),
            "output": str(output),
            "method": method,
            "roi": roi,
            "overlap": overlap,
            "threads": torch.get_num_threads(),
        }
        code = "from medvae_lib.medvae_3d.inference import _probe; _probe()"
        root = str(Path(__file__).resolve().parents[2])  # the repository
        env = {
            **os.environ,
            "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(args)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"the memory probe failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["reconstruction"] = torch.load(output, weights_only=True)
        return result
