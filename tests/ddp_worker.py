"""A tiny CheckpointedTrainer, and the script tests/test_distributed.py runs on two processes:

    OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node 2 --master_port PORT \\
        tests/ddp_worker.py OUTDIR

Each rank runs three trainings and saves what it ended with to ``OUTDIR/rank<r>.pt``:

* ``error``: the message of a run whose batch (7) does not split over two processes;
* ``fresh``: a run from scratch, checkpointed every 5 steps into ``OUTDIR/fresh``;
* ``resumed``: a run that continues the one-process checkpoint the test left in ``OUTDIR/resumed``.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # medvae_lib, when run as a script

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from medvae_lib.training import CheckpointedTrainer, init_distributed, world  # noqa: E402


@dataclass
class TinyConfig:
    steps: int = 15
    batch_size: int = 8
    seed: int = 0
    log_every: int = 1
    lr: float = 0.05


def tiny_images() -> torch.Tensor:
    """32 random 8x8 images in [0, 1], the same in every process."""
    return torch.rand((32, 1, 8, 8), generator=torch.Generator().manual_seed(1))


class TinyTrainer(CheckpointedTrainer):
    """A two-layer conv denoiser (no batch norm): noise from :meth:`global_randn_like` in, the clean image
    out, a mean squared error over the batch. ``frozen`` is a fixed blur on the target: a module without
    trainable parameters, which therefore gets no DDP wrapper."""

    name = "tiny"

    def __init__(self, config: TinyConfig, device: torch.device | str = "cpu"):
        super().__init__(config, device)
        torch.manual_seed(config.seed)
        self.denoiser = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 3, padding=1)
        ).to(self.device)
        self.frozen = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False).to(self.device)
        torch.nn.init.constant_(self.frozen.weight, 1 / 9)
        self.frozen.requires_grad_(False)
        self.opt = torch.optim.SGD(self.denoiser.parameters(), lr=config.lr, momentum=0.9)

    def modules(self):
        return {"denoiser": self.denoiser, "frozen": self.frozen}

    def optimizers(self):
        return {"denoiser": self.opt}

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        self.opt.zero_grad(set_to_none=True)
        noisy = batch + 0.3 * self.global_randn_like(batch)
        target = self.net("frozen")(batch)
        loss = F.mse_loss(self.net("denoiser")(noisy), target)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "noisy_mean": noisy.mean()}


def result(trainer: TinyTrainer) -> dict:
    return {"state": trainer.denoiser.state_dict(), "history": trainer.history, "step": trainer.step}


def main(outdir: Path) -> None:
    device = init_distributed()
    rank, world_size = world()
    images = tiny_images()
    out = {"world": world_size}
    try:
        TinyTrainer(TinyConfig(batch_size=7), device).fit(images)
    except ValueError as err:
        out["error"] = str(err)
    fresh = TinyTrainer(TinyConfig(), device)
    fresh.fit(images, checkpoint_dir=outdir / "fresh", checkpoint_every=5)
    out["fresh"] = result(fresh)
    resumed = TinyTrainer(TinyConfig(), device)
    resumed.fit(images, checkpoint_dir=outdir / "resumed")
    out["resumed"] = result(resumed)
    torch.save(out, outdir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
