"""Frozen open_clip backbones: loading by name + pretrained source, freezing, and the package's tiny test configs.

`pretrained` may be an open_clip tag (`openai`), a local checkpoint file, `local-dir:<dir>` (a folder holding
`open_clip_config.json` and weights, as open_clip writes them), or `None` for random initialisation (tests and
the demo's own pre-training). `register_models` makes the package's `mtil-tiny` and `mtil-mid` known to open_clip.

The activation follows the weights (`model.activation: auto`, `activation_for`). OpenAI's CLIP weights were trained
with QuickGELU (x * sigmoid(1.702 x)), and MoE-Adapters and ZSCL run OpenAI's own model code, but open_clip 3.x builds
`ViT-B-16` with nn.GELU even for the `openai` tag (it only warns). So QuickGELU is forced for a tag whose pretrained
config says so (every `openai` tag), for OpenAI's original TorchScript archive and for a file whose sha256 is an
OpenAI release's (the hash in its download address). A plain state dict for a model whose OpenAI weights need
QuickGELU cannot be told apart from GELU-trained weights (LAION, DataComp) and is refused until `model.activation`
says which. The built model is checked: the activation it really has is the one recorded in provenance.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import zipfile
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
    activation: str   # what the built model's MLPs compute: quick_gelu | gelu | other


ACTIVATIONS = ("quick_gelu", "gelu")


@functools.cache
def _openai_release_hashes() -> dict[str, str]:
    """sha256 -> model name of OpenAI's released CLIP archives (the hash is the folder of each download address)."""
    out = {}
    for name in open_clip.list_models():
        if "openai" not in open_clip.list_pretrained_tags_by_model(name):
            continue
        parts = (open_clip.get_pretrained_cfg(name, "openai").get("url") or "").rstrip("/").split("/")
        if len(parts) >= 2 and len(parts[-2]) == 64:
            out[parts[-2]] = name
    return out


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (OpenAI's release format): a zip whose entries include compiled code."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _openai_needs_quick_gelu(name: str) -> bool:
    if "openai" not in open_clip.list_pretrained_tags_by_model(name):
        return False
    return bool(open_clip.get_pretrained_cfg(name, "openai").get("quick_gelu", True))


def activation_for(name: str, pretrained: str | None, setting: str = "auto") -> str:
    """The activation the weights need: `quick_gelu` or `gelu` (see the module docstring). `setting` is
    `model.activation`; an explicit value wins, except against a model config that fixes QuickGELU."""
    register_models()
    if name.startswith("local-dir:") or (pretrained or "").startswith("local-dir:"):
        folder = Path((pretrained if (pretrained or "").startswith("local-dir:") else name)[len("local-dir:"):])
        try:
            own = json.loads((folder.expanduser() / "open_clip_config.json").read_text()).get("model_cfg", {})
        except (OSError, ValueError):
            own = {}
    else:
        own = open_clip.get_model_config(name) or {}
    built_in = "quick_gelu" if own.get("quick_gelu") else "gelu"
    if setting != "auto":
        if built_in == "quick_gelu" and setting == "gelu":
            raise MtilError(f"model.activation 'gelu' contradicts model {name}, whose config fixes QuickGELU; use the "
                            f"model without '-quickgelu' or model.activation: auto")
        return setting
    if built_in == "quick_gelu" or pretrained in (None, "") or str(pretrained).startswith("local-dir:"):
        return built_in
    path = Path(str(pretrained)).expanduser()
    if not os.path.isfile(path):   # an open_clip tag (checked by _classify_pretrained)
        tag_cfg = open_clip.get_pretrained_cfg(name, str(pretrained)) or {}
        return "quick_gelu" if tag_cfg.get("quick_gelu") or str(pretrained) == "openai" else "gelu"
    if _is_torchscript(path):
        return "quick_gelu"
    from ..provenance import file_sha256
    if file_sha256(path) in _openai_release_hashes():
        return "quick_gelu"
    if _openai_needs_quick_gelu(name):
        raise MtilError(f"model.pretrained '{pretrained}' is a plain state dict for {name}, whose OpenAI weights need "
                        f"QuickGELU and whose other weights (LAION, DataComp) GELU, and the file does not say which: "
                        f"set model.activation: quick_gelu (or model.name: {name}-quickgelu) for OpenAI's weights, "
                        f"model.activation: gelu for the others")
    return built_in


def built_activation(model: nn.Module) -> str:
    """What the model's MLP activations really are: quick_gelu, gelu, or other (none of the two found)."""
    kinds = {type(m).__name__ for m in model.modules()}
    if "QuickGELU" in kinds:
        return "quick_gelu"
    return "gelu" if "GELU" in kinds else "other"


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


def check_name(name: str) -> None:
    register_models()
    if not name.startswith("local-dir:") and name not in open_clip.list_models():
        raise MtilError(f"unknown model '{name}'; use an open_clip model name (open_clip.list_models(), "
                        f"e.g. ViT-B-16) or a test config: {', '.join(TEST_MODELS)}")


def load(name: str, pretrained: str | None = None, device: str | torch.device = "cpu",
         activation: str = "auto") -> Backbone:
    """Create an open_clip model with the activation its weights need, load the weights, and freeze it (no grads,
    eval mode)."""
    check_name(name)
    model_name, weights = _classify_pretrained(name, pretrained)
    wanted = activation_for(name, pretrained, activation)
    try:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            model_name, pretrained=weights, device=device, weights_only=False,
            force_quick_gelu=wanted == "quick_gelu")
    except Exception as e:  # torch / pickle / safetensors raise many types for a file that holds no weights
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise MtilError(f"could not load weights '{pretrained}' for {name}: {type(e).__name__}"
                        f"{': ' + first if first else ''}. Give a checkpoint file of this model (without network, "
                        "download it elsewhere and pass the local file as model.pretrained)") from None
    built = built_activation(model)
    if built != wanted and built != "other":
        raise MtilError(f"open_clip {open_clip.__version__} built {name} with {built} where its weights need {wanted}; "
                        "install an open_clip_torch version that setup.cfg allows")
    tokenizer = open_clip.get_tokenizer(model_name)
    freeze(model)
    log.info("loaded %s (pretrained=%s, %s), %.1fM frozen parameters", name, pretrained, built,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return Backbone(model, preprocess_train, preprocess_val, tokenizer, name, pretrained, built)


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
