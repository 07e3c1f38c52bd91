"""Constants and small helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

import functools
import http.server
import json
import threading
from pathlib import Path

from medvae_lib.medvae_stage1 import Stage1Config

REPO = Path(__file__).resolve().parent.parent
# The fields every manifest needs, before its files.
HEADER = "name: m\ntitle: t\nlicence: l\nsource: s\ncitation: c\nspatial_dims: 2\nformat: medmnist-npz\n"
SHARED_README_SHA256 = (
    "f36c2b3e34de9d60c5c734118bc6daff281eaf76b67a57d26ad958da948274b0"
)
SHA, MD5 = "ab" * 32, "ab" * 16  # well-formed digests of no real file


def tiny(steps: int, **changes) -> Stage1Config:
    """A stage-1 configuration small enough for a unit test (width 8, batches of 4, a 2-layer discriminator)."""
    settings = {
        "width": 8,
        "batch_size": 4,
        "adv_start": 2,
        "disc_channels": 8,
        "disc_layers": 2,
        "log_every": 1,
    }
    return Stage1Config(steps=steps, **{**settings, **changes})


class LoopbackHTTP:
    """An HTTP server on 127.0.0.1 (a port of its own), answered from a daemon thread while
    used as a context manager; subclasses give :meth:`_serve` their request handler."""

    def _serve(self, handler) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class LoopbackServer(LoopbackHTTP):
    """A static file server on 127.0.0.1 that counts the requests it answers; the first ``fail`` of them
    get HTTP 503 (a transient failure). Use it as a context manager."""

    def __init__(self, root: Path, fail: int = 0):
        self.requests, self.fail = 0, fail
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if outer.requests <= outer.fail:
                    self.send_error(503, "try again")
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self._serve(functools.partial(Handler, directory=str(root)))

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


# A tiny CLIP with open_clip's built-in ViT and text transformer (no timm weights, no Hugging Face text model).
TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {
        "image_size": 32,
        "patch_size": 8,
        "width": 32,
        "head_width": 16,
        "layers": 1,
    },
    "text_cfg": {
        "context_length": 8,
        "vocab_size": 64,
        "width": 32,
        "heads": 2,
        "layers": 1,
    },
}
# Not CLIP's statistics, so a loader that ignores the config (hard-codes CLIP's mean and std) is caught.
TINY_CLIP_PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def write_open_clip_config(
    directory: Path, model_cfg=None, preprocess_cfg=None
) -> None:
    directory.mkdir(parents=True)
    config = {
        "model_cfg": model_cfg or TINY_CLIP_CFG,
        "preprocess_cfg": preprocess_cfg or TINY_CLIP_PREPROCESS,
    }
    (directory / "open_clip_config.json").write_text(json.dumps(config))


def write_open_clip_dir(
    directory: Path, seed: int, weights: str, model_cfg=None, preprocess_cfg=None
):
    """An open_clip model directory in the format of a hub repository (open_clip_config.json + weights)
    holding a seeded random tiny CLIP (or ``model_cfg``); returns that model (eval mode)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    write_open_clip_config(directory, model_cfg, preprocess_cfg)
    torch.manual_seed(seed)
    model = open_clip.create_model(
        f"local-dir:{directory}"
    )  # no weights there yet: random initialisation
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if weights.endswith(".safetensors"):
        save_file(state, str(directory / weights))
    else:
        torch.save(state, directory / weights)
    return model.eval()


def tiny_puir_settings(**changes) -> dict:
    """Chapter 7's CI settings with a network small enough for a test (32 px, few
    channels), changed by ``changes``."""
    from medvae_lib import personalized_invariant as pi

    return {
        **pi.MODES["ci"],
        "image_size": 32,
        "features": (4, 4, 8, 8, 16, 4),
        "prior_heads": 2,
        "contrastive_dim": 8,
        **changes,
    }
