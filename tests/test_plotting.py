"""Figures read at the page's column width: plotting.small_text finds text the page would draw
below 9 pt, and the chapters' figure functions have none."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from medvae_lib import latent_downstream, medvae_3d, plotting  # noqa: E402


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
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylim() == pytest.approx((0.0, 0.3))
    plt.close(fig)


def test_chapter_7_synthesis_and_embedding_figures_read_at_column_width():
    from medvae_lib import personalized_invariant as pi

    settings = {
        **pi.MODES["ci"],
        "image_size": 32,
        "features": (4, 4, 8, 8, 16, 4),
        "prior_heads": 2,
        "contrastive_dim": 8,
    }
    torch.manual_seed(0)
    model = pi.build_model(settings, "full").eval()
    sample = torch.rand(len(pi.CONTRASTS) + 1, 32, 32)
    sample[len(pi.CONTRASTS)] = 1.0  # the brain mask
    fig = pi.plot_synthesis(model, sample, settings, "a person, slice 0")
    assert plotting.small_text(fig) == []
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
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
