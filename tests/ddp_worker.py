"""A tiny CheckpointedTrainer, and the script tests/test_distributed.py runs on two processes:

    OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node 2 --master_port PORT \\
        tests/ddp_worker.py OUTDIR

Each rank runs four trainings and saves what it ended with to ``OUTDIR/rank<r>.pt``:

* ``error``: the message of a run whose batch (7) does not split over two processes;
* ``fresh``: a run from scratch, checkpointed every 5 steps into ``OUTDIR/fresh``;
* ``resumed``: a run that continues the one-process checkpoint the test left in ``OUTDIR/resumed``;
* ``stage2``: the real :class:`~medvae_lib.medvae_stage2.Stage2Trainer` on tiny seeded parts
  (:func:`stage2_parts`), with what its frozen autoencoder and teacher hold afterwards.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parent.parent)
)  # medvae_lib, when run as a script

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from medvae_lib import medvae_stage2  # noqa: E402
from medvae_lib.models import build_autoencoder  # noqa: E402
from medvae_lib.teachers import FrozenTeacher  # noqa: E402
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
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.Tanh(),
            torch.nn.Conv2d(4, 1, 3, padding=1),
        ).to(self.device)
        self.frozen = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False).to(self.device)
        torch.nn.init.constant_(self.frozen.weight, 1 / 9)
        self.frozen.requires_grad_(False)
        self.opt = torch.optim.SGD(
            self.denoiser.parameters(), lr=config.lr, momentum=0.9
        )

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
    return {
        "state": trainer.denoiser.state_dict(),
        "history": trainer.history,
        "step": trainer.step,
    }


def stage2_parts() -> tuple[
    medvae_stage2.Stage2Config, torch.nn.Module, FrozenTeacher, torch.Tensor
]:
    """A tiny stage-2 run, the same in every process: a width-8 stage-1 autoencoder, a teacher (a small
    conv net to 8 dimensions on 16x16 inputs), 32 random 16x16 images in [0, 1] and the config."""
    torch.manual_seed(11)
    autoencoder = build_autoencoder("medvae_4_1_2d", width=8)
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(256, 8),
    )
    teacher = FrozenTeacher(
        encoder,
        image_size=16,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        name="tiny conv teacher",
    )
    images = torch.rand((32, 1, 16, 16), generator=torch.Generator().manual_seed(12))
    config = medvae_stage2.Stage2Config(
        model="medvae_4_1_2d",
        width=8,
        steps=8,
        batch_size=8,
        hidden=8,
        log_every=1,
        teacher=teacher.name,
        stage1=medvae_stage2.weights_fingerprint(autoencoder),
    )
    return config, autoencoder, teacher, images


def stage2_result(trainer: medvae_stage2.Stage2Trainer) -> dict:
    return {
        "head": trainer.head.state_dict(),
        "autoencoder": trainer.autoencoder.state_dict(),
        "teacher": trainer.teacher.state_dict(),
        "history": trainer.history,
        "step": trainer.step,
    }


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
    config, autoencoder, teacher, stage2_images = stage2_parts()
    stage2 = medvae_stage2.Stage2Trainer(config, autoencoder, teacher, device)
    stage2.fit(stage2_images)
    out["stage2"] = stage2_result(stage2)
    torch.save(out, outdir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
