"""Frozen image encoders ("teachers") that MedVAE's stage 2 aligns its latents with.

MedVAE's second stage (``BiomedClipLoss`` in ``medvae/losses/vae_losses.py`` of StanfordMIMI/MedVAE)
compares images through a **frozen** medical image encoder, BiomedCLIP. It loads the model with
``open_clip.create_model_and_transforms("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")``,
turns off ``requires_grad`` on every weight, puts it in eval mode and feeds it images in [0, 1] through
its own tensor pipeline::

    Compose([Resize(size=224, interpolation=3, antialias=True),   # 3 = bicubic; shorter side -> 224
             CenterCrop((224, 224)),
             Normalize(mean=CLIP_MEAN, std=CLIP_STD)])

followed by ``clip.encode_image(x)``; one-channel images are first expanded to three identical channels.

:class:`FrozenTeacher` packages exactly that: a frozen encoder plus MedVAE's preprocessing. "Frozen"
means the *teacher's weights* never change -- they have ``requires_grad=False`` and the module stays in
eval mode even when a parent calls ``.train()`` -- but gradients still flow *through* the preprocessing
and the encoder back to the input image. Stage 2 needs that: a trainable head produces an image, the
teacher embeds it, and the loss on the embedding must reach the head.

:func:`load_open_clip_teacher` builds a :class:`FrozenTeacher` from an open_clip model: BiomedCLIP from
the Hugging Face Hub (the book's full mode, on Colab), or any open_clip model directory on disk (the same
files the hub repository holds), which is how the tests build a tiny teacher without network access.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torchvision.transforms import (
    CenterCrop,
    Compose,
    InterpolationMode,
    Normalize,
    Resize,
)

BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
"""The open_clip identifier MedVAE loads its stage-2 teacher from."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""Per-channel mean of OpenAI CLIP's normalisation, which BiomedCLIP and MedVAE use."""

CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel standard deviation of OpenAI CLIP's normalisation, which BiomedCLIP and MedVAE use."""

_HF_PREFIX = "hf-hub:"
_LOCAL_PREFIX = "local-dir:"
_CONFIG_NAME = "open_clip_config.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")
_DIRECTORY_HELP = (
    "An open_clip model directory (what the Hugging Face repository of an open_clip model holds) contains "
    f"'{_CONFIG_NAME}' (a JSON object with 'model_cfg' and 'preprocess_cfg') and one weights file, "
    "preferably 'open_clip_model.safetensors' or 'open_clip_pytorch_model.bin'."
)


