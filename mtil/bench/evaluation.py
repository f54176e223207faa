"""The `eval` section: images per second of `Evaluator.row` over synthetic tasks vs the bare frozen image tower
on the same cached pixels, and the synthetic tasks it runs on."""
from __future__ import annotations

import copy
import io
import logging
import time

import numpy as np
import torch

from ..errors import MtilError
from ..model import moe
from .steps import StepFactory, autocast, image_size, randomize
from .timing import interleaved, median, ratio, spread

log = logging.getLogger(__name__)


def synthetic_tasks(n_tasks: int, classes: int, templates: int, n_train: int, n_test: int, size: tuple[int, int],
                    seed: int) -> list:
    """In-memory tasks in the prepared format (PNG bytes, undecoded): task t's images carry its own tint, so the
    selector tells the tasks apart as it does real domains."""
    import datasets
    from PIL import Image

    from ..data.pipeline import TaskData

    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(n_tasks):
        tint = rng.integers(0, 256, size=3)
        names = [f"task {t} class {c}" for c in range(classes)]
        features = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=names)})
        splits = {}
        for split, n in (("train", n_train), ("test", n_test)):
            images, labels = [], []
            for i in range(n):
                pixels = (rng.integers(0, 90, size=(size[0], size[1], 3)) + tint * 0.6).clip(0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="PNG")
                images.append({"bytes": buf.getvalue(), "path": None})
                labels.append(i % classes)
            splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        tmpl = [f"template {i} of a {{}}." for i in range(templates)]
        tasks.append(TaskData(f"Synthetic{t}", names, tmpl, splits["train"], splits["test"]))
    return tasks


def bench_eval(f: StepFactory) -> dict:
    from .. import config
    from ..engine.evaluate import Evaluator

    s = f.s
    tasks = synthetic_tasks(s.eval_tasks, s.eval_classes, s.eval_templates, s.eval_train, s.eval_test,
                            image_size(f.clip), s.seed)
    torch.manual_seed(s.seed)
    model = moe.attach(copy.deepcopy(f.clip), num_experts=s.experts, top_k=s.top_k, hidden=f.hidden,
                       num_routers=s.eval_tasks)
    randomize(model, s.seed)
    cfg = config.load(None, [f"eval.batch_size={s.eval_batch}", "eval.mode=selector", "eval.pixel_cache_mb=100000",
                             "selector.components=8", f"selector.max_fit_samples={s.eval_train}"])
    cast = (lambda: autocast(f.device, s.precision))
    ev = Evaluator(model, tasks, f.backbone.preprocess_val, f.backbone.tokenizer, eval_cfg=cfg.eval,
                   selector_cfg=cfg.selector, data_cfg=cfg.data, seed=s.seed, shared_router=False, device=f.device,
                   autocast=cast)
    for t in range(len(tasks)):
        ev.fit_selector(t)
    first = time.perf_counter()
    warm = ev.row(len(tasks))  # fills the caches: frozen features, pixels, zero-shot text
    first = time.perf_counter() - first
    if any(ev.cached_test(j).pixels is None for j in range(len(tasks))):  # pragma: no cover - budget is huge
        raise MtilError("bench: the evaluator did not keep the test pixels; raise eval.pixel_cache_mb")
    routed = [float((ev.routes(j, len(tasks), ev.cached_test(j).features) >= 0).float().mean())
              for j in range(len(tasks))]
    if np.mean(routed) < 0.5:
        log.warning("bench eval: the selector routes only %.0f%% of the test images to an adapted router (too few "
                    "training images per task?); the row is then mostly cached features and its speed says little",
                    100 * np.mean(routed))
    bare = copy.deepcopy(f.clip).eval()
    pixels = [ev.cached_test(j).pixels for j in range(len(tasks))]
    n_images = sum(len(p) for p in pixels)

    @torch.no_grad()
    def bare_pass():
        for px in pixels:
            for i in range(0, len(px), s.eval_batch):
                with cast():
                    bare.encode_image(px[i:i + s.eval_batch].to(f.device, torch.float32), normalize=True)

    @torch.no_grad()
    def text_pass():
        for j in range(len(tasks)):
            ev.text_features(j, j)

    bare_pass()  # warm-up (the row was warmed up above)
    rows, _ = interleaved({"row": lambda: ev.row(len(tasks)), "bare": bare_pass, "text": text_pass},
                          rounds=s.eval_rounds or s.rounds, steps=1, warmup=0, device=f.device, clock=s.clock)
    again = ev.row(len(tasks))
    return {"tasks": len(tasks), "images_per_row": n_images, "prompts_per_row": len(tasks) * s.eval_classes * s.eval_templates,
            "routed_fraction": float(np.mean(routed)), "selector_accuracy": warm["selector_accuracy"],
            "row_images_per_s": n_images / median(rows["row"]), "bare_images_per_s": n_images / median(rows["bare"]),
            "eval_over_bare": ratio(rows, "bare", "row"), "eval_over_bare_iqr": spread(rows, "bare", "row"),
            "text_share_of_row": median([t / r for r, t in zip(rows["row"], rows["text"])]),
            "first_row_s": first, "row_s": median(rows["row"]), "bare_s": median(rows["bare"]),
            "deterministic": again["accuracies"] == warm["accuracies"]}
