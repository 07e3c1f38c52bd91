"""Figures read at the page's column width: plotting.small_text finds text the page would draw
below 9 pt, and the chapters' figure functions have none."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import tiny_puir_settings  # noqa: E402

from medvae_lib import latent_downstream, medvae_3d, plotting  # noqa: E402


def _colour_bars(fig):
    return [a for a in fig.axes if a.get_label() == "<colorbar>"]


def test_small_text_sees_what_the_page_shrinks():
    wide, ax = plt.subplots(figsize=(12, 3), dpi=100)  # 1,200 px shown in 688
    ax.set_title("ten points", fontsize=10)
    ax.set_xlabel("fourteen points", fontsize=14)
    found = dict(plotting.small_text(wide))
    scale = plotting.page_scale(wide)
    plt.close(wide)
    assert 0.5 < scale < 0.8  # drawn about 1,000 px wide, shown in 688
    # 10 pt at 100 dpi is 13.9 px, shrunk with the figure, and 1 pt is 4/3 px
    assert found.pop("ten points") == pytest.approx(
        10 * 100 / 72 * scale * 0.75, abs=0.1
    )
    assert "fourteen points" not in found  # about 10 pt on the page
    assert found and all(size < 9 for size in found.values())  # the tick labels
    narrow, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.set_title("ten points", fontsize=10)
    ax.tick_params(labelsize=9)
    assert plotting.small_text(narrow) == []
    ax.axis("off")  # tick labels of a hidden axis do not count
    ax.set_title("eight points", fontsize=8)
    assert [t for t, _ in plotting.small_text(narrow)] == ["eight points"]
    plt.close(narrow)


def test_chapter_4_rate_distortion_figure_reads_at_column_width():
    rows = []
    for name, compression in (("medvae_4_1_2d", 16), ("medvae_8_1_2d", 64)):
        for method, psnr in (("MedVAE latent", 20.0), ("resize", 25.0)):
            rows.append(
                {
                    "configuration": name,
                    "method": method,
                    "compression": compression,
                    "PSNR (dB)": psnr,
                    "MS-SSIM": 0.9,
                    "probe AUROC": 0.93,
                }
            )
    fig = latent_downstream.plot_rate_distortion(pd.DataFrame(rows))
    assert plotting.small_text(fig) == []
    plt.close(fig)


def test_chapter_5_planes_read_at_column_width_with_an_error_colour_bar():
    g = torch.Generator().manual_seed(0)
    volume = torch.rand(1, 40, 40, 24, generator=g)
    fig = medvae_3d.plot_planes(volume, {"inflated": volume * 0.9, "resize": volume})
    assert plotting.small_text(fig) == []
    bars = _colour_bars(fig)
    assert len(bars) == 1 and bars[0].get_ylim() == pytest.approx((0.0, 0.3))
    plt.close(fig)


def test_chapter_7_synthesis_and_embedding_figures_read_at_column_width():
    from medvae_lib import personalized_invariant as pi

    settings = tiny_puir_settings()
    torch.manual_seed(0)
    model = pi.build_model(settings, "full").eval()
    sample = torch.rand(len(pi.CONTRASTS) + 1, 32, 32)
    sample[len(pi.CONTRASTS)] = 1.0  # the brain mask
    fig = pi.plot_synthesis(model, sample, settings, "a person, slice 0")
    assert plotting.small_text(fig) == []
    bars = _colour_bars(fig)
    assert len(bars) == 2  # intensity and error
    plt.close(fig)
    g = torch.Generator().manual_seed(1)
    embs = {
        label: {p: torch.randn(4, 5, 6, generator=g).numpy() for p in ("A", "B")}
        for label in ("with skips", "full")
    }  # (contrasts, slices, features) per person
    fig = pi.plot_embedding(embs)
    assert plotting.small_text(fig) == []
    plt.close(fig)


def test_chapter_1_data_figures_read_at_column_width_with_a_difference_colour_bar():
    import numpy as np

    from medvae_lib import data_prep
    from medvae_lib.data import Split

    rng = np.random.default_rng(0)
    split = Split(
        rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        np.repeat(np.arange(2, dtype=np.int64), 20),
    )
    labels = {0: "normal", 1: "pneumonia"}
    for fig in (
        data_prep.plot_examples(split, labels, per_class=8),
        data_prep.plot_intensity_histograms(split, labels),
    ):
        assert plotting.small_text(fig) == []
        plt.close(fig)
    fig = data_prep.plot_resizing(split.images[0], [14, 9, 7])
    assert plotting.small_text(fig) == []
    difference = fig.axes[-1].images[0]  # the last |difference| panel
    assert difference.colorbar is not None
    assert difference.colorbar.mappable.get_clim() == pytest.approx((0.0, 0.2))
    plt.close(fig)


def test_chapter_5_fold_curves_read_at_column_width():
    rows = [
        {"fold": fold, "run": run, "seed": seed, "step": step, "PSNR (dB)": 20.0}
        for fold in ("TCGA-FG-6692", "TCGA-DU-7294", "BraTS-GLI-00001-000")
        for run in ("inflated", "scratch")
        for seed in (0, 1)
        for step in (0, 500, 2000, 5000, 10000)
    ]
    fig = medvae_3d.plot_fold_curves(pd.DataFrame(rows))
    assert plotting.small_text(fig) == []
    plt.close(fig)


def test_chapter_6_figures_read_at_column_width_as_the_chapter_draws_them():
    import itertools

    import numpy as np

    from medvae_lib import multimodal_theory as mt

    rng = np.random.default_rng(0)
    ms = [4, 16, 64, 256, 1024]
    results = pd.DataFrame(
        {
            "subset": subset,
            "size": len(subset.split("+")),
            "m": m,
            "seed": seed,
            "excess risk": rng.uniform(0.01, 10),
            "eta": rng.uniform(0.01, 1),
            "rademacher": (len(subset.split("+")) / m) ** 0.5,
        }
        for subset in mt.all_subsets()
        for m in ms
        for seed in range(3)
    )
    theorem1 = pd.DataFrame(
        {"m": m, "gamma_S": g, "risk gap": g * 1.1}
        for m in ms
        for g in rng.normal(0, 1, 20)
    )
    overlap = pd.DataFrame(
        {
            "size": size,
            "overlap": w,
            "eta (ERM, m)": 0.3 * (1 - w) / size + 0.05,
            "eta (infinite data)": 0.3 * (1 - w) / size,
        }
        for size in (1, 2, 3, 4)
        for w in (0.0, 0.5, 1.0)
    )
    subsets = [
        "+".join(s)
        for r in (1, 2, 3)
        for s in itertools.combinations(mt.BRAIN_MODALITIES, r)
    ]
    late = pd.DataFrame(
        {
            "test person": person,
            "m": m,
            "seed": seed,
            "subset": subset,
            "accuracy": rng.uniform(0.4, 0.8),
        }
        for person in ("BraTS-GLI-00001-000", "TCGA-DU-7294", "TCGA-FG-6692")
        for m in (16, 160, 1600)
        for seed in range(2)
        for subset in subsets
    )
    # as the chapter's cells draw them: its own titles, then plt.tight_layout()
    axes = mt.plot_by_size(results)
    axes[0].set_title("excess risk of the trained model")
    axes[1].set_title(r"$\eta$ of its encoder")
    plt.tight_layout()
    one = mt.plot_by_size(results, values=("excess risk",))
    one[0].set_title("redundant modalities (w = 1, noise 0.2)")
    plt.tight_layout()
    scatter, _ = mt.plot_theorem1(theorem1, results)
    plt.tight_layout()
    ax = mt.plot_overlap(overlap)
    ax.set_title(
        "eta against overlap (ERM at m = 256: solid; infinite data: dashed)",
        fontsize=9,
    )
    plt.tight_layout()
    fusion = mt.plot_late_fusion(late)
    plt.tight_layout()
    for fig in {a.figure for a in (axes[0], one[0], scatter, ax, fusion[0])}:
        assert plotting.small_text(fig) == []
    assert len(_colour_bars(scatter.figure)) == 1  # m, instead of a legend of every m
    plt.close("all")


def test_chapter_8_differences_read_at_column_width_in_the_chapters_figure_size():
    import numpy as np

    from medvae_lib import contrastive_benchmark as cb

    tasks = [t for group in cb.TASK_GROUPS.values() for t in group]
    d = np.linspace(-0.05, 0.05, len(tasks))
    frame = pd.DataFrame(
        {"task": tasks, "difference": d, "low": d - 0.04, "high": d + 0.04}
    )
    fig, ax = plt.subplots(figsize=(6.8, 4.2))  # the chapter's cells
    cb.plot_differences(
        {"FILIP - CLIP": frame, "GLoRIA - CLIP": frame},
        "Question (iii): adding a word-region (fine-grained) loss",
        ax,
    )
    plt.tight_layout()
    assert plotting.small_text(fig) == []
    plt.close(fig)


def test_chapter_2_and_3_figures_read_at_column_width_with_colour_bars():
    from medvae_lib import medvae_stage1, medvae_stage2
    from medvae_lib.teachers import FrozenTeacher

    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 32, 32, generator=g)
    fig = medvae_stage1.plot_architecture("medvae_4_1_2d", 32, 16)
    assert plotting.small_text(fig) == []
    plt.close(fig)
    titles = ["normal"] * 3 + ["pneumonia"] * 3
    reconstructions = {"with adversarial": x * 0.9, "resize 4x down and up": x}
    fig = medvae_stage1.plot_reconstructions(x, reconstructions, range(6), titles)
    assert plotting.small_text(fig) == []
    bars = _colour_bars(fig)
    assert len(bars) == 1 and bars[0].get_ylim() == pytest.approx((0.0, 0.3))
    plt.close(fig)
    z_mu = torch.randn(8, 1, 8, 8, generator=g) - 2
    show = torch.tensor([0, 1, 3, 4])  # as the chapter passes it: a tensor of indices
    fig = medvae_stage1.plot_latents(
        x, z_mu, torch.rand(8, 1, 8, 8, generator=g), show, titles[:4]
    )
    assert plotting.small_text(fig) == []
    bars = _colour_bars(fig)
    shown = z_mu[[0, 1, 3, 4]]
    assert len(bars) == 1  # one scale for every mean map
    assert bars[0].get_xlim() == pytest.approx((shown.min(), shown.max()))
    plt.close(fig)
    teacher = FrozenTeacher(torch.nn.Flatten(), image_size=16)
    latents = {
        "stage 1 latent": torch.randn(8, 1, 8, 8, generator=g),
        "stage 2 latent": torch.randn(8, 1, 8, 8, generator=g),
    }
    fig = medvae_stage2.plot_rendered_latents(x, teacher, latents, [0, 1, 3, 4])
    assert plotting.small_text(fig) == []
    plt.close(fig)