class FrozenTeacher(torch.nn.Module):
    """A frozen image encoder behind MedVAE's BiomedCLIP preprocessing.

    Args:
        encoder: maps normalised images of shape ``(N, 3, image_size, image_size)`` to embeddings
            ``(N, D)``. It is frozen here: every parameter gets ``requires_grad=False`` and it stays in
            eval mode for good (dropout off, normalisation statistics fixed).
        image_size: the side of the square images the encoder expects (224 for BiomedCLIP).
        mean, std: the per-channel normalisation applied after resizing and cropping.
        name: what the teacher is, e.g. the open_clip model identifier.
        provenance: where its weights came from (for the record of a run).

    Calling the teacher on images ``(N, 1 or 3, H, W)`` with values in [0, 1] returns their embeddings
    ``(N, D)``. Values slightly outside [0, 1] (a decoder's output before clamping) are accepted; MedVAE
    clamps before calling its teacher, so do the same if you want its exact inputs.
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        image_size: int,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        name: str = "",
        provenance: str = "",
    ):
        super().__init__()
        if not isinstance(encoder, torch.nn.Module):
            raise TypeError(
                f"encoder must be a torch.nn.Module, got {type(encoder).__name__}"
            )
        if (
            isinstance(image_size, bool)
            or not isinstance(image_size, int)
            or image_size < 1
        ):
            raise ValueError(
                f"image_size must be a positive integer (the encoder's square input side), got {image_size!r}"
            )
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(
                f"mean and std need one value per RGB channel (3 each), got {len(mean)} and {len(std)}"
            )
        if not all(s > 0 for s in std):
            raise ValueError(f"std must be positive in every channel, got {std}")
        self.encoder = encoder
        self.image_size = image_size
        self.mean, self.std = mean, std
        self.name, self.provenance = name, provenance
        # MedVAE's pipeline, with the same torchvision transforms (interpolation=3 is BICUBIC). On float
        # tensors they are differentiable: bicubic antialiased interpolation, slicing, an affine map.
        self.transform = Compose(
            [
                Resize(
                    size=image_size,
                    interpolation=InterpolationMode.BICUBIC,
                    max_size=None,
                    antialias=True,
                ),
                CenterCrop(size=(image_size, image_size)),
                Normalize(mean=list(mean), std=list(std)),
            ]
        )
        self._embedding_dim: int | None = None
        self.encoder.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Stay in eval mode whatever ``mode`` says: a frozen teacher must not switch on dropout or update
        normalisation statistics when the model that holds it goes into training."""
        return super().train(False)

    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor):
            raise TypeError(
                f"images must be a torch.Tensor, got {type(images).__name__}"
            )
        if images.ndim != 4:
            raise ValueError(
                f"images must have shape (N, C, H, W) with C = 1 or 3, got {images.ndim} dimensions "
                f"{tuple(images.shape)}; feed the slices of a 3D volume as a batch of 2D images"
            )
        if images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must have 1 (grey) or 3 (RGB) channels, got {images.shape[1]} channels "
                f"in shape {tuple(images.shape)}"
            )
        if images.numel() == 0:
            raise ValueError(f"images is empty: shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(
                f"images must be floating point with values in [0, 1], got dtype {images.dtype}; "
                "convert integer images first, e.g. images.float() / 255"
            )
        if not torch.isfinite(images).all():
            raise ValueError(
                f"images contain {int((~torch.isfinite(images)).sum())} non-finite values (NaN or inf); "
                "the teacher's embeddings of them would be meaningless"
            )

    def preprocess(self, images: Tensor) -> Tensor:
        """MedVAE's preprocessing of images ``(N, 1 or 3, H, W)`` in [0, 1].

        One channel is expanded to three identical ones; then the shorter side is resized to
        ``image_size`` (bicubic, antialiased, aspect ratio kept), the centre ``image_size`` square is
        cropped out and each channel is normalised, ``(x - mean[c]) / std[c]``. Returns
        ``(N, 3, image_size, image_size)``. Every step is differentiable with respect to ``images``.
        """
        self._check_images(images)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.transform(images)

    def forward(self, images: Tensor) -> Tensor:
        """Embeddings ``(N, D)`` of images ``(N, 1 or 3, H, W)`` in [0, 1]: ``encoder(preprocess(images))``.

        No ``torch.no_grad`` here: the teacher's weights are frozen, but the gradient with respect to
        ``images`` is computed whenever ``images`` requires it. Wrap the call in ``torch.no_grad()``
        yourself for targets that need no gradient (the embeddings of the real images, say).

        Raises:
            ValueError: if ``images`` is not 4-dimensional, has neither 1 nor 3 channels, is empty, is
                not floating point or holds NaN or inf.
        """
        return self.encoder(self.preprocess(images))

    @property
    def embedding_dim(self) -> int:
        """D, the length of one embedding: the encoder's ``output_dim`` if it has one, otherwise found
        once by running a blank image through the encoder."""
        if self._embedding_dim is None:
            declared = getattr(self.encoder, "output_dim", None)
            if isinstance(declared, int) and not isinstance(declared, bool):
                self._embedding_dim = declared
            else:
                reference = next(self.encoder.parameters(), None)
                if reference is None:
                    reference = next(self.encoder.buffers(), torch.empty(0))
                dummy = torch.zeros(
                    1, 3, self.image_size, self.image_size, device=reference.device
                )
                if reference.is_floating_point():
                    dummy = dummy.to(reference.dtype)
                with torch.no_grad():
                    out = self.encoder(dummy)
                if out.ndim != 2 or out.shape[0] != 1:
                    raise ValueError(
                        f"the encoder should return embeddings of shape (N, D), got {tuple(out.shape)} for one image"
                    )
                self._embedding_dim = int(out.shape[1])
        return self._embedding_dim

    def extra_repr(self) -> str:
        return f"name={self.name!r}, image_size={self.image_size}, mean={self.mean}, std={self.std}"


