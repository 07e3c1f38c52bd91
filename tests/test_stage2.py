"""MedVAE's stage 2 (medvae_lib.medvae_stage2): the projection head, the rendered latent, the frozen
training against a teacher, the CI-mode contrastive teacher and the reuse of exported weights. Tiny
models on random 16x16 images; nothing here needs the data set or a network."""

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny

from medvae_lib import medvae_stage2
from medvae_lib.medvae_stage1 import export_metadata
from medvae_lib.medvae_stage2 import (
    LATENT_SCALE,
    ProjectionHead,
    Stage2Config,
    Stage2Trainer,
    TeacherConfig,
    augment,
    contrastive_teacher,
    nt_xent,
    render_latent,
    stage1_autoencoder,
    stage2_config,
    stage2_head,
    teacher_config,
    teacher_distance,
    weights_fingerprint,
)
from medvae_lib.models import build_autoencoder
from medvae_lib.teachers import FrozenTeacher
from medvae_lib.training import CHECKPOINT_NAME, batch_indices, export_weights

MODEL = "medvae_4_1_2d"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def images(n: int = 8, seed: int = 1, side: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def autoencoder(seed: int = 0):
    torch.manual_seed(seed)
    return build_autoencoder(MODEL, width=8)


def tiny_teacher(seed: int = 0, name: str = "tiny conv teacher") -> FrozenTeacher:
    """A frozen conv net whose embedding keeps the layout (4 channels x 4 x 4 cells), with a BatchNorm whose
    running statistics are not the defaults, so a teacher put into training mode would change them."""
    torch.manual_seed(seed)
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 4, stride=4), torch.nn.BatchNorm2d(4), torch.nn.Flatten()
    )
    with torch.no_grad():
        encoder[1].running_mean.uniform_(-0.1, 0.1)
        encoder[1].running_var.uniform_(0.5, 1.5)
    return FrozenTeacher(
        encoder, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, name=name
    )


def config(**changes) -> Stage2Config:
    settings = {
        "model": MODEL,
        "width": 8,
        "steps": 3,
        "batch_size": 4,
        "hidden": 8,
        "lr": 1e-2,
        "log_every": 1,
    }
    return Stage2Config(**{**settings, **changes})


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    now = module.state_dict()
    assert now.keys() == saved.keys()
    changed = [k for k, v in saved.items() if not torch.equal(now[k], v)]
    assert not changed, f"frozen weights changed: {changed}"


# -- the head and the rendered latent ---------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_the_head_keeps_the_latent_shape(channels):
    head = ProjectionHead(channels, hidden=8)
    z = torch.randn(2, channels, 5, 7)
    assert head(z).shape == z.shape
    head3d = ProjectionHead(channels, spatial_dims=3, hidden=8)
    z3 = torch.randn(2, channels, 3, 4, 5)
    assert head3d(z3).shape == z3.shape


def test_the_head_has_medvae_layout():
    c = 3
    head = ProjectionHead(c)
    ds = head.channel_ds
    kinds = [type(m) for m in ds]
    relu, conv = torch.nn.ReLU, torch.nn.Conv2d
    assert kinds == [conv, relu, conv, relu, conv]
    assert ds[0].weight.shape == (64, c, 1, 1)  # MedVAE: 1x1 C -> 64
    assert ds[2].weight.shape == (64, 64, 3, 3)
    assert ds[4].weight.shape == (c, 64, 1, 1)
    assert all(ds[i].bias is not None for i in (0, 2, 4))
    assert isinstance(head.channel_proj, conv) and head.channel_proj.weight.shape == (
        c,
        c,
        1,
        1,
    )
    # the 3x3 convolution keeps the size ("same" padding): a 1-pixel latent still goes through
    assert head(torch.randn(1, c, 1, 1)).shape == (1, c, 1, 1)
    assert isinstance(ProjectionHead(2, spatial_dims=3).channel_proj, torch.nn.Conv3d)


