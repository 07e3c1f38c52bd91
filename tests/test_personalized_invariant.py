"""Chapter 7 (personalised invariant representation): the prior trains, the individual constraint behaves,
the split is by person, the loaders refuse bad files, and the brain-mask scores are what they claim."""

import hashlib

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from medvae_lib import personalized_invariant as pi
from medvae_lib.data import ChecksumError, load_manifest
from medvae_lib.personalized_invariant import runs as pi_runs
from medvae_lib.personalized_invariant import splits as pi_splits
from medvae_lib.training import settings_for

CI = settings_for(pi.MODES, "ci", {})


def _tiny_settings(**changes):
    s = dict(
        CI,
        image_size=32,
        features=(4, 4, 8, 8, 16, 4),
        prior_heads=2,
        contrastive_dim=8,
        steps=3,
        batch_size=2,
    )
    s.update(changes)
    return s


def _samples(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 4, size, size, generator=g)
    mask = torch.zeros(n, 1, size, size)
    mask[..., 4:-4, 6:-6] = 1
    return torch.cat([images * mask, mask], 1)


# ------------------------------------------------------------------------------------------ the prior
def test_the_prior_receives_a_gradient_and_changes_when_trained():
    model = pi.build_model(_tiny_settings(), "prior")
    out = model(torch.rand(3, 4, 32, 32))
    pi.reconstruction_loss(
        out["out"], torch.rand(3, 4, 32, 32), torch.ones(3, 1, 32, 32)
    ).backward()
    grad = model.prior.static_prior.grad
    assert grad is not None and grad.abs().sum() > 0

    s = _tiny_settings()
    torch.manual_seed(
        0
    )  # the trainer seeds torch with its seed before building its model
    before = pi.build_model(s, "full").prior.static_prior.detach().clone()
    trainer = pi.train_variant(s, "full", 0, _samples())
    after = trainer.model.prior.static_prior.detach()
    assert after.shape == before.shape and not torch.equal(after, before)


