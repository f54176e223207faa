"""The plasticity study runner: for every (method, seed) train through the chunked stream, expanding the MLP at
each chunk start, then write results.json, table.md and the training-accuracy figure into the output directory.

Resumability: each (method, seed) result is written atomically to `OUT/runs/<method>-seed<seed>.json` as soon as
it finishes, together with a fingerprint of the config. A rerun into the same directory skips finished runs
whose fingerprint matches (skip-finished is the default; there is no `--resume` flag) and refuses, with one
line, to mix results of a different config. The summary files cover the methods and seeds of the current call.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import config as mtil_config
from ..errors import MtilError
from ..metrics import mean_std
from ..rundir import files
from ..stats import interval
from . import methods as registry
from .models import ConvTrunk, PlasticityNet, n_params
from .stream import ChunkStream, noisy_labels, redraw_labels

log = logging.getLogger(__name__)

SCHEMA = "plasticity/base.yaml"
DEFAULT_CONFIG = "plasticity/demo.yaml"


# ---------------------------------------------------------------------------------------------------- config
def load_config(path=None, overrides=()) -> mtil_config.Config:
    cfg = mtil_config.load(path or DEFAULT_CONFIG, overrides, schema=SCHEMA)
    registry.check(list(cfg.study.methods))
    if cfg.train.threads is not None and cfg.train.threads < 1:
        raise MtilError(f"train.threads must be a positive integer or null, got {cfg.train.threads}")
    if cfg.study.steps_per_chunk < 1 or cfg.train.batch_size < 1 or cfg.train.log_every < 1:
        raise MtilError("study.steps_per_chunk, train.batch_size and train.log_every must be positive")
    if len(cfg.model.cnn_channels) != 3:
        raise MtilError(f"model.cnn_channels must list 3 conv widths, got {cfg.model.cnn_channels}")
    if cfg.study.stream == "pool" and (cfg.data.label_noise_draw != "per_chunk" or cfg.data.label_noise <= 0):
        raise MtilError("study.stream=pool trains every chunk on the same examples, so only re-drawn labels make the "
                        "chunks differ; set data.label_noise_draw=per_chunk and data.label_noise above 0")
    return cfg


def fingerprint(cfg) -> str:
    """Hash of everything that changes one (method, seed) result (not the method / seed lists, not plotting)."""
    data = mtil_config.unwrap(cfg)
    data["study"] = {k: v for k, v in data["study"].items() if k not in ("methods", "seeds")}
    data.pop("plot", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- models
def build_model(name: str, cfg, image_size: int | None = None) -> PlasticityNet:
    """CNN trunk + method `name`; `image_size` (the data's) is needed when data.image_size is null."""
    size = cfg.data.image_size or image_size
    if size is None:
        raise MtilError("data.image_size is null, so the MLP input width is unknown before loading the data; "
                        "set data.image_size")
    cnn = ConvTrunk(cfg.data.channels, list(cfg.model.cnn_channels), cfg.model.pool, size, cfg.model.cnn)
    return PlasticityNet(cnn, registry.build(name, cnn.out_dim, cfg.data.num_classes, cfg.methods, cfg.study.chunks))


def param_rows(cfg, methods: list[str]) -> list[dict]:
    """Active / stored / trainable MLP parameters at chunk 1 and at the last chunk, built without training."""
    torch.manual_seed(0)
    rows = []
    for name in ["no_expansion"] + [m for m in methods if m != "no_expansion"]:
        model = build_model(name, cfg)
        first = model.mlp.active_params()
        for _ in range(cfg.study.chunks - 1):
            model.mlp.grow()
        rows.append({"method": name, "label": registry.label(name), "active_first": first,
                     "active_final": model.mlp.active_params(), "stored_final": n_params(model.mlp),
                     "trainable_final": n_params(model.mlp, trainable_only=True), "cnn": n_params(model.cnn),
                     "mlp_in": model.cnn.out_dim, "expert_widths": getattr(model.mlp, "expert_widths", list)()})
    ref = rows[0]["active_final"]
    for r in rows:
        r["ratio"] = r["active_final"] / ref
    return [r for r in rows if r["method"] in methods]


def params_markdown(rows: list[dict], chunks: int) -> str:
    lines = [f"| method | MLP active @ chunk 1 | MLP active @ chunk {chunks} | vs No Expansion | "
             f"MLP stored @ chunk {chunks} | MLP trainable @ chunk {chunks} | expert width (layer 1 / 2 / 3) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        widths = " / ".join(map(str, r["expert_widths"])) or "–"
        lines.append(f"| {r['label']} | {r['active_first']:,} | {r['active_final']:,} | {r['ratio']:.3f} | "
                     f"{r['stored_final']:,} | {r['trainable_final']:,} | {widths} |")
    if rows:
        lines.append(f"\nShared CNN trunk: {rows[0]['cnn']:,} parameters (trained by every method, never expanded); "
                     f"MLP input width {rows[0]['mlp_in']:,}. Active = the reference's count_active_params; "
                     f"stored includes experts / widths allocated up front but not yet used; expert width = bottleneck units "
                     f"of one DynamicMoE expert, h_b = int(h_in (h_out - N) / (h_in + h_out) / N), N = chunks x g.")
    return "\n".join(lines)


def make_optimizer(model: torch.nn.Module, tcfg, old: torch.optim.Optimizer | None = None):
    """An optimizer over all the model's parameters, frozen ones included, as the reference builds it at every
    chunk start. A parameter steps only when it holds a gradient: experts / columns not yet used never get one;
    frozen ones keep their last one under train.gradients=scaler (see `update`). With
    train.keep_optimizer_state, parameters keep the state they had in `old`."""
    params = list(model.parameters())
    if tcfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay, foreach=True)
    elif tcfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay, foreach=True)
    elif tcfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay,
                              foreach=True)
    else:
        raise MtilError(f"train.optimizer must be adamw, adam or sgd, got '{tcfg.optimizer}'")
    if old is not None and tcfg.keep_optimizer_state:
        for p in params:
            if p in old.state:
                opt.state[p] = old.state[p]
    return opt


