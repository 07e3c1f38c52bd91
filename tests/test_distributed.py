"""CheckpointedTrainer on two CPU processes (torchrun, gloo) trains as one process does: a toy trainer,
and the real stage-2 trainer, which full mode runs under torchrun."""

import os
import socket
import subprocess
import sys

import pytest
import torch
from ddp_worker import TinyConfig, TinyTrainer, stage2_parts, stage2_result, tiny_images
from helpers import REPO

from medvae_lib.medvae_stage2 import Stage2Trainer
from medvae_lib.training import CHECKPOINT_NAME, default_device, init_distributed, world


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-process reference run, and what each rank of the two-process runs ended with."""
    outdir = tmp_path_factory.mktemp("ddp")
    images = tiny_images()
    reference = TinyTrainer(TinyConfig())
    reference.fit(images)
    config, autoencoder, teacher, stage2_images = stage2_parts()
    stage2 = Stage2Trainer(config, autoencoder, teacher)
    stage2.fit(stage2_images)
    TinyTrainer(TinyConfig(steps=7)).fit(
        images, checkpoint_dir=outdir / "resumed"
    )  # for the 2 processes to go on
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += [
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "tests/ddp_worker.py",
        str(outdir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, (
        f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    ranks = [torch.load(outdir / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    logs = done.stdout + done.stderr
    return {
        "reference": reference,
        "stage2": stage2,
        "ranks": ranks,
        "outdir": outdir,
        "log": logs,
    }


@pytest.mark.parametrize("part", ["fresh", "resumed"])
def test_two_processes_end_where_one_process_ends(runs, part):
    ref = runs["reference"]
    r0, r1 = (r[part] for r in runs["ranks"])
    assert all(r["world"] == 2 for r in runs["ranks"])
    assert r0["step"] == r1["step"] == 15
    for name, w in ref.denoiser.state_dict().items():
        assert torch.equal(r0["state"][name], r1["state"][name]), (
            f"the ranks' {name} differ"
        )
        assert not torch.equal(
            w, TinyTrainer(TinyConfig()).denoiser.state_dict()[name]
        ), "the run must train"
        torch.testing.assert_close(
            r0["state"][name], w, rtol=0, atol=1e-6, msg=f"{part}: {name} differs"
        )
    assert r0["history"] == r1["history"], "every rank logs the global batch's values"
    assert (
        [h["step"] for h in r0["history"]]
        == [h["step"] for h in ref.history]
        == list(range(15))
    )
    for key in ("loss", "noisy_mean"):
        got, want = (
            torch.tensor([h[key] for h in hist])
            for hist in (r0["history"], ref.history)
        )
        torch.testing.assert_close(
            got, want, rtol=1e-5, atol=0, msg=f"{part}: logged {key} differs"
        )


def test_stage2_on_two_processes_ends_where_one_process_ends(runs):
    """The real Stage2Trainer: posterior noise drawn for the global batch (global_randn_like), the
    head's gradients averaged by DDP, the autoencoder and the teacher left alone on every rank."""
    ref = runs["stage2"]
    r0, r1 = (r["stage2"] for r in runs["ranks"])
    assert r0["step"] == r1["step"] == ref.step == 8
    _, autoencoder, teacher, _ = (
        stage2_parts()
    )  # the frozen parts as built, before any training
    untrained = Stage2Trainer(*stage2_parts()[:3]).head.state_dict()
    for name, w in ref.head.state_dict().items():
        assert torch.equal(r0["head"][name], r1["head"][name]), (
            f"the ranks' head {name} differ"
        )
        assert not torch.equal(w, untrained[name]), f"the head's {name} must train"
        torch.testing.assert_close(
            r0["head"][name], w, rtol=0, atol=1e-6, msg=f"stage 2: head {name} differs"
        )
    assert r0["history"] == r1["history"], "every rank logs the global batch's values"
    assert (
        [h["step"] for h in r0["history"]]
        == [h["step"] for h in ref.history]
        == list(range(8))
    )
    got, want = (
        torch.tensor([h["teacher distance"] for h in hist])
        for hist in (r0["history"], ref.history)
    )
    torch.testing.assert_close(
        got, want, rtol=1e-5, atol=0, msg="stage 2: logged teacher distance differs"
    )
    for frozen, built in (("autoencoder", autoencoder), ("teacher", teacher)):
        for trained in (r0, r1, stage2_result(ref)):
            assert trained[frozen].keys() == built.state_dict().keys()
            for name, w in built.state_dict().items():
                assert torch.equal(trained[frozen][name], w), (
                    f"the frozen {frozen}'s {name} changed"
                )


def test_a_batch_that_does_not_split_over_the_processes_is_refused(runs):
    for r in runs["ranks"]:
        assert "batch_size 7" in r["error"] and "divisible by 2" in r["error"], r.get(
            "error"
        )


def test_a_two_process_checkpoint_loads_in_one_process(runs):
    folder = runs["outdir"] / "fresh"
    assert sorted(p.name for p in folder.iterdir()) == [".lock", CHECKPOINT_NAME], (
        "rank 0 alone writes, no leftovers"
    )
    state = torch.load(folder / CHECKPOINT_NAME, weights_only=True)
    assert not any(
        k.startswith("module.") for m in state["modules"].values() for k in m
    ), "plain modules' keys"
    one = TinyTrainer(TinyConfig())
    assert one.load(folder / CHECKPOINT_NAME) == 15
    rank0 = runs["ranks"][0]["fresh"]
    assert one.history == rank0["history"]
    for name, w in one.denoiser.state_dict().items():
        assert torch.equal(w, rank0["state"][name])
    assert runs["log"].count("resumed from") == 1, "only rank 0 prints"


def test_one_process_is_unchanged(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() == default_device() and world() == (0, 1)
    trainer = TinyTrainer(TinyConfig())
    assert trainer.net("denoiser") is trainer.denoiser and trainer.shard == (0, 1)
    local = torch.zeros(4, 1, 8, 8)
    torch.manual_seed(3)
    noise = trainer.global_randn_like(local)
    torch.manual_seed(3)
    assert torch.equal(noise, torch.randn_like(local))


def test_global_noise_is_cut_into_the_ranks_rows():
    trainer, local = TinyTrainer(TinyConfig()), torch.zeros(4, 1, 8, 8)
    torch.manual_seed(3)
    full = torch.randn(8, 1, 8, 8)
    for rank in (0, 1):
        trainer.shard = (rank, 2)
        torch.manual_seed(3)
        assert torch.equal(trainer.global_randn_like(local), full[rank::2])
        assert torch.equal(trainer.shard_rows(full), full[rank::2])


@pytest.mark.parametrize(
    "env",
    [
        {"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"},
        {"WORLD_SIZE": "2", "LOCAL_RANK": "0"},
    ],
)
def test_malformed_torchrun_variables_are_refused(monkeypatch, env):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="not all integers"):
        init_distributed()
