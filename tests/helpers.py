"""Constants and small helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

import functools
import http.server
import threading
from pathlib import Path

from medvae_lib.medvae_stage1 import Stage1Config

REPO = Path(__file__).resolve().parent.parent
# The fields every manifest needs, before its files.
HEADER = "name: m\ntitle: t\nlicence: l\nsource: s\ncitation: c\nspatial_dims: 2\nformat: medmnist-npz\n"
SHARED_README_SHA256 = "f36c2b3e34de9d60c5c734118bc6daff281eaf76b67a57d26ad958da948274b0"
SHA, MD5 = "ab" * 32, "ab" * 16  # well-formed digests of no real file


def tiny(steps: int, **changes) -> Stage1Config:
    """A stage-1 configuration small enough for a unit test (width 8, batches of 4, a 2-layer discriminator)."""
    settings = {"width": 8, "batch_size": 4, "adv_start": 2, "disc_channels": 8, "disc_layers": 2, "log_every": 1}
    return Stage1Config(steps=steps, **{**settings, **changes})


class LoopbackServer:
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

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
