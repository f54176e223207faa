"""Evaluation in one process: one row A[i][:] of the accuracy matrix after each task.

What is cached across the T rows (it does not depend on the adapters): each test set's frozen-CLIP image
features, its labels, the zero-shot text features, and (within `eval.pixel_cache_mb`) the preprocessed test
images. Per row, each sample gets a route: its own task (`oracle`), the selector's guess (`selector`), the one shared
router whatever its dataset (`task-free`, DynamicMoE's setting: no task identity, unseen datasets go through the
adapters too), or none (`zero-shot`; and in `oracle` / `selector` every sample of a task not learned yet); a
routed sample runs through the adapted image tower with its router, an unrouted one is answered from the cached
zero-shot features. Text features are
computed once per (row, dataset, router), with the ensemble of the dataset's templates. A method that trains the
backbone itself (full fine-tuning, `mtil.methods`) is evaluated in `whole-model` mode: every sample and every prompt
through the current weights (one model for every dataset, as ZSCL evaluates), nothing cached but labels and pixels.
Images that cannot be decoded under `data.bad_images: skip` are left out of the accuracy.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.pipeline import Skipped, TaskData, eval_loader, seed_for
from ..errors import MtilError
from ..model.moe import AdaptedCLIP
from .selector import UNSEEN, TaskSelector

log = logging.getLogger(__name__)
MODES = ("oracle", "selector", "task-free", "zero-shot", "whole-model")


@dataclass
class CachedTest:
    """A split's adapter-independent part, computed once per run."""
    features: torch.Tensor     # frozen-CLIP image features, normalized, [n, D]
    labels: torch.Tensor       # [n]
    indices: torch.Tensor      # positions in the split (decodable images only)
    pixels: torch.Tensor | None