def make_scaler(tcfg, device: torch.device) -> torch.amp.GradScaler | None:
    """The reference's GradScaler, built afresh at every chunk start (None with train.gradients=fresh)."""
    if tcfg.gradients == "fresh":
        return None
    s = tcfg.scaler
    return torch.amp.GradScaler(device.type, init_scale=s.init_scale, growth_factor=s.growth_factor,
                                backoff_factor=s.backoff_factor, growth_interval=s.growth_interval)


def update(model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
           loss: torch.Tensor, clip: float | None) -> None:
    """One training update. With a scaler, the reference trainer's step: gradients are never cleared; the scaled
    loss is backpropagated onto them, `unscale_` divides every gradient the optimizer holds (yesterday's included)
    by the scale, the global norm is clipped, the step is skipped on an inf / nan and the scale updated. Without
    one, gradients are set to None first (fresh gradients; frozen parameters hold none and never move)."""
    if scaler is None:
        model.zero_grad(set_to_none=True)
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)
        scaler.update()


def warmup_lr(tcfg, step_in_chunk: int, steps_per_chunk: int) -> float:
    """The reference schedule: lr * i / W for the first W = int(warmup_ratio * steps) steps of a chunk, then lr."""
    warm = int(tcfg.warmup_ratio * steps_per_chunk)
    return tcfg.lr * step_in_chunk / warm if step_in_chunk < warm else tcfg.lr