def test_a_run_checkpoints_and_a_rerun_resumes_it_without_training(
    tmp_path, monkeypatch
):
    s = _tiny_settings(checkpoint_every=2)
    first = pi.train_variant(s, "full", 0, _samples(), checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").is_file() and first.step == 3
    steps = []
    monkeypatch.setattr(pi.PUIRTrainer, "train_step", lambda t, *a: steps.append(a))
    # settings that do not build the network may change (the notebook shifts seeds,
    # a reader moves the data folder or the workers)
    moved = dict(s, workers=7, brats_folder="/elsewhere", seeds=(5,))
    again = pi.train_variant(moved, "full", 0, _samples(), checkpoint_dir=tmp_path)
    assert not steps and again.step == 3
    for a, b in zip(
        first.model.state_dict().values(),
        again.model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    # other training data: the checkpoint is not taken for this run's
    with pytest.raises(FileExistsError, match="other data"):
        pi.train_variant(s, "full", 0, _samples(seed=1), checkpoint_dir=tmp_path)


def test_variants_without_the_prior_have_no_prior_parameter():
    names = {
        n for n, _ in pi.build_model(_tiny_settings(), "consistency").named_parameters()
    }
    assert not any("static_prior" in n for n in names)
    assert "prior.static_prior" in {
        n for n, _ in pi.build_model(_tiny_settings(), "prior").named_parameters()
    }


def test_prior_attention_heads_must_divide_the_bottleneck_positions():
    with pytest.raises(ValueError, match="heads do not divide"):
        pi.PriorFusion(16, (3, 3), heads=2)


# ------------------------------------------------------------------------------------------ losses
def test_consistency_is_zero_when_every_contrast_gives_the_same_x_h():
    same = torch.randn(1, 2, 8, 3, 3).expand(4, 2, 8, 3, 3)
    assert pi.consistency_loss(same) == 0


def test_consistency_is_positive_and_follows_the_running_mean():
    x = torch.stack([torch.zeros(1, 2), torch.ones(1, 2), 3 * torch.ones(1, 2)])
    # anchors: 0, then (0 + 1)/2 = 0.5; losses (1 - 0)^2 = 1 and (3 - 0.5)^2 = 6.25, averaged
    assert pi.consistency_loss(x).item() == pytest.approx((1 + 6.25) / 2)
    x.requires_grad_(True)
    pi.consistency_loss(x).backward()
    assert x.grad[0].abs().sum() == 0, (
        "the first contrast only sets the (detached) anchor"
    )


def test_reconstruction_loss_weights_the_foreground():
    target, mask = torch.zeros(1, 4, 8, 8), torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    inside, outside = target.clone(), target.clone()
    inside[..., 0, 0], outside[..., 7, 7] = 1, 1
    assert pi.reconstruction_loss(inside, target, mask) > 5 * pi.reconstruction_loss(
        outside, target, mask
    )


def test_rotating_back_restores_the_input():
    x = torch.rand(5, 4, 8, 8)
    k = torch.tensor([0, 1, 2, 3, 1])
    assert torch.equal(pi.rotate(pi.rotate(x, k), (4 - k) % 4), x)
    assert not torch.equal(pi.rotate(x, k)[1], x[1])


# ------------------------------------------------------------------------------------------ splits
def test_the_subject_split_has_no_overlap_and_refuses_unknown_people():
    train, test = pi.split_subjects(["a", "b", "c"], ["c"])
    assert set(train) & set(test) == set() and set(train) | set(test) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="not among the subjects"):
        pi.split_subjects(["a", "b"], ["z"])
    with pytest.raises(ValueError, match="at least one training"):
        pi.split_subjects(["a"], ["a"])


def test_validation_slices_are_disjoint_from_training_with_a_gap():
    tr, va = pi.split_slices(30, 0.2, 2)
    assert set(tr) & set(va) == set() and va.min() - tr.max() == 3
    with pytest.raises(ValueError, match="too few"):
        pi.split_slices(3, 0.5, 2)


def test_the_chapter_data_split_holds_out_one_whole_person():
    data = pi.prepare_data(CI)
    assert data["split"]["test"] == ["TCGA-FG-6692"]
    assert (
        set(data["train"])
        == set(data["val"])
        == {"BraTS-GLI-00001-000", "TCGA-DU-7294"}
    )
    assert set(data["test"]) == {"TCGA-FG-6692"}
    for name in data["train"]:
        assert not set(data["train"][name].position) & set(data["val"][name].position)
    sample = data["test"]["TCGA-FG-6692"].samples
    assert sample.shape[1:] == (5, 48, 48) and 0 <= sample.min() and sample.max() <= 1
    assert torch.all(sample[:, :4] * (1 - sample[:, 4:]) == 0), (
        "the background is 0 outside the brain mask"
    )


# ------------------------------------------------------------------------------------------ loaders
def _write_nifti(path, shape, value=1):
    data = np.zeros(shape, dtype=np.int16)
    data[2:-2, 2:-2, 2:-2] = value
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(tmp_path, shapes, corrupt=None):
    files = {}
    for c, shape in zip(pi.CONTRASTS, shapes, strict=True):
        path = tmp_path / f"s1-{c}.nii.gz"
        digest = _write_nifti(path, shape, value=1 + pi.CONTRASTS.index(c))
        if c == corrupt:
            digest = "0" * 64
        files[f"s1/{c}"] = {
            "filename": path.name,
            "image_size": shape[0],
            "local": str(path),
            "sha256": digest,
        }
    folder = tmp_path / "repo" / "data_manifests"
    folder.mkdir(parents=True)
    raw = {
        "name": "tiny",
        "title": "t",
        "licence": "l",
        "source": "s",
        "citation": "c",
        "spatial_dims": 3,
        "format": "nifti",
        "files": files,
    }
    (folder / "tiny.yaml").write_text(yaml.safe_dump(raw))
    return load_manifest(folder / "tiny.yaml")


def test_a_file_with_a_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVAE_DATA_ROOT", str(tmp_path))
    manifest = _manifest(tmp_path, [(12, 12, 10)] * 4, corrupt="t2")
    with pytest.raises(ChecksumError, match="s1/t2"):
        pi.manifest_subjects(manifest)


def test_contrasts_on_different_grids_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVAE_DATA_ROOT", str(tmp_path))
    manifest = _manifest(
        tmp_path, [(12, 12, 10), (12, 12, 10), (12, 12, 9), (12, 12, 10)]
    )
    paths = pi.manifest_subjects(manifest)["s1"]
    with pytest.raises(ValueError, match="share one grid"):
        pi.load_subject(paths)


def test_a_good_subject_loads_and_normalises_on_the_brain(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVAE_DATA_ROOT", str(tmp_path))
    manifest = _manifest(tmp_path, [(12, 12, 10)] * 4)
    volume = pi.load_subject(pi.manifest_subjects(manifest)["s1"])
    assert volume.shape == (4, 12, 12, 10)
    images, mask = pi.normalise(volume + torch.rand_like(volume) * (volume > 0))
    assert mask.sum() == 8 * 8 * 6 and images[:, mask[0] == 0].abs().max() == 0
    lo, hi = CI["window"]
    mean_z = images[0][mask[0] > 0].mean() * (hi - lo) + lo
    assert abs(float(mean_z)) < 0.05, (
        "z-scored on the brain: the brain's mean maps to z = 0"
    )


def test_brats_folders_are_read_in_the_challenge_layout():
    local = (
        load_manifest("brain_mri").file("BraTS-GLI-00001-000/t1").local.parent.parent
    )
    found = pi.brats_subjects(local)
    assert list(found) == ["BraTS-GLI-00001-000"]
    assert found["BraTS-GLI-00001-000"]["flair"].name.endswith("-t2f.nii.gz")


def test_download_brats_rejects_a_malformed_synapse_id(tmp_path):
    with pytest.raises(ValueError, match="Synapse id"):
        pi.download_brats("brats2023", tmp_path)


# ------------------------------------------------------------------------------------------ scores
def test_brain_mask_psnr_equals_the_psnr_of_the_brain_voxels():
    s = _samples(3)
    target, mask = s[:, :1], s[:, 4:]
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1) * mask
    mse = ((pred - target) ** 2)[mask.expand_as(pred) > 0].reshape(3, -1).mean(1)
    assert torch.allclose(
        pi.masked_psnr(pred, target, mask), 10 * torch.log10(1 / mse), atol=1e-4
    )


def test_brain_mask_ssim_is_one_for_a_perfect_prediction_and_ignores_the_background():
    s = _samples(2)
    target, mask = s[:, :1], s[:, 4:]
    assert torch.allclose(
        pi.masked_ssim(target, target, mask, 7), torch.ones(2), atol=1e-5
    )
    noisy = (target + 0.2 * torch.randn_like(target)).clamp(0, 1)
    assert pi.masked_ssim(noisy, target, mask, 7).mean() < 0.9
    # an error far from the brain (beyond the window's reach) leaves the brain-mask score perfect
    far = target.clone()
    far[..., :2, :] = 1.0
    assert torch.allclose(
        pi.masked_ssim(far, target, mask, 3), torch.ones(2), atol=1e-5
    )


def test_the_paper_protocol_scores_higher_than_the_brain_mask():
    s = _tiny_settings(ssim_kernel=3)
    model = pi.build_model(s, "baseline")
    samples = _samples(2)
    brain = pi.off_diagonal_mean(pi.synthesis_scores(model, samples, s)["psnr"]).mean()
    paper = pi.off_diagonal_mean(
        pi.paper_protocol_scores(model, samples, s)["psnr"]
    ).mean()
    assert paper > brain


def test_agreement_separates_people_when_x_h_is_personal():
    rng = np.random.default_rng(0)
    person = {n: rng.normal(size=(1, 5, 16)) for n in ("a", "b", "c")}
    emb = {
        n: np.repeat(v, 4, 0) + 0.01 * rng.normal(size=(4, 5, 16))
        for n, v in person.items()
    }
    positions = {n: np.linspace(0, 1, 5) for n in emb}
    agree = pi.xh_agreement(emb, positions, "c")
    assert agree["same_person"] > 0.99 and agree["gap"] > 0.5
    contrast_only = {
        n: rng.normal(size=(4, 1, 16)).repeat(5, 1) for n in ("a", "b", "c")
    }
    shared = np.random.default_rng(1).normal(size=(4, 1, 16)).repeat(5, 1)
    agree = pi.xh_agreement(
        {n: shared + 0.01 * v for n, v in contrast_only.items()}, positions, "c"
    )
    assert agree["gap"] < 0.1


def test_the_3d_swinunetr_model_gives_x_h_of_the_paper_layout_and_trains_its_prior():
    s = _tiny_settings(
        spatial_dims=3,
        backbone="swinunetr",
        feature_size=12,
        image_size=64,
        prior_heads=2,
    )
    model = pi.build_model(s, "full")
    out = model(torch.rand(1, 4, 64, 64, 64))
    assert out["out"].shape == (1, 4, 64, 64, 64) and out["x_h"].shape == (
        1,
        192,
        2,
        2,
        2,
    )
    assert out["rotation"].shape == (1, 4) and out["contrastive"].shape == (1, 8)
    out["out"].mean().backward()
    assert model.prior.static_prior.grad.abs().sum() > 0


def test_random_patches_cut_the_same_place_in_every_channel():
    torch.manual_seed(0)
    volume = torch.arange(2 * 5 * 10 * 9 * 8, dtype=torch.float32).reshape(
        2, 5, 10, 9, 8
    )
    volume[:, 1] = volume[:, 0] + 1
    patches = pi.random_patches(volume, 4)
    assert patches.shape == (2, 5, 4, 4, 4) and torch.equal(
        patches[:, 1], patches[:, 0] + 1
    )


def test_full_mode_data_are_whole_people_in_one_box_and_train_on_patches(monkeypatch):
    s = settings_for(
        pi.MODES,
        "full",
        {
            "test_subjects": ("TCGA-FG-6692",),
            "volume_size": (64, 72, 64),
            "backbone": "basicunet",
            "features": (4, 4, 8, 8, 16, 4),
            "image_size": 32,
            "prior_heads": 2,
            "contrastive_dim": 8,
            "steps": 1,
            "batch_size": 1,
        },
    )
    data = pi.prepare_data(s)
    assert data["split"]["test"] == ["TCGA-FG-6692"] and not set(
        data["split"]["train"]
    ) & {"TCGA-FG-6692"}
    for part in ("train", "test"):
        for d in data[part].values():
            assert d.samples.shape == (1, 5, 64, 72, 64)
    assert all(d.samples.dtype == torch.float16 for d in data["train"].values()), (
        "training people kept in half precision"
    )
    trainer = pi.train_variant(s, "full", 0, pi.stack_samples(data["train"]))
    assert trainer.step == 1
    # full mode without a BraTS folder: one test person, refused before any training
    trained = []
    monkeypatch.setattr(pi_runs, "train_variant", lambda *a, **k: trained.append(a))
    with pytest.raises(ValueError, match="brats_folder"):
        pi.run_folds(s, [data])
    assert not trained


# ------------------------------------------------------------------------------------------ folds, by patient
def _fake_person(name, paths, settings):
    g = torch.Generator().manual_seed(len(name))
    samples = torch.rand(12, 5, 8, 8, generator=g)
    samples[:, 4] = 1
    return pi.SubjectData(name, samples, np.linspace(0, 1, 12), 0.0)


def test_brats_folders_of_one_patient_stay_together(monkeypatch):
    # prepare_data looks load_person up in the submodule that defines both
    monkeypatch.setattr(pi_splits, "load_person", _fake_person)
    assert (
        pi.patient_of("BraTS-GLI-00001-001")
        == "BraTS-GLI-00001"
        == pi.patient_of("BraTS-GLI-00001-000")
    )
    assert pi.patient_of("TCGA-DU-7294") == "TCGA-DU-7294"
    names = [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(10) for t in (0, 1)]
    subjects = {n: {} for n in names}
    s = dict(CI, test_subjects=(), test_fraction=0.3)
    data = pi.prepare_data(s, subjects)
    test = {pi.patient_of(n) for n in data["split"]["test"]}
    train = {pi.patient_of(n) for n in data["split"]["train"]}
    assert len(test) == 3 and not test & train
    assert len(data["split"]["test"]) == 6, "both folders of every test patient"
    named = pi.prepare_data(dict(CI, test_subjects=("BraTS-GLI-00004-001",)), subjects)
    assert named["split"]["test"] == ["BraTS-GLI-00004-000", "BraTS-GLI-00004-001"]


def test_leave_one_out_tests_every_person_once_and_reads_each_once(monkeypatch):
    calls = []

    def counting(name, paths, settings):
        calls.append(name)
        return _fake_person(name, paths, settings)

    monkeypatch.setattr(pi_splits, "load_person", counting)
    subjects = {n: {} for n in ("a", "b", "c")}
    folds = pi.leave_one_out(CI, subjects)
    assert [f["split"]["test"] for f in folds] == [["a"], ["b"], ["c"]]
    for f in folds:
        assert not set(f["split"]["train"]) & set(f["split"]["test"])
    assert sorted(calls) == ["a", "b", "c"]
    assert pi.chapter_fold(dict(CI, test_subjects=("b",)), folds) == 1


# ------------------------------------------------------------------------------------------ does the decoder use X_h?
def test_without_skips_the_output_depends_on_x_h_only():
    torch.manual_seed(0)
    model = pi.build_model(_tiny_settings(skips=False), "baseline").eval()
    x = torch.rand(2, 4, 32, 32)
    skips, x_h = model.encode(x)
    with torch.no_grad():
        out = model.decode(skips, x_h)
        other_skips = tuple(torch.rand_like(t) for t in skips)
        assert torch.allclose(model.decode(other_skips, x_h), out), (
            "skips must not reach the output"
        )
        assert not torch.allclose(model.decode(skips, torch.zeros_like(x_h)), out)
    unet = pi.build_model(_tiny_settings(skips=False), "unet").eval()
    with torch.no_grad():
        skips, x_h = unet.encode(x)
        assert not torch.allclose(
            unet.decode(tuple(torch.rand_like(t) for t in skips), x_h),
            unet.decode(skips, x_h),
        )


def test_the_swap_test_matches_the_synthesis_and_sees_a_decoder_that_reads_x_h():
    s = _tiny_settings(skips=False)
    torch.manual_seed(0)
    model = pi.build_model(s, "prior").eval()
    samples = _samples(4)
    dep = pi.x_h_dependence(model, samples)
    plain = pi.off_diagonal_mean(pi.synthesis_scores(model, samples, s)["psnr"])
    np.testing.assert_allclose(dep["none"], plain, rtol=1e-5)
    assert not np.allclose(dep["none"], dep["zero"]) and not np.allclose(
        dep["none"], dep["swap"]
    )
    donors = pi.synthesise_with_x_h(model, samples, "swap", samples.roll(2, 0))
    np.testing.assert_allclose(
        dep["swap"], pi.off_diagonal_mean(pi.scores_of(donors, samples)), rtol=1e-5
    )
    with pytest.raises(ValueError, match="swap needs donor"):
        pi.synthesise_with_x_h(model, samples, "swap")


def test_the_constant_control_predicts_each_contrasts_mean_brain_intensity():
    train = _samples(3)
    test = _samples(2, seed=1)
    pred = pi.constant_prediction(train, test)
    assert pred.shape == (4, 2, 4, 32, 32)
    mask = train[:, 4:]
    for c in range(4):
        mean = (train[:, c : c + 1] * mask).sum() / mask.sum()
        inside = pred[1, :, c][test[:, 4] > 0]
        assert torch.allclose(inside, mean.expand_as(inside))
    assert torch.all(pred[:, :, :, test[0, 4] == 0] == 0), "nothing outside the brain"
    assert torch.equal(pred[0], pred[3]), "the source is not read"


def test_the_mask_control_agrees_perfectly_within_a_person():
    people = {
        n: pi.SubjectData(n, _samples(5, seed=i), np.linspace(0, 1, 5), 0.0)
        for i, n in enumerate("abc")
    }
    for n, d in people.items():  # a different brain mask per person
        d.samples[:, 4, : 4 + "abc".index(n) * 3] = 0
    positions = {n: d.position for n, d in people.items()}
    emb = pi.control_embeddings(people, "mask", (3, 3))
    assert emb["a"].shape == (4, 5, 9)
    assert pi.xh_agreement(emb, positions, "a")["same_person"] == pytest.approx(1.0)
    pixels = pi.control_embeddings(people, "pixels", (3, 3))
    assert pi.xh_agreement(pixels, positions, "a")["same_person"] < 0.99


def _fold(person, effect, n=6, seeds=(0, 1, 2), seed=0):
    """A fake fold: variant "b" scores 20 dB, "a" scores 20 + effect (+ noise) on n test slices."""
    rng = np.random.default_rng(seed)
    test = {}
    for s in seeds:
        for v, shift in (("a", effect), ("b", 0.0)):
            psnr = np.full((4, 4, n), 20.0 + shift) + rng.normal(0, 0.05, (4, 4, n))
            test[v, s] = {"psnr": psnr, "ssim": psnr / 40}
    constant = {"psnr": np.full((4, 4, n), 19.0), "ssim": np.full((4, 4, n), 0.4)}
    return {"person": person, "test": test, "control": {"constant": constant}}


def test_fold_comparisons_agree_only_when_every_fold_does():
    same = [_fold(p, 1.0, seed=i) for i, p in enumerate("xyz")]
    c = pi.compare(same, "a", "b")
    assert (
        c["agree"] == "above 0"
        and c["pooled"]["low"] > 0
        and c["pooled"]["n_clusters"] == 3
    )
    assert set(c["folds"]) == {"x", "y", "z"} and all(
        r["n_clusters"] == 1 for r in c["folds"].values()
    )
    mixed = [_fold("x", 1.0), _fold("y", -1.0, seed=1), _fold("z", 1.0, seed=2)]
    assert pi.compare(mixed, "a", "b")["agree"] == "no"
    assert pi.compare(same, "b", "constant")["pooled"]["mean"] == pytest.approx(
        1.0, abs=0.05
    )
    table = pi.comparison_table(same, {"a - b": ("a", "b")})
    assert list(table.index.get_level_values(1)) == ["x", "y", "z", "pooled"]


def test_a_holdout_split_clusters_its_items_by_person():
    """Full mode's one split holds many test people: its interval must resample them (seeds
    crossed with people), not only the seeds, and the person gap is one value per person."""
    from medvae_lib import stats

    fold = _fold("2 held-out people", 1.0, n=6)
    fold["people"], fold["item_people"] = ["p", "q"], ["p"] * 3 + ["q"] * 3
    c = pi.compare([fold], "a", "b")
    assert c["pooled"] is not None and c["pooled"]["n_clusters"] == 2
    assert c["folds"]["2 held-out people"]["n_clusters"] == 2
    a, b = pi.item_scores(fold, "a"), pi.item_scores(fold, "b")
    expected = stats.paired_difference(a, b, clusters=fold["item_people"])
    assert c["pooled"]["low"] == pytest.approx(expected["low"])
    alone = {k: v for k, v in fold.items() if k not in ("people", "item_people")}
    assert pi.compare([alone], "a", "b")["pooled"] is None  # one person: no pooled
    assert "pooled [95% interval]" in pi.fold_summary([fold]).columns
    fold["agreement"] = {
        ("a", s): {"p": {"gap": 0.1 + s}, "q": {"gap": 0.2 + s}} for s in (0, 1, 2)
    }
    assert pi.test_people([fold]) == ["p", "q"]
    assert pi.gap_values([fold], "a").tolist() == [[0.1, 0.2], [1.1, 1.2], [2.1, 2.2]]
    fold["item_people"] = ["p"] * 5
    with pytest.raises(ValueError, match="5 item people for 6 test items"):
        pi.compare([fold], "a", "b")


def test_full_mode_scoring_in_parts_gives_the_numbers_of_one_pass():
    """Full mode scores 3D test people one at a time and probes X_h two patches at a time
    (memory): the numbers must be those of one pass over everyone."""
    torch.manual_seed(0)
    s = _tiny_settings(spatial_dims=3, image_size=32, ssim_kernel=3)
    model = pi.build_model(s, "full").eval()
    g = torch.Generator().manual_seed(1)
    samples = torch.rand(2, 5, 40, 32, 32, generator=g)  # longer than a patch: windows
    samples[:, 4] = (samples[:, 4] > 0.3).float()
    parts = pi.synthesis_scores(model, samples, s)  # one person at a time
    whole = pi.synthesis_scores.__wrapped__(model, samples, s)
    for metric in ("psnr", "ssim"):
        np.testing.assert_allclose(parts[metric], whole[metric], rtol=1e-5)
    patches = pi.central_patch(samples, 32)
    one_pass = pi.x_h_dependence(model, patches)
    chunked = pi.x_h_dependence(model, patches, chunk=1)
    for replace in ("none", "zero", "swap"):
        np.testing.assert_allclose(chunked[replace], one_pass[replace], rtol=1e-5)


def test_a_test_person_is_compared_with_the_training_people_only():
    from medvae_lib.personalized_invariant.runs import _agreement

    rng = np.random.default_rng(0)
    names = ["BraTS-GLI-00001-000", "BraTS-GLI-00001-001", "BraTS-GLI-00002-000", "t"]
    emb = {n: rng.normal(size=(4, 3, 6)) for n in names}
    positions = {n: np.linspace(0, 1, 3) for n in names}
    # two test folders of one patient, one other test person, one training person
    data = {"split": {"test": names[:3]}}
    got = _agreement(emb, positions, data)
    for person in names[:3]:
        others = set(names[:3]) - {person}  # other test folders, incl. the repeat scan
        assert got[person] == pi.xh_agreement(emb, positions, person, exclude=others)
        everyone = pi.xh_agreement(emb, positions, person)
        assert got[person]["same_person"] == everyone["same_person"]
        assert got[person]["different_people"] != everyone["different_people"]
