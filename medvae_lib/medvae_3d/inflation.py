"""Inflation: MedVAE's 2D weights kernel-centred into the 3D network, and chapter 2's
2D model (read from its export, or trained here) that the 3D runs start from."""

from __future__ import annotations

import torch

from ..medvae_stage1 import Stage1Trainer
from ..models import build_autoencoder, get_config

INFLATIONS = ("centre", "repeat")


def inflate_state_dict(state_2d: dict, state_3d: dict, kernel: str = "centre") -> dict:
    """MedVAE's ``init_from_ckpt`` (``autoencoder_kl_3d.py``): for each 3D tensor, the
    2D tensor of the same name; a 2D kernel (out, in, kx, ky) goes into the middle index
    of the last axis of the 3D kernel (out, in, kx, ky, kz), zeros elsewhere
    ("kernel-centering"); other tensors are copied. Raises on a name or a shape that
    does not match, instead of MedVAE's print of missing keys.

    ``kernel="repeat"`` is I3D's inflation instead (Carreira & Zisserman, 2017), not
    MedVAE's: the 2D kernel repeated along the last axis and divided by ``kz``, so that a
    volume of identical slices still gives the 2D response away from its ends."""
    if kernel not in INFLATIONS:
        raise ValueError(f"kernel must be one of {INFLATIONS}, got {kernel!r}")
    missing = sorted(set(state_3d) - set(state_2d))
    unexpected = sorted(set(state_2d) - set(state_3d))
    if missing or unexpected:
        raise ValueError(
            f"2D and 3D layouts differ: missing in 2D {missing[:5]}, not in 3D {unexpected[:5]}"
        )
    out = {}
    for name, target in state_3d.items():
        source = state_2d[name]
        if source.shape == target.shape:
            out[name] = source.clone()
        elif (
            source.ndim == 4
            and target.ndim == 5
            and tuple(source.shape) == tuple(target.shape[:4])
        ):
            if kernel == "repeat":
                depth = target.shape[4]
                out[name] = source[..., None].repeat(1, 1, 1, 1, depth) / depth
            else:
                centred = torch.zeros_like(target)
                centred[..., target.shape[4] // 2] = source
                out[name] = centred
        else:
            raise ValueError(
                f"{name}: 2D shape {tuple(source.shape)} cannot be inflated to {tuple(target.shape)}"
            )
    return out


def twin_2d_model(model_3d: str) -> str:
    """The 2D MedVAE configuration with the 3D one's factor and latent channels (``medvae_4_1_3d`` ->
    ``medvae_4_1_2d``): the model whose weights inflate into it."""
    cfg = get_config(model_3d)
    if cfg.spatial_dims != 3:
        raise ValueError(f"{model_3d} is not a 3D model")
    return get_config(f"medvae_{cfg.factor}_{cfg.latent_channels}_2d").name


def inflate_autoencoder(
    autoencoder_2d: torch.nn.Module,
    model_3d: str,
    width: int | str,
    kernel: str = "centre",
) -> torch.nn.Module:
    """A 3D :class:`~medvae_lib.models.MedVAE` of layout ``model_3d`` and ``width`` whose weights
    are ``autoencoder_2d``'s, kernel-centred (:func:`inflate_state_dict`).

    What it computes at first: every 3x3 convolution acts within slices across the last axis, and a group
    norm over a volume of identical slices has one slice's statistics, so a volume whose slices are all the
    same image gets, in every latent slice, the 2D latent of that image. On other volumes it is *not* the 2D
    model slice by slice: each down-sampling also halves the number of slices (the stride-2 kernel reads one
    slice in two) and each up-sampling repeats slices, so the untrained model's convolutions see one slice in
    ``factor`` and rebuild the others as copies, while its group norms pool statistics over all slices; 3D
    training then teaches the zero-initialised off-centre kernel weights to mix neighbouring slices.
    (The middle blocks' self-attention attends across slices from the start; on identical
    slices it gives the 2D result, since every key is repeated equally.)

    ``kernel="repeat"``: I3D's inflation instead (:func:`inflate_state_dict`).
    """
    model = build_autoencoder(model_3d, width=width)
    model.load_state_dict(
        inflate_state_dict(autoencoder_2d.state_dict(), model.state_dict(), kernel),
        strict=True,
    )
    return model


def chapter2_autoencoder(
    model_3d: str,
    mode: str,
    seed: int = 0,
    device="cpu",
    overwrite: bool = False,
    stage1_overrides: dict | None = None,
    drive: bool = False,
):
    """Chapter 2's 2D stage-1 model of the 3D model's twin configuration (:func:`twin_2d_model`), with
    chapter 2's settings for ``mode`` (changed by ``stage1_overrides``, the overrides chapter 2 ran
    with): read from chapter 2's export (``runs/02_medvae_stage1/<mode>/<model>/``)
    or this chapter's own when the metadata (settings, mode, data checksum) match, else trained here on
    chapter 2's training images and exported into ``runs/05_medvae_3d/<mode>/<model>/`` (the pattern of
    :func:`~medvae_lib.medvae_stage2.stage1_autoencoder`). With ``drive`` (Colab) both
    folders are also looked for on Google Drive, and a model trained here is kept there:
    after a disconnect the same 2D model comes back, so the inflated 3D runs' checkpoints
    (which name its weights) are resumed. Returns the model and a sentence saying which."""
    from .. import data_prep, medvae_stage1
    from ..medvae_stage2 import _matching_export
    from ..training import export_weights, load_weights, run_dir, settings_for

    twin = twin_2d_model(model_3d)
    settings = settings_for(
        medvae_stage1.MODES, mode, {**(stage1_overrides or {}), "model": twin}
    )
    config = medvae_stage1.stage1_config(settings, seed)
    data = data_prep.data_identity(
        "pneumoniamnist", settings["data_key"], settings["image_size"]
    )
    expected = medvae_stage1.export_metadata(config, mode, data)
    name = f"{twin}.safetensors"
    own = run_dir("05_medvae_3d", mode, twin, drive=drive)
    places = [run_dir("02_medvae_stage1", mode, twin, drive=d) for d in {False, drive}]
    path, why = _matching_export(
        [folder / name for folder in places] + [own / name], expected
    )
    if path is not None:
        return load_weights(path, build_autoencoder(twin, width=config.width)).to(
            device
        ), why
    images = data_prep.prepare_splits(
        "pneumoniamnist", settings["data_key"], settings["image_size"], seed=seed
    )
    trainer = Stage1Trainer(config, device)
    trainer.fit(
        images["train"][0],
        own / "stage1",
        0,
        resume=True,
        data=data,
        overwrite=overwrite,
    )
    export_weights(own / name, trainer.autoencoder, expected)
    return trainer.autoencoder, f"trained chapter 2's model here ({why})"
