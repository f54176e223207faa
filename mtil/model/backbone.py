"""Frozen open_clip backbones: loading by name + pretrained source, freezing, and the package's tiny test configs.

`pretrained` may be an open_clip tag (`openai`), a local checkpoint file, `local-dir:<dir>` (a folder holding
`open_clip_config.json` and weights, as open_clip writes them), or `None` for random initialisation (tests and
the demo's own pre-training). `register_models` makes the package's `mtil-tiny` and `mtil-mid` known to open_clip.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import torch
from torch import nn

from ..errors import MtilError

log = logging.getLogger(__name__)
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TEST_MODELS = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))


def register_models() -> None:
    """Add the package's model configs (MODEL_CONFIG_DIR) to open_clip's registry; idempotent."""
    if not set(TEST_MODELS) <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass
class Backbone:
    """A frozen CLIP with its transforms and tokenizer."""
    model: nn.Module
    preprocess_train: Callable
    preprocess_val: Callable
    tokenizer: Callable
    name: str
    pretrained: str | None


def _classify_pretrained(name: str, pretrained: str | None) -> tuple[str, str | None]:
    """Return (model name for open_clip, pretrained argument), raising MtilError for bad input."""
    if pretrained is None or pretrained == "":
        return name, None
    pretrained = str(pretrained)
    if pretrained.startswith("local-dir:"):
        folder = Path(pretrained[len("local-dir:"):]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise MtilError(f"model.pretrained '{pretrained}': no open_clip_config.json in {folder}; "
                            "point local-dir: at a folder written by open_clip (config + weights)")
        return f"local-dir:{folder}", None
    path = Path(pretrained).expanduser()
    if os.path.isfile(path):   # not Path.is_file: a name the OS refuses (too long) is no file either
        return name, str(path)
    looks_like_path = any(s in pretrained for s in ("/", "\\")) or path.suffix in {".pt", ".pth", ".bin", ".safetensors"}
    if looks_like_path:
        raise MtilError(f"model.pretrained file '{pretrained}' not found; give an existing checkpoint file, "
                        f"an open_clip tag, or null")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise MtilError(f"model.pretrained '{pretrained}' is not an open_clip tag of {name} "
                        f"(tags: {', '.join(tags) or 'none'}) nor an existing file")
    return name, pretrained


def load(name: str, pretrained: str | None = None, device: str | torch.device = "cpu") -> Backbone:
    """Create an open_clip model, load its weights, and freeze it (no grads, eval mode)."""
    register_models()
    if not name.startswith("local-dir:") and name not in open_clip.list_models():
        raise MtilError(f"unknown model '{name}'; use an open_clip model name (open_clip.list_models(), "
                        f"e.g. ViT-B-16) or a test config: {', '.join(TEST_MODELS)}")
    model_name, weights = _classify_pretrained(name, pretrained)
    try:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            model_name, pretrained=weights, device=device, weights_only=False)
    except Exception as e:  # torch / pickle / safetensors raise many types for a file that holds no weights
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise MtilError(f"could not load weights '{pretrained}' for {name}: {type(e).__name__}"
                        f"{': ' + first if first else ''}. Give a checkpoint file of this model (without network, "
                        "download it elsewhere and pass the local file as model.pretrained)") from None
    tokenizer = open_clip.get_tokenizer(model_name)
    freeze(model)
    log.info("loaded %s (pretrained=%s), %.1fM frozen parameters", name, pretrained,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return Backbone(model, preprocess_train, preprocess_val, tokenizer, name, pretrained)


def freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def towers(model: nn.Module) -> dict[str, nn.Module]:
    """The residual-block stacks of each tower: {'image': visual.transformer, 'text': transformer}."""
    found = {}
    visual = getattr(model, "visual", None)
    if visual is not None and hasattr(getattr(visual, "transformer", None), "resblocks"):
        found["image"] = visual.transformer
    if hasattr(getattr(model, "transformer", None), "resblocks"):
        found["text"] = model.transformer
    elif hasattr(getattr(getattr(model, "text", None), "transformer", None), "resblocks"):
        found["text"] = model.text.transformer
    return found
