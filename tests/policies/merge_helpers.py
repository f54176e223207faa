"""A merge policy on a small MoE (6 experts, hidden 8, 2 routers, image tower) with random expert weights."""
import copy

import torch

from mtil import config, policies
from mtil.model import moe
from mtil.model.usage import UsageTracker


def merge_setup(clip_model, seed=None, **merge_cfg):
    """(cfg, model, tracker, policy) of a merge every 10 steps after 10; merge_cfg: policy.merge.* overrides."""
    overrides = ["policy.name=merge", "moe.num_experts=6", "policy.merge.every=10", "policy.merge.warmup=10"]
    overrides += [f"seed={seed}"] if seed is not None else []
    cfg = config.load(None, overrides + [f"policy.merge.{k}={v}" for k, v in merge_cfg.items()])
    torch.manual_seed(0)
    model = moe.attach(copy.deepcopy(clip_model), towers=("image",), num_experts=6, hidden=8, num_routers=2)
    with torch.no_grad():
        for layer in model.layers:
            for t in layer.expert_tensors():
                t.normal_()
    tracker = UsageTracker(model)
    return cfg, model, tracker, policies.build(cfg).attach(model, tracker)