class _OpenClipImageTower(torch.nn.Module):
    """The image side of an open_clip model: ``forward(x) = model.encode_image(x)``.

    It keeps the *whole* open_clip model (text tower included) as its submodule ``model``, so the
    teacher's weights are exactly the checkpoint's and its state dict keys are the checkpoint's with a
    ``model.`` prefix. ``encode_image`` is called with its default ``normalize=False``, as in MedVAE.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        if not callable(getattr(model, "encode_image", None)):
            raise TypeError(
                f"expected an open_clip model with an encode_image method, got {type(model).__name__}"
            )
        self.model = model
        declared = getattr(getattr(model, "visual", None), "output_dim", None)
        if isinstance(declared, int) and not isinstance(declared, bool):
            self.output_dim = declared

    def forward(self, x: Tensor) -> Tensor:
        return self.model.encode_image(x)


def _weights_in(directory: Path) -> Path:
    """The weights file open_clip will load from ``directory``; FileNotFoundError if there is none."""
    candidates = [
        p for p in directory.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
    ]
    if not candidates:
        raise FileNotFoundError(
            f"no weights file (*.safetensors, *.bin or *.pth) in the open_clip model directory {directory}. "
            + _DIRECTORY_HELP
        )
    from open_clip import factory

    chosen = factory._find_checkpoint_in_dir(
        directory
    )  # open_clip's own choice, for the provenance
    return Path(chosen) if chosen else sorted(candidates)[0]


def _hub_revision(repo_id: str) -> str | None:
    """The commit of ``repo_id`` whose open_clip config sits in the local Hugging Face cache, if any."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, _CONFIG_NAME)
    except Exception:  # provenance is best effort; never fail a load over it
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None


