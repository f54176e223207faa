"""Run every benchmark of `mtil.bench` on the test models (and ViT-B/16 where a GPU is present) and write
`benchmarks/results-<machine>.json`, one entry per model.

    python benchmarks/run_all.py                      # tiny + mid (+ ViT-B-16 on CUDA), torch's default threads
    python benchmarks/run_all.py --threads 1 --machine laptop --models tiny
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def uptime() -> str | None:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mtil import bench
    from mtil.commands.bench import render

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=None, help="comma-separated (default: tiny,mid, plus ViT-B-16 on CUDA)")
    p.add_argument("--machine", default=None, help="name in the output file (default: host name)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--out", default=None, help="output file (default benchmarks/results-<machine>.json)")
    p.add_argument("--sections", default=None, help="comma-separated subset of mtil.bench.SECTIONS; with an existing "
                   "output file, only these sections of its entries are replaced (the rest is kept)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    cuda = torch.cuda.is_available()
    models = args.models.split(",") if args.models else ["tiny", "mid"] + (["ViT-B-16"] if cuda else [])
    machine = args.machine or re.sub(r"[^A-Za-z0-9_.-]+", "-", platform.node() or "machine")
    out = Path(args.out) if args.out else HERE / f"results-{machine}.json"
    sections = tuple(args.sections.split(",")) if args.sections else bench.SECTIONS
    merge = args.sections is not None and out.exists()
    report = json.loads(out.read_text()) if merge else {"machine": machine, "results": {}}
    report["uptime_start" if not merge else "uptime_start_update"] = uptime()
    for name in models:
        settings = bench.Settings(model=name, threads=args.threads, rounds=args.rounds, steps=args.steps,
                                  precision=args.precision, sections=sections)
        if name.lower() in ("vit-b-16", "vit-b/16"):
            # the dispatch micro-benchmark at batch 64 x 197 tokens is enough; the grids stay as they are
            settings.eval_test, settings.eval_batch = 512, 256
        result = bench.run(settings)
        key = result["settings"]["model"]
        if merge and key in report["results"]:
            entry = report["results"][key]
            entry.update({k: result[k] for k in sections if k in result})
            entry.setdefault("updates", []).append({"sections": list(sections), "settings": result["settings"],
                                                    "machine": result["machine"]})
            entry["targets"] = bench.check_targets(entry)
        else:
            report["results"][key] = result
        print("\n".join(render(result)), flush=True)
        report["uptime_end" if not merge else "uptime_end_update"] = uptime()
        out.write_text(json.dumps(report, indent=2) + "\n")  # after every model: a partial file is still useful
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