def test_the_head_computes_channel_proj_of_channel_ds_plus_z():
    torch.manual_seed(0)
    head = ProjectionHead(2, hidden=5)
    z = torch.randn(3, 2, 6, 4)
    ds = head.channel_ds
    h = F.relu(F.conv2d(z, ds[0].weight, ds[0].bias))
    h = F.relu(F.conv2d(h, ds[2].weight, ds[2].bias, padding=1))
    h = F.conv2d(h, ds[4].weight, ds[4].bias)
    expected = F.conv2d(h + z, head.channel_proj.weight, head.channel_proj.bias)
    torch.testing.assert_close(head(z), expected)


def test_the_head_rejects_bad_arguments_and_inputs():
    head = ProjectionHead(3, hidden=4)
    with pytest.raises(ValueError, match=r"\(N, 3, \*spatial\)"):
        head(torch.randn(1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, 3, \*spatial\)"):
        head(torch.randn(3, 4))
    for dims in (1, 4):
        with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
            ProjectionHead(3, spatial_dims=dims)
    with pytest.raises(ValueError, match="must be positive"):
        ProjectionHead(0)
    with pytest.raises(ValueError, match="must be positive"):
        ProjectionHead(3, hidden=0)


def test_render_latent_scales_and_averages_the_channels():
    z = torch.randn(2, 3, 4, 5)
    by_hand = torch.zeros(2, 1, 4, 5)
    for c in range(3):
        by_hand[:, 0] += z[:, c] / 3
    torch.testing.assert_close(render_latent(z, scale=2.0), by_hand / 2.0)
    torch.testing.assert_close(render_latent(z), by_hand / LATENT_SCALE)
    assert math.isclose(LATENT_SCALE, 4.6)  # MedVAE's BiomedClipLoss divides by 4.6
    big = torch.full((1, 2, 2, 2), 50.0)
    assert float(render_latent(big, scale=1.0).max()) == 50.0, (
        "a latent is not clipped like an image"
    )


def test_render_latent_keeps_gradients_and_wants_4d():
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    render_latent(z, scale=2.0).sum().backward()
    torch.testing.assert_close(z.grad, torch.full_like(z, 1 / (4 * 2.0)))
    for shape in [(4, 3, 3), (1, 1, 4, 3, 3)]:
        with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
            render_latent(torch.zeros(shape))


# -- the loss and the fingerprint -------------------------------------------------------------------


def test_teacher_distance_is_the_per_image_squared_l2_of_embeddings():
    teacher = tiny_teacher()
    x, z = images(5), torch.randn(5, 3, 4, 4)
    got = teacher_distance(teacher, x, z, batch_size=2)  # batches of 2, 2 and 1
    assert got.shape == (5,)
    with torch.no_grad():
        for i in range(5):
            a = teacher(x[i : i + 1])[0]
            rendered = z[i : i + 1].mean(1, keepdim=True) / LATENT_SCALE
            b = teacher(rendered)[0]
            assert math.isclose(
                float(got[i]), sum(float(d) ** 2 for d in a - b), rel_tol=1e-4
            )
    assert len(set(got.tolist())) == 5, "each image has its own distance"
    with pytest.raises(ValueError, match="5 images but 4 latents"):
        teacher_distance(teacher, x, z[:4])


def test_weights_fingerprint_follows_every_weight_and_buffer():
    teacher = tiny_teacher()
    twin = copy.deepcopy(teacher)
    assert weights_fingerprint(teacher) == weights_fingerprint(twin)
    assert weights_fingerprint(tiny_teacher(seed=0)) == weights_fingerprint(teacher)
    with torch.no_grad():
        w = twin.encoder[0].weight
        w[0, 0, 0, 0] = torch.nextafter(
            w[0, 0, 0, 0], torch.tensor(10.0)
        )  # the smallest possible change
    assert weights_fingerprint(twin) != weights_fingerprint(teacher)
    buffered = copy.deepcopy(teacher)
    buffered.encoder[1].running_var[0] += 1.0
    assert weights_fingerprint(buffered) != weights_fingerprint(teacher), (
        "buffers identify a model too"
    )
    assert weights_fingerprint(tiny_teacher(seed=1)) != weights_fingerprint(teacher)


# -- training the head ------------------------------------------------------------------------------


def test_training_changes_only_the_head():
    ae, teacher, x = autoencoder(), tiny_teacher(), images()
    ae_before, teacher_before = state_copy(ae), state_copy(teacher)
    with torch.no_grad():
        recon_before = ae.decode(ae.encode(x * 2 - 1)[0])
    trainer = Stage2Trainer(config(steps=5), ae, teacher)
    head_before = state_copy(trainer.head)
    trainer.fit(x)
    assert trainer.step == 5 and len(trainer.history) == 5
    assert_same_state(ae, ae_before)
    assert_same_state(teacher, teacher_before)
    assert not any(p.requires_grad for p in ae.parameters())
    assert not teacher.training
    head_now = trainer.head.state_dict()
    for name in (
        "channel_ds.0.weight",
        "channel_ds.2.weight",
        "channel_ds.4.weight",
        "channel_proj.weight",
    ):
        assert not torch.equal(head_now[name], head_before[name]), (
            f"the head's {name} was not trained"
        )
    with torch.no_grad():
        torch.testing.assert_close(
            ae.decode(ae.encode(x * 2 - 1)[0]), recon_before, rtol=0, atol=0
        )
    assert set(trainer.modules()) == {"head"}, "only the head is checkpointed"
    trained = {id(p) for g in trainer.opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in trainer.head.parameters()}


def test_latents_are_the_head_on_the_posterior_mean_of_model_range_images():
    ae, x = autoencoder(), images(3)
    trainer = Stage2Trainer(config(), ae, tiny_teacher())
    with torch.no_grad():
        mu = ae.encode(x * 2 - 1)[0]
        expected = trainer.head(mu)
    got = trainer.latents(x, batch_size=2)
    torch.testing.assert_close(got, expected)
    assert torch.equal(trainer.latents(x, batch_size=2), got), (
        "no posterior sampling: latents are deterministic"
    )
    torch.testing.assert_close(medvae_stage2.stage1_latents(ae, x), mu)


def test_the_logged_loss_is_the_batch_mean_of_the_teacher_distance():
    """Without posterior sampling, step 0's loss is the mean over its batch of the per-image distance
    between the teacher's embeddings of the image and of the untrained head's latent."""
    ae, teacher, x = autoencoder(), tiny_teacher(), images(8)
    c = config(steps=1, sample_posterior=False, latent_scale=2.0)
    latents = Stage2Trainer(c, ae, teacher).latents(
        x
    )  # the same seed: the same initial head
    trainer = Stage2Trainer(c, ae, teacher)
    trainer.fit(x)
    batch = batch_indices(len(x), c.batch_size, 0, c.seed)
    with torch.no_grad():
        rendered = latents[batch].mean(1, keepdim=True) / 2.0
        per_image = ((teacher(x[batch]) - teacher(rendered)) ** 2).sum(1)
    assert math.isclose(
        trainer.history[0]["teacher distance"], float(per_image.mean()), rel_tol=1e-5
    )


def test_training_pulls_the_rendered_latent_towards_the_teacher():
    ae, teacher, x = autoencoder(), tiny_teacher(), images(8)
    trainer = Stage2Trainer(config(steps=30, batch_size=8), ae, teacher)
    before = float(teacher_distance(teacher, x, trainer.latents(x)).mean())
    trainer.fit(x)
    after = float(teacher_distance(teacher, x, trainer.latents(x)).mean())
    assert after < 0.7 * before, (
        f"the teacher distance went from {before:.3g} to {after:.3g} only"
    )
    logged = [h["teacher distance"] for h in trainer.history]
    assert sum(logged[-5:]) < 0.7 * sum(logged[:5])


def test_stage2_config_is_validated():
    with pytest.raises(ValueError, match="3D"):
        Stage2Config(model="medvae_4_1_3d")
    with pytest.raises(ValueError, match="unknown MedVAE model"):
        Stage2Config(model="medvae_5_1_2d")
    for lr in (0.0, -1e-4):
        with pytest.raises(ValueError, match="lr must be positive"):
            Stage2Config(lr=lr)
    with pytest.raises(TypeError, match="lr must be a finite number"):
        Stage2Config(lr="1e-4")
    with pytest.raises(TypeError, match="lr must be a finite number"):
        Stage2Config(lr=float("nan"))
    with pytest.raises(ValueError, match="steps must be at least 1"):
        Stage2Config(steps=0)
    with pytest.raises(ValueError, match="betas"):
        Stage2Config(adam_beta1=1.0)
    with pytest.raises(ValueError, match="latent_scale must be positive"):
        Stage2Config(latent_scale=0.0)


def test_the_trainer_refuses_another_stage1_model_or_teacher():
    ae, teacher = autoencoder(), tiny_teacher(name="A")
    Stage2Trainer(
        config(stage1=weights_fingerprint(ae), teacher="A"), ae, teacher
    )  # the right ones: accepted
    with pytest.raises(ValueError, match="stage1 does not match"):
        Stage2Trainer(
            config(stage1=weights_fingerprint(autoencoder(seed=1))), ae, teacher
        )
    with pytest.raises(ValueError, match="teacher is 'B' but the teacher is 'A'"):
        Stage2Trainer(config(teacher="B"), ae, teacher)


def test_a_checkpoint_is_not_resumed_with_another_teacher(tmp_path):
    ae, x = autoencoder(), images()
    Stage2Trainer(config(steps=1, teacher="A"), ae, tiny_teacher(name="A")).fit(
        x, tmp_path
    )
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    with pytest.raises(FileExistsError, match="'teacher': \\('A', 'B'\\)"):
        Stage2Trainer(config(steps=2, teacher="B"), ae, tiny_teacher(name="B")).fit(
            x, tmp_path
        )


def test_check_images_refuses_what_stage2_cannot_train_on():
    trainer = Stage2Trainer(config(), autoencoder(), tiny_teacher())
    trainer.check_images(images())  # fine
    bad = {
        "scaled to \\[0, 1\\]": images() * 2,
        "scaled to \\[0, 1\\].*-0.5": images() - 0.5,
        "\\(N, 1, H, W\\)": images().expand(-1, 3, -1, -1),
        "\\(N, 1, H, W\\) images; got shape \\(8, 1, 16, 16, 16\\)": torch.rand(
            8, 1, 16, 16, 16
        ),
        "divisible by 4": images(side=18),
    }
    for message, x in bad.items():
        with pytest.raises(ValueError, match=message):
            trainer.fit(x)
    assert trainer.step == 0


# -- the CI-mode contrastive teacher ----------------------------------------------------------------


def test_augment_keeps_shape_and_range_and_draws_one_view_per_image():
    x = images(6, side=16)
    torch.manual_seed(3)
    views = augment(x)
    assert views.shape == x.shape and views.dtype == x.dtype
    assert float(views.min()) >= 0.0 and float(views.max()) <= 1.0
    assert not torch.equal(views, x)
    same = images(1).expand(6, -1, -1, -1).contiguous()
    torch.manual_seed(3)
    copies = augment(same)
    for i in range(6):
        for j in range(i):
            assert not torch.allclose(copies[i], copies[j]), (
                f"copies {i} and {j} got the same transform"
            )


def test_augment_is_reproducible_under_torch_seed():
    x = images(4)
    torch.manual_seed(7)
    a = augment(x)
    torch.manual_seed(7)
    b = augment(x)
    torch.manual_seed(8)
    c = augment(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_augment_never_flips():
    """A bright left half stays on the left, and a bright top half on top, in every one of many views: a
    flip applied with any probability, per image or per batch, would show up."""
    side = 32
    left = torch.zeros(1, 1, side, side)
    left[..., : side // 2] = 1.0
    top = left.transpose(2, 3).contiguous()
    torch.manual_seed(0)
    for image, dim in ((left, 3), (top, 2)):
        for _ in range(20):  # many calls too, in case a flip were drawn once per batch
            views = augment(image.expand(16, -1, -1, -1))
            first, second = views.split(side // 2, dim=dim)
            assert (first.sum((1, 2, 3)) > second.sum((1, 2, 3)) + 1.0).all()


def test_nt_xent_prefers_matching_pairs():
    torch.manual_seed(0)
    a = torch.randn(16, 8)
    b = a + 0.1 * torch.randn(16, 8)
    matched = nt_xent(a, b, temperature=0.2)
    shuffled = nt_xent(a, b[torch.roll(torch.arange(16), 1)], temperature=0.2)
    assert float(matched) < float(shuffled) - 1.0


def test_nt_xent_by_hand_for_two_pairs():
    a = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    b = torch.tensor([[3.0, 1.0], [0.0, 2.0]])
    t = 0.5
    views = [
        (u / math.hypot(u, v), v / math.hypot(u, v))
        for u, v in (*a.tolist(), *b.tolist())
    ]
    partner = {0: 2, 1: 3, 2: 0, 3: 1}
    total = 0.0
    for i in range(4):
        sims = {
            j: (views[i][0] * views[j][0] + views[i][1] * views[j][1]) / t
            for j in range(4)
            if j != i
        }
        total += -math.log(
            math.exp(sims[partner[i]]) / sum(math.exp(s) for s in sims.values())
        )
    assert math.isclose(float(nt_xent(a, b, t)), total / 4, rel_tol=1e-5)


def test_teacher_config_is_validated():
    with pytest.raises(ValueError, match="at least 2 images"):
        TeacherConfig(batch_size=1)
    with pytest.raises(ValueError, match="temperature must be positive"):
        TeacherConfig(temperature=0.0)


# -- settings from a notebook -----------------------------------------------------------------------


def test_configs_from_the_ci_settings_name_the_models_they_use():
    ae, teacher = autoencoder(), tiny_teacher(name="T")
    settings = {**medvae_stage2.MODES["ci"], "steps": 2}
    c = stage2_config(settings, 5, ae, teacher)
    assert (c.teacher, c.stage1, c.seed, c.steps) == (
        "T",
        weights_fingerprint(ae),
        5,
        2,
    )
    assert (c.lr, c.batch_size) == (settings["lr"], settings["batch_size"])
    tc = teacher_config(settings, 5)
    assert (tc.image_size, tc.temperature, tc.embed_dim) == (
        settings["image_size"],
        settings["teacher_temperature"],
        settings["teacher_embed_dim"],
    )


# -- reusing exports: loaded when the metadata match, trained otherwise --------------------------------


def test_stage1_autoencoder_prefers_a_matching_chapter2_export(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, data = images(), {"checksum": "abc", "image_size": 16}
    c1 = tiny(2, adv_start=1)
    ae, why = stage1_autoencoder(c1, "ci", x, data)
    own = Path("runs/03_medvae_stage2/ci", MODEL, "stage1", f"{MODEL}.safetensors")
    assert why.startswith("trained stage 1 here") and own.is_file()

    again, why = stage1_autoencoder(c1, "ci", x, data)
    assert why == f"loaded {own}"
    assert_same_state(again, state_copy(ae))

    chapter2 = Path("runs/02_medvae_stage1/ci", MODEL, f"{MODEL}.safetensors")
    export_weights(
        chapter2,
        autoencoder(seed=5),
        export_metadata(tiny(2, adv_start=1, seed=9), "ci", data),
    )
    again, why = stage1_autoencoder(c1, "ci", x, data)
    assert why == f"loaded {own}", (
        "chapter 2's export has other settings (seed): not used"
    )

    other = autoencoder(seed=5)
    export_weights(chapter2, other, export_metadata(c1, "ci", data))
    again, why = stage1_autoencoder(c1, "ci", x, data)
    assert why == f"loaded {chapter2}"
    assert_same_state(again, state_copy(other))

    retrained, why = stage1_autoencoder(c1, "ci", x, {**data, "checksum": "other"})
    assert why.startswith("trained stage 1 here") and "'data': ('abc', 'other')" in why
    assert_same_state(
        retrained, state_copy(ae)
    )  # the same images and settings: the same weights


def test_contrastive_teacher_is_reused_only_for_the_same_settings_and_images(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    x, data = images(8), {"checksum": "abc"}
    tc = TeacherConfig(
        image_size=16, width=4, embed_dim=8, steps=2, batch_size=4, log_every=1
    )
    teacher, why = contrastive_teacher(tc, "ci", x, data)
    assert why.startswith("trained the teacher here")
    assert (
        teacher.mean == (float(x.mean()),) * 3 and teacher.std == (float(x.std()),) * 3
    )
    with torch.no_grad():
        embedding = teacher(x)
    assert embedding.shape == (8, 8)

    loaded, why = contrastive_teacher(tc, "ci", x, data)
    assert why == "loaded " + str(Path("runs/03_medvae_stage2/ci/teacher.safetensors"))
    assert loaded.name == teacher.name and loaded.name.startswith("contrastive ResNet")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), embedding, rtol=0, atol=0)

    _, why = contrastive_teacher(
        TeacherConfig(**{**vars(tc), "temperature": 0.5}), "ci", x, data
    )
    assert why.startswith("trained the teacher here") and "'temperature'" in why
    _, why = contrastive_teacher(
        tc, "ci", x.flip(0) * 0.5, data
    )  # other images: other mean and std
    assert why.startswith("trained the teacher here") and "'mean'" in why


def test_stage2_head_is_reused_only_with_matching_metadata(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ae, teacher, x, data = autoencoder(), tiny_teacher(), images(), {"checksum": "abc"}
    c = config(teacher=teacher.name, stage1=weights_fingerprint(ae))
    export = Path("runs/03_medvae_stage2/ci", MODEL, "head.safetensors")

    trained, why = stage2_head(c, "ci", ae, teacher, x, data)
    assert why == f"trained the head here (no {export})" and export.is_file()
    assert len(trained.history) == 3
    untrained = Stage2Trainer(c, ae, teacher).head.state_dict()
    assert any(
        not torch.equal(v, untrained[k]) for k, v in trained.head.state_dict().items()
    )

    loaded, why = stage2_head(c, "ci", ae, teacher, x, data)
    assert why == f"loaded {export}" and loaded.history == []
    assert_same_state(loaded.head, state_copy(trained.head))

    _, why = stage2_head(c, "full", ae, teacher, x, data)
    assert why.startswith(
        "trained the head here (no runs"
    )  # another mode has its own folder

    # another stage-1 model changes the config's fingerprint, hence the metadata: never loaded for it
    ae2 = autoencoder(seed=1)
    c2 = config(teacher=teacher.name, stage1=weights_fingerprint(ae2))
    retrained, why = stage2_head(c2, "ci", ae2, teacher, x, data, overwrite=True)
    assert why.startswith("trained the head here") and "'stage1'" in why
    loaded, why = stage2_head(c2, "ci", ae2, teacher, x, data)
    assert why == f"loaded {export}"
    assert_same_state(loaded.head, state_copy(retrained.head))


def test_stage2_head_retrains_after_a_changed_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ae, teacher, x, data = autoencoder(), tiny_teacher(), images(), {"checksum": "abc"}
    stage2_head(config(teacher=teacher.name), "ci", ae, teacher, x, data)
    # the checkpoint of the first run is not replaced silently: the book's rule for every trainer
    with pytest.raises(FileExistsError, match="overwrite=True"):
        stage2_head(config(teacher=teacher.name, lr=1e-3), "ci", ae, teacher, x, data)
    _, why = stage2_head(
        config(teacher=teacher.name, lr=1e-3),
        "ci",
        ae,
        teacher,
        x,
        data,
        overwrite=True,
    )
    assert why.startswith("trained the head here") and "'lr'" in why


def test_a_head_for_another_model_than_the_autoencoder_is_refused():
    ae = autoencoder()  # medvae_4_1_2d: one latent channel
    with pytest.raises(ValueError, match="latent channels"):
        Stage2Trainer(
            Stage2Config(model="medvae_4_3_2d", width=8, hidden=8), ae, tiny_teacher()
        )
