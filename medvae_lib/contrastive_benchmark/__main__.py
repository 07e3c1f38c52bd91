"""``python -m medvae_lib.contrastive_benchmark``: the command line of :mod:`.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
