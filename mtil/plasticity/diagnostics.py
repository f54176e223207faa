"""Lost-plasticity diagnostics on a fixed held-out probe batch: the share of dead ReLU units per MLP layer (zero on
every probe example) and the effective rank of the penultimate features (what the output layer reads)."""
from __future__ import annotations

import torch


def dead_fraction(units: torch.Tensor) -> float:
    """Share of the columns of `units` [B, n] (post-ReLU) that are zero on every row."""
    return (units.amax(0) <= 0).double().mean().item()


def effective_rank(features: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of `features` [B, n] (Roy & Vetterli 2007; the reference's
    `smooth_rank` without its 1e-6 smoothing). 0 for an all-zero matrix."""
    s = torch.linalg.svdvals(features.double())
    if s.sum() <= 0:
        return 0.0
    return torch.special.entr(s / s.sum()).sum().exp().item()


@torch.no_grad()
def probe(model, x: torch.Tensor) -> dict:
    """Diagnostics of a PlasticityNet on the normalised probe images `x`: dead fraction per MLP layer and the
    effective rank of `h2`."""
    acts = model.mlp.activations(model.cnn(x))
    return {"dead": {name: round(dead_fraction(a), 6) for name, a in acts.items()},
            "eff_rank": round(effective_rank(acts["h2"]), 4)}
