"""Write the demo's packaged backbone, mtil/demo/assets/demo-backbone.pt, with the recipe of base.yaml's `demo:`.

    python scripts/make_demo_backbone.py                 # pre-train (one torch thread) and package
    python scripts/make_demo_backbone.py --from CKPT     # package a checkpoint this recipe already produced
                                                         # (e.g. $MTIL_CACHE/demo-0/mtil-tiny-pretrained.pt)
Run it after changing demo.pretrain, demo.model or demo.seed: `mtil demo` only loads a packaged backbone whose
recipe stamp matches the config (otherwise it pre-trains one into the cache, minutes on a CPU).
"""
import argparse
import logging

import torch

from mtil.demo import domains as demo
from mtil.demo import pretrain, stream


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", default=None, help="checkpoint to package instead of pre-training")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    torch.set_num_threads(1)   # one thread: bit-repeatable on a CPU
    cfg = demo.default_section()
    if args.source:
        state = torch.load(args.source, map_location="cpu", weights_only=True)
    else:
        images, captions = stream.pretrain_mixture(cfg.seed, pretrain.mixture_sizes(cfg), cfg.pretrain.domains,
                                                 cfg.pretrain.captions_per_domain)
        state = pretrain.pretrain_clip(images, captions, cfg, cfg.seed)
    print(pretrain.export_packaged(state, pretrain._pretrain_key(cfg, cfg.seed)))


if __name__ == "__main__":
    main()
