"""Task selector on a config's task stream, measured on the frozen features the run's evaluator computes.

    .venv/bin/python scripts/selector_study.py [CONFIG] [--set selector.method=gaussian ...]

CONFIG defaults to the demo (`demo.yaml`, its assets resolved as `mtil demo` does). Prints, per decision mode
(per sample, per evaluation batch): task identification with every task fitted (% of each test set given its own
task), and leave-one-domain-out novelty (each task left out of the fit in turn: % of its test images sent to the
zero-shot path). No adapter is trained: the selector sees the frozen backbone only.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from mtil import config
from mtil.data import pipeline
from mtil.demo.pretrain import resolve_demo_assets
from mtil.engine.evaluate import Evaluator
from mtil.engine.selector import UNSEEN, TaskSelector
from mtil.model import backbone, moe


def measure(cfg) -> dict:
    resolve_demo_assets(cfg)
    bb = backbone.load(cfg.model.name, cfg.model.pretrained, activation=cfg.model.activation)
    tasks = [pipeline.load_task(cfg.data, name, cfg.seed) for name in cfg.data.order]
    model = moe.attach(bb.model, towers=("image",), num_experts=2, top_k=1, hidden=1, num_routers=1)
    ev = Evaluator(model, tasks, bb.preprocess_val, bb.tokenizer, eval_cfg=cfg.eval, selector_cfg=cfg.selector,
                   data_cfg=cfg.data, seed=cfg.seed, shared_router=False, device="cpu")
    train = [ev.selector_features(t) for t in range(len(tasks))]
    test = [ev.cached_test(j).features for j in range(len(tasks))]
    out = {}
    for mode in ("sample", "batch"):
        def fitted(seen):
            sel = TaskSelector.from_config(cfg.selector, mode=mode)
            for t in seen:
                sel.fit_task(t, train[t].features, train[t].labels)
            return sel
        everything = fitted(range(len(tasks)))
        ident = [100 * float((everything.predict(test[j], cfg.eval.batch_size) == j).float().mean())
                 for j in range(len(tasks))]
        novel = [100 * float((fitted([t for t in range(len(tasks)) if t != h]).predict(test[h], cfg.eval.batch_size)
                              == UNSEEN).float().mean()) for h in range(len(tasks))]
        out[mode] = {"identification": ident, "left_out_to_zero_shot": novel}
    return {"tasks": [t.name for t in tasks], **out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = config.load(args.config, [*args.overrides, "data.demo=true"] if args.config == "demo.yaml" else args.overrides)
    res = measure(cfg)
    s = cfg.selector
    print(f"selector {s.method} (k {s.neighbours}, quantile {s.quantile}, margin {s.margin})")
    for mode in ("sample", "batch"):
        for key, label in (("identification", "identification"), ("left_out_to_zero_shot", "left out -> zero-shot")):
            v = res[mode][key]
            print(f"  {mode:6s} {label:22s} {np.mean(v):5.1f}%  "
                  + " ".join(f"{n}={x:.0f}" for n, x in zip(res["tasks"], v)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