def augment(images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per image: a random size x size crop of the zero-padded image (torchvision RandomCrop(size, padding=pad))
    and a horizontal flip with p = 0.5. `images` is uint8 [B, C, S, S]; so is the result."""
    b, _, h, w = images.shape
    if pad:
        padded = F.pad(images, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator).to(images.device)
        ox = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator).to(images.device)
        rows = (oy + torch.arange(h, device=images.device))[:, None, :, None]   # [B, 1, H, 1]
        cols = (ox + torch.arange(w, device=images.device))[:, None, None, :]   # [B, 1, 1, W]
        batch = torch.arange(b, device=images.device)[:, None, None, None]
        chan = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        images = padded[batch, chan, rows, cols]
    if flip:
        do = (torch.rand(b, generator=generator) < 0.5).to(images.device)[:, None, None, None]
        images = torch.where(do, images.flip(-1), images)
    return images


# ---------------------------------------------------------------------------------------------------- one run
@dataclass
class Data:
    images: torch.Tensor  # uint8 [N, C, S, S] on the training device
    labels: torch.Tensor  # int64 [N] (true labels; noise is applied per seed)
    mean: torch.Tensor    # [1, C, 1, 1]
    std: torch.Tensor


def prepare_data(cfg, device: torch.device) -> Data:
    from .data import load_images

    images, labels = load_images(cfg.data)
    c = images.shape[1]
    total, sq, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for part in images.split(8192):
        f = part.double()
        total += f.sum((0, 2, 3))
        sq += (f * f).sum((0, 2, 3))
        n += f[:, 0].numel()
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(1e-12).sqrt()
    as4d = lambda t: t.float().view(1, c, 1, 1).to(device)  # noqa: E731
    return Data(images.to(device), labels.to(device), as4d(mean), as4d(std.clamp_min(1.0)))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MtilError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
    return torch.device(name)


def gap_at(dcfg, chunk: int) -> bool:
    """Whether the plasticity gap (a fresh copy trained beside the model) is measured at `chunk` (1-based)."""
    return dcfg.gap_every > 0 and chunk % dcfg.gap_every == 0


@torch.no_grad()
def _evaluate(model, data: Data, labels: torch.Tensor, idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    correct = []
    for part in idx.split(batch_size):
        x = (data.images[part].float() - data.mean) / data.std
        correct.append(model(x).argmax(1) == labels[part])
    model.train()
    return torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)


class Learner:
    """A model with its chunk's optimizer and scaler: the continued model, or a fresh copy for the plasticity gap."""

    def __init__(self, model: PlasticityNet, tcfg, device: torch.device, old=None):
        self.model, self.tcfg = model, tcfg
        self.opt = make_optimizer(model, tcfg, old=old)  # a fresh one per chunk, as the reference
        self.scaler = make_scaler(tcfg, device)
        self.amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=tcfg.amp and device.type == "cuda")

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on (x, y); returns the detached logits and task loss."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        with self.amp:
            logits = self.model(x).float()
            loss = F.cross_entropy(logits, y)
            extra = self.model.mlp.extra_loss()
        update(self.model, self.opt, self.scaler, loss if extra is None else loss + extra, self.tcfg.clip_grad_norm)
        return logits.detach(), loss.detach()