def _square_side(size, model_id: str) -> int:
    """open_clip stores image sizes as an int or an (height, width) pair; MedVAE's crop is square."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if isinstance(size, Sequence) and len(size) == 2 and size[0] == size[1]:
        return int(size[0])
    raise ValueError(
        f"{model_id} expects images of size {size}; FrozenTeacher supports square inputs only"
    )


def load_open_clip_model(
    model_id: str | os.PathLike = BIOMEDCLIP,
    device: str | torch.device = "cpu",
    force_quick_gelu: bool = False,
):
    """Load a whole open_clip model (weights required) from the hub or a local model directory, as
    :func:`load_open_clip_teacher` describes ``model_id``; returns ``(model, model_id, provenance)``, the
    identifier normalised (``"local-dir:<path>"`` for a plain path) and a sentence saying where the
    weights came from. The one loader behind the stage-2 teacher and chapter 8's pretrained image encoders.
    ``force_quick_gelu`` builds the model with QuickGELU activations, which OpenAI's CLIP weights were
    trained with (open_clip's own registry marks them so)."""
    import open_clip

    model_id = os.fspath(model_id)
    if model_id.startswith(_HF_PREFIX):
        repo_id = model_id[len(_HF_PREFIX) :]
        try:
            model = open_clip.create_model_from_pretrained(
                model_id,
                device=device,
                return_transform=False,
                force_quick_gelu=force_quick_gelu,
            )
        except ImportError as error:  # BiomedCLIP's text tower is a Hugging Face BERT
            raise ImportError(
                f"{model_id} needs the package '{error.name or 'transformers'}' for its text tower "
                "(pip install transformers; Colab has it): " + str(error)
            ) from error
        except RuntimeError as error:
            raise RuntimeError(
                f"could not load {model_id} from the Hugging Face Hub: {error}. Without network access, "
                f"download the repository where there is (huggingface_hub.snapshot_download('{repo_id}')) and "
                "pass its directory, as 'local-dir:/path' or a plain path."
            ) from error
        revision = _hub_revision(repo_id)
        provenance = f"Hugging Face Hub repository {repo_id}" + (
            f" at revision {revision} (from the local Hugging Face cache)"
            if revision
            else ""
        )
    else:
        raw = (
            model_id[len(_LOCAL_PREFIX) :]
            if model_id.startswith(_LOCAL_PREFIX)
            else model_id
        )
        if not raw:
            raise FileNotFoundError(
                f"no directory given in model_id {model_id!r}. " + _DIRECTORY_HELP
            )
        directory = Path(raw).expanduser()
        if not directory.exists():
            raise FileNotFoundError(
                f"open_clip model directory {directory} does not exist (model_id {model_id!r}; hub models "
                f"need the prefix '{_HF_PREFIX}'). " + _DIRECTORY_HELP
            )
        if not directory.is_dir():
            raise FileNotFoundError(
                f"{directory} is a file, not an open_clip model directory. "
                + _DIRECTORY_HELP
            )
        if not (directory / _CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{directory} has no {_CONFIG_NAME}. " + _DIRECTORY_HELP
            )
        weights = _weights_in(directory)
        model_id = f"{_LOCAL_PREFIX}{directory}"
        model = open_clip.create_model_from_pretrained(
            model_id,
            device=device,
            return_transform=False,
            force_quick_gelu=force_quick_gelu,
        )
        provenance = (
            f"open_clip model directory {directory.resolve()}: {_CONFIG_NAME} and weights {weights.name} "
            f"({weights.stat().st_size} bytes)"
        )

    return model, model_id, provenance


def open_clip_preprocessing(
    model: torch.nn.Module, model_id: str
) -> tuple[int, Sequence[float], Sequence[float]]:
    """``(square input side, mean, std)`` from an open_clip model's preprocessing configuration."""
    visual = getattr(model, "visual", model)
    config = getattr(visual, "preprocess_cfg", None) or {}
    size = config.get("size", getattr(visual, "image_size", None))
    if size is None:
        raise ValueError(
            f"{model_id} declares no input image size (model.visual.preprocess_cfg['size'])"
        )
    mean = config.get("mean", getattr(visual, "image_mean", None) or CLIP_MEAN)
    std = config.get("std", getattr(visual, "image_std", None) or CLIP_STD)
    return _square_side(size, model_id), mean, std


def load_open_clip_teacher(
    model_id: str | os.PathLike = BIOMEDCLIP, device: str | torch.device = "cpu"
) -> FrozenTeacher:
    """Load an open_clip model as a :class:`FrozenTeacher`, the way MedVAE loads BiomedCLIP.

    Args:
        model_id: where the model is --

            * ``"hf-hub:org/name"``: a Hugging Face Hub repository (default: BiomedCLIP). Downloads on the
              first call, then reads the Hugging Face cache; meant for the book's full mode on Colab.
            * ``"local-dir:/path"``: an open_clip model directory on disk, holding ``open_clip_config.json``
              and a weights file, as the hub repository does (``huggingface_hub.snapshot_download`` of
              the repository gives one).
            * a plain path to such a directory (``str`` or :class:`~pathlib.Path`); it is read as
              ``"local-dir:<path>"``.

        device: where the teacher's weights go.

    The model is created with ``open_clip.create_model_from_pretrained``, which insists that the weights
    are really loaded (it fails rather than return a randomly initialised model). The input size, mean
    and std are read from the model's preprocessing configuration (``model.visual.preprocess_cfg``), so a
    model with another input size works too; the resize is MedVAE's bicubic one regardless of the
    configuration's interpolation setting. The teacher's ``name`` is the open_clip identifier used
    (``"local-dir:<path>"`` for a plain path) and its ``provenance`` says where the weights came from.

    Note that BiomedCLIP's text tower is a Hugging Face BERT: open_clip builds it too (as in MedVAE),
    which needs the ``transformers`` package and that BERT's configuration from the hub or its cache.

    Raises:
        FileNotFoundError: for a local directory that does not exist, is not a directory, or lacks
            ``open_clip_config.json`` or a weights file.
        RuntimeError: if a hub model cannot be fetched (no network and nothing cached, say).
    """
    model, model_id, provenance = load_open_clip_model(model_id, device)
    size, mean, std = open_clip_preprocessing(model, model_id)
    return FrozenTeacher(
        _OpenClipImageTower(model),
        image_size=size,
        mean=mean,
        std=std,
        name=model_id,
        provenance=provenance,
    )
