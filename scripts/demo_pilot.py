"""The demo stream's pilot: zero-shot accuracy (the floor) and a linear probe on the frozen image features (the
ceiling of what adapters on a frozen backbone can reach) per stream domain, plus the Transfer of given runs.

    python scripts/demo_pilot.py --runs RUN_DIR ... --out docs/demo/pilot.json

The domains, their images and the backbone are the default demo's (`demo:` in configs/base.yaml, built into
$MTIL_CACHE as `mtil demo` builds them). The probe is scikit-learn's multinomial logistic regression (C = --C) fitted
on the L2-normalized image features of each domain's training split and scored on its test split; zero-shot is
CLIP's prompt ensemble over the domain's templates. `--runs` adds each run's method, Transfer, Avg, Last and
accuracy matrix from its results.json (e.g. a zero-shot and a fine-tuning run of the demo: does fine-tuning lower
Transfer?).
"""
import argparse
import json
import logging
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from mtil.data.prepared import load_info, load_split
from mtil.demo import domains as demo
from mtil.demo import pretrain
from mtil.model.backbone import register_models


@torch.no_grad()
def features(model, preprocess, ds) -> tuple[np.ndarray, np.ndarray]:
    x = torch.stack([preprocess(im.convert("RGB")) for im in ds["image"]])
    return F.normalize(model.encode_image(x), dim=-1).numpy(), np.asarray(ds["label"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", default=[], help="run directories whose results.json to add")
    p.add_argument("--C", type=float, default=10.0, help="inverse L2 strength of the probe (default 10)")
    p.add_argument("--out", default="docs/demo/pilot.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    torch.set_num_threads(1)
    cfg = demo.default_section()
    root, ckpt = pretrain.ensure_demo_assets(pretrain.cache_dir(), cfg, cfg.seed)
    register_models()
    model, _, preprocess = open_clip.create_model_and_transforms(cfg.model, pretrained=str(ckpt))
    model.eval()
    zero = pretrain.zero_shot_report(root, ckpt, list(cfg.domains), cfg.model)
    domains = {}
    for name in cfg.domains:
        xtr, ytr = features(model, preprocess, load_split(root, name, "train"))
        xte, yte = features(model, preprocess, load_split(root, name, "test"))
        probe = LogisticRegression(C=args.C, max_iter=5000).fit(xtr, ytr)
        info = load_info(root, name)
        domains[name] = {"classes": len(info.classnames), "chance": round(100 / len(info.classnames), 1),
                         "zero_shot": round(zero[name]["accuracy"], 1),
                         "linear_probe": round(100 * probe.score(xte, yte), 1)}
    runs = {}
    for run in args.runs:
        r = json.loads((Path(run) / "results.json").read_text())
        runs[Path(run).name] = {"method": r.get("method"), "policy": r.get("policy"),
                                **{k: round(r[k], 2) for k in ("transfer", "avg", "last") if k in r},
                                "matrix": [[round(v, 1) for v in row] for row in r["matrix"]]}
    out = {"command": "python scripts/demo_pilot.py " + " ".join(f"--runs {r}" for r in args.runs)
           + f" --C {args.C:g} --out {args.out}", "seed": int(cfg.seed), "probe_C": args.C,
           "domains": domains, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{'domain':<10} {'chance':>6} {'zero-shot':>9} {'probe':>6}")
    for name, d in domains.items():
        print(f"{name:<10} {d['chance']:>6} {d['zero_shot']:>9} {d['linear_probe']:>6}")
    for name, r in runs.items():
        print(name, {k: v for k, v in r.items() if k != "matrix"})


if __name__ == "__main__":
    main()
