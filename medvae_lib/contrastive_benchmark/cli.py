"""Chapter 8: eight image-text contrastive objectives in one harness, on real medical
pairs (MedPix 2.0).

The command line, :func:`main` (``python -m medvae_lib.contrastive_benchmark``, see
``__main__.py``); its ``--help`` shows the paragraph above as its description."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from medvae_lib.teachers import BIOMEDCLIP
from medvae_lib.training import settings_for

from .bench import build_bench
from .evaluation import chance_levels, item_clusters
from .models import check_method
from .runs import run_benchmark
from .settings import GENERAL_CLIP, METHODS, MODES, TASK_GROUPS
from .tables import results_table, to_frame, wide_table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), help=f"any of {list(METHODS)}"
    )
    parser.add_argument("--mode", default="ci", choices=sorted(MODES))
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--text-init", default="pretrained", choices=["pretrained", "random"]
    )
    parser.add_argument(
        "--image-init",
        default=None,
        help="open_clip id of a pretrained image tower (e.g. 'clip', 'biomedclip', 'hf-hub:...', 'local-dir:...'); "
        "default: the mode's setting (scratch)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download the mode's public pair sets (extra_train_sets: PMC-OA, ROCO in full mode) first",
    )
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument(
        "--out", required=True, help="CSV file for per-run, per-task scores"
    )
    args = parser.parse_args(argv)
    for m in args.methods:
        check_method(m)
    settings = settings_for(
        MODES, args.mode, {"steps": args.steps} if args.steps else None
    )
    image_init = {"clip": GENERAL_CLIP, "biomedclip": BIOMEDCLIP}.get(
        args.image_init, args.image_init
    )
    bench = build_bench(
        settings, args.text_init, args.cache_dir, download=args.download
    )
    runs = run_benchmark(
        args.methods,
        bench,
        args.seeds or settings["seeds"],
        args.split,
        image_init=image_init,
    )
    to_frame(runs).to_csv(args.out, index=False)
    clusters = item_clusters(bench, args.split)
    wide = wide_table(results_table(runs, clusters), chance_levels(bench, args.split))
    print(
        wide.loc[
            [t for group in TASK_GROUPS.values() for t in group if t in wide.index]
        ].to_string()
    )
    return 0
