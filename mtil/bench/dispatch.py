"""The reference MoE dispatch: the per-expert loop one writes first. The `dispatch` benchmark times
`MoEAdapter.dispatch` against it, and the MoE tests check the vectorized values and gradients against it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import moe


def reference_dispatch(layer: moe.MoEAdapter, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The straightforward mixture: group the (sample, slot) pairs by expert and loop over the experts used.

    Each expert runs one dense bottleneck over the samples routed to it, and its gated output is added back at
    those samples' rows. Same result as `MoEAdapter.dispatch` (dropout aside); it is the speed baseline of the
    `dispatch` benchmark, the implementation one writes first.
    """
    out = torch.zeros_like(x)
    dtype = x.dtype
    for e in idx.unique().tolist():
        rows, slots = (idx == e).nonzero(as_tuple=True)
        hid = F.relu(x[rows] @ layer.w_down[e].to(dtype) + layer.b_down[e].to(dtype))
        hid = layer.dropout(hid)
        y = hid @ layer.w_up[e].to(dtype) + layer.b_up[e].to(dtype)
        out.index_add_(0, rows, y * weights[rows, slots].to(dtype)[:, None, None])
    return out * layer.scale
