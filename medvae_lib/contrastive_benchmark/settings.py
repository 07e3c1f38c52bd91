"""The chapter's settings and fixed vocabulary: the run modes (``MODES``), the eight
methods, the zero-shot and external tasks, the task groups of the tables, the text
encoder's identity, and :class:`BenchmarkError`."""

from __future__ import annotations

from typing import NamedTuple

from medvae_lib.teachers import BIOMEDCLIP

# General-domain CLIP's ViT-B/16 image tower (OpenAI's weights, as open_clip's "ViT-B-16"/"openai" entry
# points to them) and BiomedCLIP, both through open_clip's hub loader (chapter 3's loader).
GENERAL_CLIP = "hf-hub:timm/vit_base_patch16_clip_224.openai"


# The official sha256 of sentence-transformers/all-MiniLM-L6-v2's model.safetensors (Hugging Face hub).
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)


MODES = {
    "ci": {
        "image_size": 48,  # pixels per side after masking the burned-in text and padding to a square
        "widths": (
            8,
            16,
            32,
            64,
        ),  # channels of the four stride-2 stages of the image encoder (3x3 regions)
        "embed_dim": 64,
        "batch_size": 64,
        "steps": 40,
        "lr": 2e-3,
        "weight_decay": 0.1,
        "max_tokens": 32,
        "seeds": (
            0,
            1,
            2,
        ),  # three training runs: an interval needs the seed-to-seed variance
        "text_init": "pretrained",
        "freeze_image_stages": 0,
        "mask_fraction": 0.08,
        "probe_c": 1.0,
        "n_bootstrap": 1000,
        "pneumonia_train": 600,  # PneumoniaMNIST images for the linear probe's training (class-balanced)
        "breast_train": None,  # BreastMNIST: all 546 training images (None: the whole training split)
        "device": "auto",  # the GPU when there is one
        "amp": "auto",  # float16 autocast on a GPU (training.amp_dtype); "off" for float32
        "image_init": "scratch",  # or an open_clip id: GENERAL_CLIP, teachers.BIOMEDCLIP, "local-dir:..."
        "image_inits": (),  # further image initialisations compared with CLIP (full mode: question i, image side)
        "pretrained_freeze_blocks": 6,  # a pretrained tower's patch embedding and first blocks stay frozen
        "extra_train_sets": (),  # full mode: the paper's public pair sets added to the training pairs
    },
    "full": {
        "image_size": 128,
        "widths": (32, 64, 128, 256),
        "embed_dim": 128,
        "batch_size": 128,
        "steps": 3000,
        "lr": 1e-3,
        "weight_decay": 0.1,
        "max_tokens": 64,
        "seeds": (0, 1, 2),
        "text_init": "pretrained",
        "freeze_image_stages": 0,
        "mask_fraction": 0.08,
        "probe_c": 1.0,
        "n_bootstrap": 2000,
        "pneumonia_train": 2428,
        "breast_train": None,
        "device": "auto",
        "amp": "auto",
        "image_init": "scratch",
        # question (i) on the image side, as the paper asks it: CLIP with a general-domain CLIP image tower
        # and with BiomedCLIP's, partially frozen, against the same objective from scratch
        "image_inits": (GENERAL_CLIP, BIOMEDCLIP),
        "pretrained_freeze_blocks": 6,  # of 12 ViT-B/16 blocks, with the patch embedding
        "extra_train_sets": ("pmc_oa", "roco"),
        "extra_max_pairs": 20000,  # per set, drawn once (seed 0); images and token states are kept in memory
        "extra_root": "~/.cache/medvae_lib/pairs",
        "roco_limit": 5000,  # ROCO images fetched (one PMC article package each, several MB); None for all
    },
}


# Which research question of Roy et al. each method speaks to, and a one-line description.
METHODS = {
    "clip": (
        "baseline",
        "symmetric InfoNCE with a learnable logit scale (Radford et al., 2021)",
    ),
    "siglip": (
        "baseline",
        "pairwise sigmoid loss with learnable temperature and bias (Zhai et al., 2023)",
    ),
    "cyclip": (
        "baseline",
        "CLIP plus in-modal and cross-modal cyclic consistency (Goel et al., 2022)",
    ),
    "dcl": (
        "baseline",
        "decoupled contrastive loss: positive removed from the denominator (Yeh et al., 2022)",
    ),
    "slip": (
        "ii",
        "CLIP plus image-image SimCLR on two augmented views (Mu et al., 2022)",
    ),
    "clip_textssl": (
        "ii",
        "CLIP plus text-text NT-Xent on two token-dropout views (SimCSE/DeCLIP-style)",
    ),
    "filip": (
        "iii",
        "CLIP plus FILIP's token-wise late-interaction loss (Yao et al., 2022)",
    ),
    "gloria": (
        "iii",
        "CLIP plus GLoRIA's word-region attention loss (Huang et al., 2021)",
    ),
}


# Zero-shot tasks on MedPix: column, {class label in the data: class name in the prompts}, templates.
ZERO_SHOT_TASKS = {
    "scan": (
        "scan_type",
        {"CT": "computed tomography (CT)", "MR": "magnetic resonance imaging (MRI)"},
        (
            "a {} image",
            "{} scan of the patient",
            "this is a {} image",
            "radiology image: {}",
        ),
    ),
    "region": (
        "location_category",
        {
            "Head": "head and brain",
            "Spine and Muscles": "spine and muscles",
            "Thorax": "thorax and chest",
            "Abdomen": "abdomen",
            "Reproductive and Urinary System": "pelvis, reproductive and urinary system",
        },
        (
            "an image of the {}",
            "a CT or MR image of the {}",
            "the {} is shown",
            "scan of the {}",
        ),
    ),
    "plane": (
        "plane",
        {"Axial": "axial", "Coronal": "coronal", "Sagittal": "sagittal"},
        ("an {} image", "{} view", "{} slice of the scan", "a {} plane image"),
    ),
}


class ExternalTask(NamedTuple):
    """A zero-shot and probe task on a modality no method trains on (a MedMNIST set, through its manifest)."""

    manifest: str
    key: str  # the manifest's file key
    train_setting: str  # the setting that holds the probe's training size (None: the whole training split)
    classes: dict  # label -> class name in the prompts
    templates: tuple


EXTERNAL_TASKS = {
    "pneumonia": ExternalTask(
        "pneumoniamnist",
        "ci",
        "pneumonia_train",
        {0: "a normal chest x-ray", 1: "a chest x-ray with pneumonia"},
        ("{}", "this image shows {}", "radiograph: {}"),
    ),
    "breast": ExternalTask(
        "breastmnist",
        "64",
        "breast_train",
        {
            0: "a breast ultrasound image of a malignant tumour",
            1: "a breast ultrasound image of normal or benign tissue",
        },
        ("{}", "this image shows {}", "ultrasound: {}"),
    ),
}


class BenchmarkError(ValueError):
    """Bad input to the benchmark: an unknown method, a missing image, an empty caption, a leaky split."""


TASK_GROUPS = {
    "zero-shot": [
        "zero_shot.scan",
        "zero_shot.region",
        "zero_shot.plane",
        "zero_shot.pneumonia",
        "zero_shot.breast",
    ],
    "probe": [
        "probe.scan",
        "probe.region",
        "probe.plane",
        "probe.pneumonia",
        "probe.breast",
    ],
    "retrieval": ["i2t.r1", "i2t.r5", "i2t.r10", "t2i.r1", "t2i.r5", "t2i.r10"],
    "vqa": ["vqa.closed", "vqa.open"],
}
