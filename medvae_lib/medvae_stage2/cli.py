"""The command line (:func:`main`): train the stage-2 head from a terminal, on one or
several GPUs; ``python -m medvae_lib.medvae_stage2`` runs it (``__main__.py``)."""

from __future__ import annotations

from ..training import world
from .chapter import chapter_models
from .settings import MODES


def main(argv=None) -> None:
    """Train the stage-2 head from a terminal, on one or several GPUs (``torchrun``)::

        python -m medvae_lib.medvae_stage2 --mode full
        torchrun --nproc_per_node 4 -m medvae_lib.medvae_stage2 --mode full

    It needs chapter 2's exported stage-1 weights (run chapter 2 first) and, in CI mode, chapter 3's
    teacher; it writes the head where chapter 3 looks for it, so the notebook then loads it.
    """
    import argparse

    from .. import data_prep, medvae_stage1
    from ..training import init_distributed, seed_everything, settings_for

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps", type=int, default=None, help="override the mode's number of steps"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a checkpoint made with other settings",
    )
    args = parser.parse_args(argv)

    device = init_distributed()
    seed_everything(args.seed)
    settings = settings_for(
        MODES, args.mode, {"steps": args.steps} if args.steps else None
    )
    prepared = data_prep.prepare_splits(
        "pneumoniamnist", settings["data_key"], settings["image_size"], seed=args.seed
    )
    data = data_prep.data_identity(
        "pneumoniamnist", settings["data_key"], settings["image_size"]
    )
    stage1 = medvae_stage1.stage1_config(
        settings_for(medvae_stage1.MODES, args.mode), args.seed
    )
    *_, notes = chapter_models(
        stage1,
        settings,
        args.mode,
        args.seed,
        prepared["train"][0],
        data,
        device,
        require_stage1=True,
        checkpoint_every=settings["checkpoint_every"],
        resume=True,
        overwrite=args.overwrite,
    )
    if world()[0] == 0:
        print("\n".join(f"{part}: {how}" for part, how in notes.items()))