def fresh_copy(cfg, name: str, seed: int, chunk: int, image_size: int, device: torch.device) -> PlasticityNet:
    """A freshly initialised copy of method `name`'s architecture at chunk `chunk` (grown chunk - 1 times, frozen
    where the method freezes), from its own seed; the global RNG is left as it was. The reset control's model at
    chunk c >= 2 is No Expansion's fresh copy at chunk c, weight for weight."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(np.random.default_rng([seed, chunk, 3]).integers(2 ** 62))
        model = build_model(name, cfg, image_size)
        for _ in range(chunk - 1):
            model.mlp.grow()
    return model.to(device)


def run_one(cfg, name: str, seed: int, data: Data) -> dict:
    """Train one method with one seed through every chunk; return its record (JSON-serialisable)."""
    from .diagnostics import probe

    device = data.images.device
    torch.manual_seed(seed)
    np.random.seed(seed)
    dcfg = cfg.diagnostics
    stream = ChunkStream(len(data.labels), cfg.study.chunks, seed, cfg.data.max_examples, dcfg.probe_size,
                         pool=cfg.study.stream == "pool")
    per_chunk = cfg.data.label_noise_draw == "per_chunk"
    if per_chunk:
        noise_rng = random.Random(f"{seed}-label-noise")
    else:
        labels = noisy_labels(data.labels.cpu(), cfg.data.label_noise, cfg.data.num_classes, seed).to(device)
    probe_x = (data.images[stream.probe.to(device)].float() - data.mean) / data.std
    sampler = torch.Generator().manual_seed(seed + 7919)
    eval_rng = np.random.default_rng([seed, 2])
    size = data.images.shape[-1]
    model = build_model(name, cfg, size).to(device)
    tcfg = cfg.train
    steps, bs, every = cfg.study.steps_per_chunk, tcfg.batch_size, tcfg.log_every
    record = {"method": name, "label": registry.label(name), "seed": seed, "steps": [], "train_acc": [],
              "train_loss": [], "chunks": []}
    from tqdm.auto import tqdm

    bar = tqdm(total=steps * cfg.study.chunks, desc=f"{name} seed {seed}", unit="step", leave=False,
               disable=None if log.isEnabledFor(logging.INFO) else True)
    opt, step, start, cpu_start = None, 0, time.time(), time.process_time()
    for c in range(1, cfg.study.chunks + 1):
        if per_chunk:  # this chunk's labels of every example trained on, retained ones included
            labels = redraw_labels(data.labels.cpu(), stream.seen(c), cfg.data.label_noise, cfg.data.num_classes,
                                   noise_rng).to(device)
        if c > 1 and model.mlp.reinit:
            model = fresh_copy(cfg, name, seed, c, size, device)
        elif c > 1:
            model.mlp.grow()
            model.mlp.to(device)
        learner = Learner(model, tcfg, device, old=opt)
        opt = learner.opt
        fresh = Learner(fresh_copy(cfg, name, seed, c, size, device), tcfg, device) if gap_at(dcfg, c) else None
        batches = stream.batches(c, bs, sampler)
        acc_sum = torch.zeros((), device=device)
        loss_sum = torch.zeros((), device=device)
        seen_in_window = 0
        for i in range(steps):
            lr = warmup_lr(tcfg, i, steps)
            idx = next(batches).to(device)
            images = data.images[idx]
            if tcfg.crop_pad or tcfg.hflip:
                images = augment(images, tcfg.crop_pad, tcfg.hflip, sampler)
            x = (images.float() - data.mean) / data.std
            y = labels[idx]
            logits, loss = learner.step(x, y, lr)
            if fresh is not None:  # the same batch, the same schedule
                fresh.step(x, y, lr)
            step += 1
            acc_sum += (logits.argmax(1) == y).sum()
            loss_sum += loss * len(y)
            seen_in_window += len(y)
            if step % every == 0 or i == steps - 1:
                record["steps"].append(step)
                record["train_acc"].append(round(acc_sum.item() / seen_in_window, 6))
                record["train_loss"].append(round(loss_sum.item() / seen_in_window, 6))
                acc_sum.zero_()
                loss_sum.zero_()
                seen_in_window = 0
            bar.update(1)
        seen = stream.seen(c)
        pos = np.arange(len(seen))
        if cfg.eval.max_examples is not None and len(seen) > cfg.eval.max_examples:
            pos = np.sort(eval_rng.choice(len(seen), cfg.eval.max_examples, replace=False))
        where = seen[torch.from_numpy(pos)].to(device)
        correct = _evaluate(model, data, labels, where, cfg.eval.batch_size).cpu()
        is_new = torch.from_numpy(pos >= len(seen) - len(stream.chunks[c - 1]))
        mean = lambda t: round(t.float().mean().item(), 6) if len(t) else None  # noqa: E731
        row = {"chunk": c, "end_step": step, "acc_seen": mean(correct), "acc_new": mean(correct[is_new]),
               "acc_old": mean(correct[~is_new]), "train_acc": record["train_acc"][-1],
               "mlp_active_params": model.mlp.active_params(), "mlp_params": n_params(model.mlp),
               "trainable_params": n_params(model, trainable_only=True)}
        if dcfg.probe_size:
            model.eval()
            row.update(probe(model, probe_x))
            model.train()
        if fresh is not None:
            fresh_correct = _evaluate(fresh.model, data, labels, where[is_new.to(device)], cfg.eval.batch_size).cpu()
            row["fresh_acc_new"] = mean(fresh_correct)   # the fresh copy is scored on the new chunk only
            row["gap"] = round(row["fresh_acc_new"] - row["acc_new"], 6)
        record["chunks"].append(row)
        log.info("%s seed %d chunk %d/%d: train acc %.3f, seen acc %.3f, MLP active %d%s", name, seed, c,
                 cfg.study.chunks, row["train_acc"], row["acc_seen"], row["mlp_active_params"],
                 f", gap {row['gap']:+.3f}" if "gap" in row else "")
    bar.close()
    record["wall_s"] = round(time.time() - start, 2)
    record["cpu_s"] = round(time.process_time() - cpu_start, 2)
    return record


# ---------------------------------------------------------------------------------------------------- study
def _bands(values) -> tuple[list, list]:
    """mean and std over seeds (axis 0) as JSON lists, None where a value is missing (e.g. no gap that chunk)."""
    mean, std = mean_std(np.array(values, dtype=np.float64))
    as_list = lambda a: [None if np.isnan(v) else round(float(v), 6) for v in a]  # noqa: E731
    return as_list(mean), as_list(std)


def summarize(records: dict, methods: list[str], seeds: list[int]) -> dict:
    out = {}
    for m in methods:
        runs = [records[(m, s)] for s in seeds]
        per_chunk = lambda key: [[ch.get(key) for ch in r["chunks"]] for r in runs]  # noqa: E731
        entry = {"label": runs[0]["label"], "seeds": seeds,
                 "mlp_active_params": [ch["mlp_active_params"] for ch in runs[0]["chunks"]],
                 "steps": runs[0]["steps"]}
        keys = ["acc_seen", "acc_new", "gap", "fresh_acc_new", "eff_rank"]
        for key, values in [(k, per_chunk(k)) for k in keys] + [("chunk_train_acc", per_chunk("train_acc")),
                                                                ("train_acc", [r["train_acc"] for r in runs])]:
            if any(v is not None for run in values for v in run):
                entry[f"{key}_mean"], entry[f"{key}_std"] = _bands(values)
        entry["acc_new_ci"] = [interval(v) for v in zip(*per_chunk("acc_new"))]
        if "reset" in methods and m != "reset":  # gap to a fresh copy every chunk, paired by seed
            reset = [[ch["acc_new"] for ch in records[("reset", s)]["chunks"]] for s in seeds]
            entry["gap_reset"] = [interval(np.subtract(r, a)) for r, a in zip(zip(*reset), zip(*per_chunk("acc_new")))]
        layers = list(runs[0]["chunks"][0].get("dead", {}))
        if layers:
            entry["dead"] = {}
            for layer in layers:
                mean, std = _bands([[ch["dead"][layer] for ch in r["chunks"]] for r in runs])
                entry["dead"][layer] = {"mean": mean, "std": std}
        out[m] = entry
    return out


def _cell(m, sd, n, scale=100.0, digits=1) -> str:
    if m is None:
        return "–"
    return f"{scale * m:.{digits}f}" + (f" ± {scale * sd:.{digits}f}" if n > 1 else "")


def _interval(cell: dict) -> str:
    text = f"{100 * cell['mean']:.1f}"
    return text if cell["lo"] is None else f"{text} [{100 * cell['lo']:.1f}, {100 * cell['hi']:.1f}]"


def table_markdown(summary: dict, chunks: int) -> str:
    head = "| method | " + " | ".join(f"c{c}" for c in range(1, chunks + 1)) + " |"
    rule = "|---|" + "---:|" * chunks
    seeds = next(iter(summary.values()))["seeds"] if summary else []
    over = f"; mean ± std over seeds {seeds}" if len(seeds) > 1 else f"; seed {seeds[0]}" if seeds else ""
    parts = []
    for key, title in (("acc_seen", "Accuracy (%) on all examples seen so far (chunks 1..c), at the end of chunk c"),
                       ("acc_new", "Accuracy (%) on the newest chunk c alone, at the end of chunk c"),
                       ("chunk_train_acc", "Training accuracy (%) over the last logged window of chunk c's batches"),
                       ("gap", "Plasticity gap (points): a fresh copy's accuracy on chunk c minus the continued "
                               "model's, at the end of chunk c")):
        rows = [f"| {s['label']} | " + " | ".join(_cell(m, sd, len(s["seeds"])) for m, sd in
                                                  zip(s[f"{key}_mean"], s[f"{key}_std"])) + " |"
                for s in summary.values() if f"{key}_mean" in s]
        if rows:
            parts.append(f"{title}{over}:\n\n" + "\n".join([head, rule, *rows]))
    for key, title in (("acc_new_ci", "Accuracy (%) on chunk c's data (with chunk c's labels) at the end of chunk c"),
                       ("gap_reset", "Gap to the reset control (points): the reset control's accuracy on chunk c minus "
                                     "the method's, per seed")):
        rows = [f"| {s['label']} | " + " | ".join(_interval(cell) for cell in s[key]) + " |"
                for s in summary.values() if key in s]
        if rows:
            parts.append(f"{title}; mean [95% bootstrap interval] over seeds {seeds}:\n\n"
                         + "\n".join([head, rule, *rows]))
    rows = [f"| {s['label']} | " + " | ".join(f"{p:,}" for p in s["mlp_active_params"]) + " |" for s in summary.values()]
    parts.append("Active MLP parameters during chunk c:\n\n" + "\n".join([head, rule, *rows]))
    diag = [s for s in summary.values() if "dead" in s]
    if diag:
        rows = [f"| {s['label']} | " + " | ".join(f"{r:.0f}" for r in s["eff_rank_mean"]) + " |" for s in diag]
        means = f"; mean over seeds {seeds}" if len(seeds) > 1 else over
        parts.append(f"Effective rank of h2 on the probe batch at the end of chunk c{means}:\n\n"
                     + "\n".join([head, rule, *rows]))
        rows = []
        for s in diag:
            worst = [max(s["dead"], key=lambda layer: s["dead"][layer]["mean"][c]) for c in range(chunks)]
            rows.append(f"| {s['label']} | " + " | ".join(f"{100 * s['dead'][layer]['mean'][c]:.0f} ({layer})"
                                                          for c, layer in enumerate(worst)) + " |")
        parts.append(f"Dead ReLU units (%) at the end of chunk c, the largest share over MLP layers (the layer in "
                     f"brackets){means}:\n\n" + "\n".join([head, rule, *rows]))
        layers = list(dict.fromkeys(layer for s in diag for layer in s["dead"]))
        lines = ["| method | effective rank of h2 | " + " | ".join(f"dead {layer} (%)" for layer in layers) + " |",
                 "|---|---:|" + "---:|" * len(layers)]
        for s in diag:
            n = len(s["seeds"])
            dead = [_cell(s["dead"][layer]["mean"][-1], s["dead"][layer]["std"][-1], n) if layer in s["dead"] else "–"
                    for layer in layers]
            lines.append(f"| {s['label']} | {_cell(s['eff_rank_mean'][-1], s['eff_rank_std'][-1], n, 1.0)} | "
                         + " | ".join(dead) + " |")
        parts.append(f"On the held-out probe batch at the end of chunk {chunks}{over}: effective rank of the "
                     f"penultimate features h2 and the share of ReLU units that are zero on every probe example, "
                     f"per MLP layer (h1, h2: hidden layers; experts1..3: the bottleneck units of each MoE "
                     f"layer's active experts):\n\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


@dataclass
class StudyResult:
    table: str
    files: list[Path]
    trained: list[tuple[str, int]]
    skipped: list[tuple[str, int]]


def run_study(cfg, out: Path, methods: list[str] | None = None, seeds: list[int] | None = None) -> StudyResult:
    methods = registry.check(list(methods or cfg.study.methods))
    seeds = list(cfg.study.seeds if seeds is None else seeds)
    if not seeds:
        raise MtilError("no seed selected; pass e.g. --seeds 0,1,2")
    out = Path(out)
    fp = fingerprint(cfg)
    records, todo, skipped = {}, [], []
    for m in methods:
        for s in seeds:
            path = out / "runs" / f"{m}-seed{s}.json"
            if path.exists():
                try:
                    rec = json.loads(path.read_text())
                except json.JSONDecodeError:
                    raise MtilError(f"{path} is unreadable; delete it to rerun {m} seed {s}") from None
                if rec.get("fingerprint") != fp:
                    raise MtilError(f"{out} holds results of a different config ({path.name}); "
                                    f"use another --out or delete {out / 'runs'}")
                records[(m, s)] = rec
                skipped.append((m, s))
                log.info("skipping %s seed %d: finished in %s", m, s, path)
            else:
                todo.append((m, s))
    if todo:
        device = resolve_device(cfg.train.device)
        threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)
        if device.type == "cuda":  # same seed, same results.json on GPUs too (index_add_ / bmm are not otherwise)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            data = prepare_data(cfg, device)  # before anything is written: bad data leaves no half-made --out
            out.mkdir(parents=True, exist_ok=True)
            files.write_text(out / "config.yaml", mtil_config.dump(cfg))
            for m, s in todo:
                rec = run_one(cfg, m, s, data)
                rec["fingerprint"] = fp
                files.write_json(out / "runs" / f"{m}-seed{s}.json", rec, indent=1)
                records[(m, s)] = rec
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
    summary = summarize(records, methods, seeds)
    drop = {"wall_s", "cpu_s"}
    config = mtil_config.unwrap(cfg)
    config["study"].update(methods=methods, seeds=seeds)  # what the summary covers, not the config's defaults
    results = {"config": config, "fingerprint": fp, "methods": methods, "seeds": seeds,
               "summary": summary,
               "runs": {f"{m}-seed{s}": {k: v for k, v in records[(m, s)].items() if k not in drop}
                        for m in methods for s in seeds}}
    files.write_json(out / "results.json", results, indent=1)
    timings = {f"{m}-seed{s}": {k: records[(m, s)].get(k) for k in sorted(drop)} for m in methods for s in seeds}
    files.write_json(out / "timings.json", timings, indent=1)
    table = table_markdown(summary, cfg.study.chunks)
    files.write_text(out / "table.md", table)
    from .figures import plot_diagnostics, plot_training_accuracy

    figs = plot_training_accuracy(summary, out, cfg.study.steps_per_chunk, cfg.study.chunks, cfg.plot.smooth,
                                  cfg.plot.dpi)
    figs += plot_diagnostics(summary, out, cfg.study.chunks, cfg.plot.dpi)
    written = [out / "results.json", out / "table.md", *figs, out / "timings.json", out / "config.yaml"]
    return StudyResult(table, written, todo, skipped)
