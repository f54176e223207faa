"""Contrastive pre-training of the demo's tiny CLIP from scratch, the demo's cached assets, zero-shot accuracy.

The offline demo needs a backbone whose zero-shot transfer to the demo tasks is real: `pretrain_clip` trains
`mtil-tiny` (open_clip model, tokenizer and `ClipLoss`; AdamW; timm's cosine schedule with warm-up) on the
image-caption mixture of `mtil.demo.stream.pretrain_mixture`, which covers every demo domain with instances the
task splits never use. `ensure_demo_assets` builds the stream once per seed into a cache directory; the
backbone comes from the package (`mtil/demo/assets/`, written by `scripts/make_demo_backbone.py` with this recipe)
when its recipe stamp matches the config, else it is pre-trained here. The packaged file is fp16 and keeps only
the token-embedding rows of the demo's vocabulary (every other row is zero), a few MB; so every machine starts
from the same backbone and the first run is as fast as a later one.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from timm.scheduler import CosineLRScheduler
from tqdm.auto import tqdm

from ..config import unwrap
from ..data.prepared import is_prepared
from ..data.reference import is_reference
from ..errors import MtilError
from ..model.backbone import register_models
from ..rundir import files
from . import domains as demo
from . import stream

log = logging.getLogger(__name__)

ASSETS_VERSION = 2  # bump when the pre-training recipe or its mixture changes (the packaged backbone's stamp)
DATA_VERSION = 3    # bump when the task stream's images or class names change, so cached streams are rebuilt
PACKAGED = Path(__file__).resolve().parent / "assets" / "demo-backbone.pt"
PACKAGE_FORMAT = 1
MAX_LOGIT_SCALE = math.log(100)
REFERENCE = "Reference"   # the demo's reference set under its data root (method.zscl.reference's default)


# ----------------------------------------------------------------------------------------------- training
@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    if n and n > 0:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _optimizers(model: torch.nn.Module, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
    """AdamW (fused where torch supports it) with weight decay on weight matrices only -- not on biases, norms,
    embeddings or the logit scale -- and SparseAdam for the token embedding (49408 rows of which the captions use a
    few hundred: a dense AdamW step over it costs more than the whole forward-backward on a laptop CPU)."""
    no_decay_names = ("token_embedding", "positional_embedding", "class_embedding", "logit_scale")
    emb = getattr(model, "token_embedding", None)
    sparse = [emb.weight] if isinstance(emb, torch.nn.Embedding) and emb.weight.requires_grad else []
    if sparse:
        emb.sparse = True
    decay, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or any(p is q for q in sparse):
            continue
        (rest if p.ndim < 2 or any(k in name for k in no_decay_names) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    try:
        dense = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    except (RuntimeError, TypeError):  # fused kernels missing for this device / torch build
        dense = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    opts = [dense]
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=lr, betas=(0.9, 0.98), eps=1e-6))
    return opts


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random affine jitter per image (scale 0.9-1.1, shift up to 10%, rotation up to 10 degrees)."""
    n = x.shape[0]
    u = lambda lo, hi: torch.empty(n).uniform_(lo, hi, generator=gen)  # noqa: E731
    scale, angle = u(0.9, 1.1), u(-10, 10) * math.pi / 180
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, u(-0.1, 0.1)], 1), torch.stack([sin, cos, u(-0.1, 0.1)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _to_input(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[n, H, W, 3] uint8 -> normalized float [n, 3, H, W] (what open_clip's val transform gives on 32 px images)."""
    x = images_uint8.permute(0, 3, 1, 2).float().div_(255)
    return (x - mean) / std


def pretrain_clip(images: np.ndarray, captions: Sequence[str], cfg_section: Mapping, seed: int,
                  device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Train `cfg_section.model` (open_clip config, random init) contrastively on image-caption pairs.

    `images`: uint8 [N, H, W, 3] at the model's image size; `captions`: N strings. `cfg_section` is the `demo:`
    config section (keys under `pretrain`). Returns the model's state_dict (CPU tensors), loadable with
    `open_clip.create_model_and_transforms(name, pretrained=<file saved with torch.save>)`.
    """
    p = cfg_section["pretrain"]
    name = cfg_section["model"]
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise MtilError(f"pre-training images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    if len(images) != len(captions) or len(images) < 2:
        raise MtilError(f"pre-training needs as many captions as images (at least 2): "
                        f"{len(images)} images, {len(captions)} captions")
    steps, batch = int(p["steps"]), min(int(p["batch_size"]), len(images))
    register_models()
    with _threads(int(p.get("threads") or 0)), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None, device=device)
        size = tuple(model.visual.image_size) if isinstance(model.visual.image_size, (tuple, list)) \
            else (model.visual.image_size,) * 2
        if tuple(images.shape[1:3]) != size:
            raise MtilError(f"pre-training images are {images.shape[1]}x{images.shape[2]} but {name} "
                            f"expects {size[0]}x{size[1]}")
        pp = open_clip.get_model_preprocess_cfg(model)
        mean = torch.tensor(pp["mean"], device=device).view(1, 3, 1, 1)
        std = torch.tensor(pp["std"], device=device).view(1, 3, 1, 1)
        tokenizer = open_clip.get_tokenizer(name)
        uniq, inverse = np.unique(np.asarray(captions, dtype=object).astype(str), return_inverse=True)
        tokens = tokenizer(list(uniq))[torch.as_tensor(inverse.reshape(-1))]
        data = torch.from_numpy(images)

        model.train()
        opts = _optimizers(model, float(p["lr"]), float(p["weight_decay"]))
        scheds = [CosineLRScheduler(o, t_initial=steps, lr_min=float(p["min_lr"]), warmup_t=int(p["warmup_steps"]),
                                    warmup_lr_init=float(p["lr"]) * 0.01, t_in_epochs=False) for o in opts]
        loss_fn = ClipLoss()
        gen = torch.Generator().manual_seed(seed)
        order, cursor = torch.randperm(len(data), generator=gen), 0
        log.info("pre-training %s from scratch: %d image-caption pairs (%d distinct captions), %d steps x batch %d",
                 name, len(data), len(uniq), steps, batch)
        start, running = time.perf_counter(), None
        bar = tqdm(range(steps), desc="pre-training tiny CLIP", unit="step", leave=False, disable=None)
        for step in bar:
            if cursor + batch > len(order):  # a new epoch: reshuffle
                order, cursor = torch.randperm(len(data), generator=gen), 0
            idx = order[cursor:cursor + batch]
            cursor += batch
            x = data[idx].to(device)
            if p["augment"]:
                x = (_augment(x.permute(0, 3, 1, 2).float(), gen).round_().clamp_(0, 255)
                     .permute(0, 2, 3, 1).to(torch.uint8))
            out = model(_to_input(x, mean, std), tokens[idx].to(device))
            img_f, txt_f, scale = (out["image_features"], out["text_features"], out["logit_scale"]) \
                if isinstance(out, dict) else out[:3]
            loss = loss_fn(img_f, txt_f, scale)
            if not torch.isfinite(loss):
                raise MtilError(f"pre-training diverged at step {step} (loss {loss.item()}); "
                                f"lower demo.pretrain.lr (now {p['lr']})")
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o, sc in zip(opts, scheds):
                o.step()
                sc.step_update(step + 1)
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
            if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
                log.info("pre-training step %d/%d: loss %.3f (smoothed), lr %.2e, logit scale %.1f, %.0f s",
                         step + 1, steps, running, opts[0].param_groups[0]["lr"], model.logit_scale.exp().item(),
                         time.perf_counter() - start)
        bar.close()
        model.eval()
        if hasattr(model, "token_embedding"):
            model.token_embedding.sparse = False
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------- zero-shot
@torch.no_grad()
def zero_shot_accuracy(model: torch.nn.Module, tokenizer, preprocess, dataset, classnames: Sequence[str],
                       templates: Sequence[str], batch_size: int = 256,
                       device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy (percent) of CLIP zero-shot classification: image features against the normalized mean
    text feature of every class over the templates (CLIP's prompt ensemble). `dataset` yields dicts with a
    PIL `image` and an int `label` (e.g. a `datasets.Dataset` split in the prepared format)."""
    was_training = model.training
    model.eval()
    class_feats = []
    for name in classnames:
        f = model.encode_text(tokenizer([t.format(name) for t in templates]).to(device))
        f = F.normalize(f, dim=-1).mean(0)
        class_feats.append(F.normalize(f, dim=0))
    class_feats = torch.stack(class_feats)
    correct = total = 0
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start:start + batch_size]
        x = torch.stack([preprocess(im.convert("RGB")) for im in rows["image"]]).to(device)
        pred = (F.normalize(model.encode_image(x), dim=-1) @ class_feats.T).argmax(-1).cpu()
        correct += int((pred == torch.as_tensor(rows["label"])).sum())
        total += len(pred)
    model.train(was_training)
    if total == 0:
        raise MtilError("zero-shot evaluation got an empty dataset")
    return 100.0 * correct / total


def zero_shot_report(data_root: str | os.PathLike, checkpoint_path: str | os.PathLike, names: Sequence[str],
                     model_name: str = "mtil-tiny", split: str = "test") -> dict[str, dict]:
    """{domain: {'accuracy': %, 'chance': %, 'classes': n}} of a checkpoint on each prepared dataset's `split`,
    with the class names and templates the rest of mtil uses for it (`mtil.data.prepared.load_info`)."""
    from ..data.prepared import load_info, load_split

    register_models()
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(checkpoint_path))
    tokenizer = open_clip.get_tokenizer(model_name)
    report = {}
    for name in names:
        info = load_info(data_root, name, "clip")   # the demo's name set (configs/demo.yaml)
        acc = zero_shot_accuracy(model, tokenizer, preprocess, load_split(data_root, name, split),
                                 info.classnames, info.templates)
        chance = 100.0 / len(info.classnames)
        report[name] = {"accuracy": acc, "chance": chance, "classes": len(info.classnames)}
        log.info("zero-shot %s: %.1f%% (chance %.1f%%)", name, acc, chance)
    return report


# ----------------------------------------------------------------------------------------------- cached assets
def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def mixture_sizes(cfg: Mapping) -> dict[str, int]:
    """Images per domain in the pre-training mixture: pretrain.per_domain x pretrain.domain_weights[domain]."""
    weights = cfg["pretrain"].get("domain_weights") or {}
    return {d: max(1, round(int(cfg["pretrain"]["per_domain"]) * float(weights.get(d, 1.0))))
            for d in cfg["pretrain"]["domains"]}


def _data_key(cfg: Mapping, seed: int) -> dict:
    return {"version": DATA_VERSION, "seed": int(seed), "domains": list(cfg["domains"]),
            "train_per_class": int(cfg["train_per_class"]), "test_per_class": int(cfg["test_per_class"])}


def _pretrain_key(cfg: Mapping, seed: int) -> dict:
    return {"version": ASSETS_VERSION, "seed": int(seed), "model": cfg["model"], "pretrain": unwrap(dict(cfg["pretrain"]))}


def demo_vocabulary(tokenizer) -> torch.Tensor:
    """Token ids that the demo can produce: every demo domain's prompts and pre-training captions, filled with
    every class name, colour name and letter case (sorted, unique)."""
    fills = [{"color": c, "bg": c, "case": case} for c in demo.PALETTE for case in ("capital", "lowercase")]
    texts = []
    for dom in demo.DOMAINS.values():
        for cls in dom.classnames:
            texts += [t.format(cls) for t in dom.templates]
            texts += [t.format(cls, **f) for t in dom.captions for f in fills]
    return torch.unique(tokenizer(sorted(set(texts))))


def export_packaged(state: Mapping[str, torch.Tensor], key: Mapping, path: str | os.PathLike = PACKAGED) -> Path:
    """Write a pre-trained demo backbone as the packaged file: fp16 floats, token-embedding rows of
    `demo_vocabulary` only, and the recipe stamp `key` (see `_pretrain_key`)."""
    register_models()
    rows = demo_vocabulary(open_clip.get_tokenizer(key["model"]))
    packed = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    packed["token_embedding.weight"] = packed["token_embedding.weight"][rows].clone()
    blob = {"format": PACKAGE_FORMAT, "key": dict(key), "vocab_rows": rows,
            "vocab_size": int(state["token_embedding.weight"].shape[0]), "state": packed}
    return files.atomic_write(path, lambda f: torch.save(blob, f), "wb")


def load_packaged(key: Mapping, path: str | os.PathLike = PACKAGED) -> dict[str, torch.Tensor] | None:
    """The packaged backbone as an fp32 state dict if it was pre-trained with recipe `key`, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged package file: say so, pre-train instead
        log.warning("packaged demo backbone %s unreadable (%s); pre-training instead", path, type(e).__name__)
        return None
    if blob.get("format") != PACKAGE_FORMAT or blob.get("key") != json.loads(json.dumps(dict(key))):
        return None
    state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()}
    rows = state["token_embedding.weight"]
    full = torch.zeros(blob["vocab_size"], rows.shape[1])
    full[blob["vocab_rows"]] = rows
    state["token_embedding.weight"] = full
    return state


def ensure_demo_assets(cache_dir: str | os.PathLike, cfg_section: Mapping | None, seed: int,
                       device: str | torch.device = "cpu") -> tuple[Path, Path]:
    """Build (once) and return the demo's data root and pre-trained checkpoint under `cache_dir/demo-<seed>/`.

    Layout: `data/<Domain>/` (prepared format) + `data.json`, `data/Reference/` (the pre-training mixture as the
    distillation baselines' reference set) + `reference.json`, `<model>-pretrained.pt` + `pretrain.json`; the
    JSON stamps record what the assets were built from, and a stamp that does not match `cfg_section` rebuilds
    that asset. Every file and folder is written under a temporary name and renamed into place.
    """
    cfg = demo.default_section() if cfg_section is None else cfg_section
    base = Path(cache_dir).expanduser() / f"demo-{int(seed)}"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MtilError(f"cannot create the demo cache {base} ({e.strerror}); set a writable cache directory") from None
    data_root, data_stamp, ref_stamp = base / "data", base / "data.json", base / "reference.json"
    ckpt, ckpt_stamp = base / f"{cfg['model']}-pretrained.pt", base / "pretrain.json"

    data_key = _data_key(cfg, seed)
    if _read_json(data_stamp) == data_key and all(is_prepared(data_root, n) for n in cfg["domains"]):
        log.info("demo data: reusing %s", data_root)
    else:
        t0 = time.perf_counter()
        log.info("demo data: building %d domains into %s", len(cfg["domains"]), data_root)
        tmp = base / f".data.tmp-{uuid.uuid4().hex[:8]}"
        stream.build_stream(tmp, seed, cfg)
        if data_root.exists():
            old = base / f".data.old-{uuid.uuid4().hex[:8]}"
            os.replace(data_root, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, data_root)
        files.write_text(data_stamp, json.dumps(data_key, indent=1))
        log.info("demo data built in %.1f s", time.perf_counter() - t0)

    ref_key = {"version": ASSETS_VERSION, "seed": int(seed), "name": REFERENCE, "mixture": mixture_sizes(cfg),
               "captions_per_domain": cfg["pretrain"].get("captions_per_domain")}
    if _read_json(ref_stamp) == ref_key and is_reference(data_root, REFERENCE):
        log.info("demo reference set: reusing %s", data_root / REFERENCE)
    else:
        t0 = time.perf_counter()
        meta = stream.build_reference(data_root, REFERENCE, seed, mixture_sizes(cfg), cfg["pretrain"]["domains"],
                                      cfg["pretrain"].get("captions_per_domain"))
        files.write_text(ref_stamp, json.dumps(ref_key, indent=1))
        log.info("demo reference set (%d images, %d sentences) built in %.1f s", meta["images"], meta["captions"],
                 time.perf_counter() - t0)

    pre_key = _pretrain_key(cfg, seed)
    packaged = load_packaged(pre_key)
    stamp = {**pre_key, "source": "package" if packaged is not None else "pre-trained here"}
    if _read_json(ckpt_stamp) == stamp and ckpt.is_file():
        log.info("demo backbone: reusing %s", ckpt)
    elif packaged is not None:
        files.atomic_write(ckpt, lambda f: torch.save(packaged, f), "wb")
        files.write_text(ckpt_stamp, json.dumps(stamp, indent=1))
        log.info("demo backbone: the packaged one (%s) -> %s", PACKAGED.name, ckpt)
    else:
        t0 = time.perf_counter()
        log.info("demo backbone: no packaged backbone for this recipe (demo.pretrain / demo.model / demo.seed "
                 "changed); pre-training one")
        images, captions = stream.pretrain_mixture(seed, mixture_sizes(cfg), cfg["pretrain"]["domains"],
                                                 cfg["pretrain"].get("captions_per_domain"))
        state = pretrain_clip(images, captions, cfg, seed, device=device)
        files.atomic_write(ckpt, lambda f: torch.save(state, f), "wb")
        files.write_text(ckpt_stamp, json.dumps(stamp, indent=1))
        log.info("demo backbone pre-trained in %.1f s -> %s", time.perf_counter() - t0, ckpt)
    return data_root, ckpt


def cache_dir() -> Path:
    return Path(os.environ.get("MTIL_CACHE", Path.home() / ".cache" / "mtil")).expanduser()


def resolve_demo_assets(cfg) -> None:
    """For a config with `data.demo: true`, build (once, into `cache_dir()`) the demo stream and backbone and point
    `data.root` and `model.pretrained` at them; other configs are left as they are. Runs before a `Run` exists (it
    may pre-train for minutes with demo.pretrain.threads, before the run's own `threads` applies)."""
    if not cfg.data.demo:
        return
    root, weights = ensure_demo_assets(cache_dir(), cfg.demo, cfg.demo.seed)
    cfg.data.root = str(root)
    cfg.model.pretrained = str(weights)
