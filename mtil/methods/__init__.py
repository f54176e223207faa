"""Continual-learning methods, registered by name: what trains, with which losses, what happens between tasks.

`moe` (MoE adapters + a lifecycle policy, mtil's own) and the field's baselines as ZSCL's code runs them:
`zero-shot`, `finetune`, `lwf`, `icarl`, `wiseft`, `zscl` (one file each; `finetune.py` and `distill.py` hold what
they share).
"""
from . import finetune, icarl, lwf, moe, wiseft, zero_shot, zscl  # noqa: F401  (registration)
from .base import METHODS, Method, MethodFacts, build, register  # noqa: F401