class Evaluator:
    def __init__(self, model: AdaptedCLIP, tasks: list[TaskData], transform, tokenizer, *, eval_cfg, selector_cfg,
                 data_cfg, seed: int, shared_router: bool, device, autocast=nullcontext,
                 skipped: Skipped | None = None, mode: str | None = None):
        self.mode = eval_cfg.mode if mode is None else mode   # the method's mode wins (mtil.methods: whole-model)
        if self.mode not in MODES:
            raise MtilError(f"eval.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        self.model, self.tasks, self.transform, self.tokenizer = model, tasks, transform, tokenizer
        self.cfg, self.data_cfg, self.seed = eval_cfg, data_cfg, seed
        self.shared_router, self.device, self.autocast = shared_router, device, autocast
        self.selector = TaskSelector.from_config(selector_cfg)
        self.max_fit = selector_cfg.max_fit_samples
        self._cache: dict[int, CachedTest] = {}
        self._zero_shot_text: dict[int, torch.Tensor] = {}
        self._pixel_budget = int(eval_cfg.pixel_cache_mb * 2 ** 20)
        self.skipped = Skipped() if skipped is None else skipped   # undecodable images (data.bad_images=skip)

    # ---- cached, adapter-independent parts -------------------------------------------------------------------
    def _loader(self, ds, name, split):
        return self.skipped.batches(eval_loader(ds, self.transform, name, split, self.cfg.batch_size,
                                                self.data_cfg.num_workers, self.data_cfg.bad_images))

    @torch.no_grad()
    def _frozen_features(self, ds, name: str, split: str, keep_pixels: bool) -> CachedTest:
        """(In whole-model mode the features would go stale with the weights: they are left empty, [n, 0].)"""
        feats, labels, indices, pixels = [], [], [], []
        for batch in self._loader(ds, name, split):
            if batch is None:
                continue
            x, y, idx = batch
            if self.mode == "whole-model":
                feats.append(torch.empty(len(x), 0))
            else:
                with self.autocast():
                    feats.append(self.model.encode_image(x.to(self.device), route=UNSEEN).float().cpu())
            labels.append(y)
            indices.append(idx)
            if keep_pixels:
                pixels.append(x.half())
        if not feats:
            raise MtilError(f"no decodable images in {name}/{split}; re-run `mtil prepare {name}`")
        return CachedTest(torch.cat(feats), torch.cat(labels), torch.cat(indices), torch.cat(pixels) if keep_pixels else None)

    def cached_test(self, j: int) -> CachedTest:
        """Test set j's frozen features, labels, indices and (within eval.pixel_cache_mb) pixels, cached."""
        if j not in self._cache:
            task = self.tasks[j]
            size = len(task.test) * 3 * 2 * int(np.prod(self._image_hw()))
            keep = self.cfg.cache_features and size <= self._pixel_budget
            if keep:
                self._pixel_budget -= size
            cached = self._frozen_features(task.test, task.name, "test", keep)
            if not self.cfg.cache_features:
                return cached
            self._cache[j] = cached
        return self._cache[j]

    def _image_hw(self) -> tuple[int, int]:
        size = self.model.clip.visual.image_size
        return tuple(size) if isinstance(size, (tuple, list)) else (size, size)

    @torch.no_grad()
    def text_features(self, j: int, route: int) -> torch.Tensor:
        """Class embeddings of task j: per class, the normalized mean of its normalized template embeddings."""
        cache = route == UNSEEN and self.mode != "whole-model"   # whole-model: the text tower trains
        if cache and j in self._zero_shot_text:
            return self._zero_shot_text[j]
        prompts = self.tasks[j].prompts(all_templates=True)
        flat = [p for per_class in prompts for p in per_class]
        tokens = self.tokenizer(flat)
        out = []
        for i in range(0, len(flat), self.cfg.batch_size):
            with self.autocast():
                out.append(self.model.encode_text(tokens[i:i + self.cfg.batch_size].to(self.device), route=route).float())
        emb = torch.cat(out).view(len(prompts), -1, out[0].shape[-1]).mean(1)
        emb = emb / emb.norm(dim=-1, keepdim=True)
        if cache:
            self._zero_shot_text[j] = emb
        return emb

    @torch.no_grad()
    def selector_features(self, t: int) -> CachedTest:
        """Frozen features of the (up to max_fit_samples, seeded) training images task t's selector is fitted on."""
        task = self.tasks[t]
        ds = task.train
        if len(ds) > self.max_fit:
            rng = np.random.default_rng(seed_for(self.seed, task.name, "selector"))
            ds = ds.select(np.sort(rng.permutation(len(ds))[:self.max_fit]))
        return self._frozen_features(ds, task.name, "train", keep_pixels=False)

    def fit_selector(self, t: int) -> None:
        """Fit task t's selector model on `selector_features(t)`."""
        cached = self.selector_features(t)
        self.selector.fit_task(t, cached.features, cached.labels)

    # ---- one row -----------------------------------------------------------------------------------------------
    def routes(self, j: int, learned: int, feats: torch.Tensor) -> torch.Tensor:
        """Task id per sample of dataset j after tasks 0..learned-1 were trained (-1 = zero-shot CLIP)."""
        n = feats.shape[0]
        mode = self.mode
        if mode in ("zero-shot", "whole-model") or learned == 0:   # whole-model: no adapters, the model answers
            return torch.full((n,), UNSEEN, dtype=torch.long)
        if mode == "oracle":
            return torch.full((n,), j if j < learned else UNSEEN, dtype=torch.long)
        if mode == "task-free":
            return torch.zeros(n, dtype=torch.long)
        return self.selector.predict(feats, batch_size=self.cfg.batch_size)

    @torch.no_grad()
    def _adapted_features(self, j: int, cached: CachedTest, positions: torch.Tensor, routers: torch.Tensor) -> torch.Tensor:
        out = []
        bs = self.cfg.batch_size
        if cached.pixels is not None:
            for i in range(0, len(positions), bs):
                x = cached.pixels[positions[i:i + bs]].to(self.device, torch.float32)
                with self.autocast():
                    out.append(self.model.encode_image(x, route=routers[i:i + bs].to(self.device)).float().cpu())
            return torch.cat(out)
        task = self.tasks[j]
        subset = task.test.select(cached.indices[positions].tolist())
        at = 0
        for x, _, _ in self._loader(subset, task.name, "test"):
            with self.autocast():
                out.append(self.model.encode_image(x.to(self.device), route=routers[at:at + len(x)].to(self.device))
                           .float().cpu())
            at += len(x)
        return torch.cat(out)

    @torch.no_grad()
    def row(self, learned: int) -> dict:
        """Accuracies (%) on every task's test set after `learned` tasks, plus the selector's accuracy."""
        was_training = self.model.training
        self.model.eval()
        accs, correct_task, total = [], 0, 0
        for j in tqdm(range(len(self.tasks)), desc=f"eval after {learned} task(s)", leave=False, disable=None):
            cached = self.cached_test(j)
            task_routes = self.routes(j, learned, cached.features)
            target = j if j < learned else UNSEEN
            correct_task += int((task_routes == target).sum())
            total += len(task_routes)
            routers = task_routes.clamp(max=0) if self.shared_router else task_routes
            zs_text = self.text_features(j, UNSEEN)
            if self.mode == "whole-model":   # every sample through the current weights
                every = torch.arange(len(task_routes))
                logits = self._adapted_features(j, cached, every, task_routes) @ zs_text.t()
            else:
                logits = cached.features @ zs_text.t()
            routed = (task_routes != UNSEEN).nonzero().squeeze(1)
            if len(routed):
                feats = self._adapted_features(j, cached, routed, routers[routed])
                for r in routers[routed].unique().tolist():
                    sel = routers[routed] == r
                    logits[routed[sel]] = feats[sel] @ self.text_features(j, int(r)).t()
            accs.append(float((logits.argmax(1) == cached.labels).float().mean() * 100))
        self.model.train(was_training)
        return {"accuracies": accs, "selector_accuracy": 100.0 * correct_task / total if self.mode == "selector" else None}
