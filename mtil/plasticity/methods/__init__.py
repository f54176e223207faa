"""Registry of MLP expansion methods. A method is an `ExpandableMLP` registered with `@register("name")`.

The runner builds a method with `build(name, in_dim, num_classes, methods_cfg, chunks)`, calls `grow()` at the
start of every chunk after the first, and rebuilds the optimizer over the parameters that still require gradients.
Methods that, like the reference code, allocate their final size up front and use a growing part of it keep the
same parameters across `grow()`; the unused part gets no gradient.
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from ...errors import MtilError
from ...registry import Registry


class ExpandableMLP(nn.Module):
    """Maps CNN features [B, in_dim] to logits [B, num_classes] and grows at chunk starts.

    Subclasses set `label` (figure / table name) and implement `forward`, `expand` (may be a no-op) and
    `active_params`: the parameters that contribute to the output, counted as the reference's
    `count_active_params` counts them.
    """

    label = ""
    reinit = False  # True: the runner replaces the whole model by a fresh one at every chunk start (the reset control)

    def __init__(self):
        super().__init__()
        self.chunk = 1
        self._trace: dict | None = None

    def _note(self, name: str, units: torch.Tensor) -> None:
        """Record post-ReLU units [B, n] of MLP layer `name` while `activations` runs (several parts that feed the
        output at the same depth, e.g. PNN columns, are concatenated)."""
        if self._trace is not None:
            self._trace.setdefault(name, []).append(units)

    @torch.no_grad()
    def activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Post-ReLU activations [B, units] of every MLP layer on features `x`, in forward order: `h1`, `h2` (the
        hidden layers; `h2` is what the output layer reads) and, for bottleneck experts, `experts1..3`."""
        self._trace = {}
        try:
            self(x)
            trace = self._trace
        finally:
            self._trace = None
        return {name: torch.cat(parts, 1) for name, parts in trace.items()}

    def grow(self) -> None:
        """Called by the runner at the start of chunk 2, 3, ...; counts chunks and calls `expand`."""
        self.chunk += 1
        self.expand()

    def expand(self) -> None:
        raise NotImplementedError

    def active_params(self) -> int:
        raise NotImplementedError

    def extra_loss(self):
        """An auxiliary loss of the last training forward pass to add to the task loss, or None."""
        return None


REGISTRY = Registry("method")


def register(name: str, config_key: str | None = None, label: str | None = None, **kwargs):
    """Class decorator. `config_key` names the `methods.<key>` config section (default: `name`), `label` the
    name in figures and tables (default: the class's `label`); `kwargs` go to the constructor, so one class may
    be registered under several names (e.g. one per granularity)."""

    def deco(cls):
        return REGISTRY.register(name, config_key=config_key or name, label=label or cls.label or name,
                                 kwargs=kwargs)(cls)

    return deco


def names() -> list[str]:
    return REGISTRY.names()


def label(name: str) -> str:
    return REGISTRY.get(name).meta["label"]


def check(names_: list[str]) -> list[str]:
    bad = [n for n in names_ if n not in REGISTRY]
    if bad:
        raise MtilError(f"unknown method(s) {', '.join(bad)}; registered: {', '.join(REGISTRY.names())}")
    if not names_:
        raise MtilError(f"no method selected; registered: {', '.join(REGISTRY.names())}")
    return names_


def build(name: str, in_dim: int, num_classes: int, methods_cfg, chunks: int) -> ExpandableMLP:
    """Method `name` for `chunks` chunks (its last expansion happens at the start of chunk `chunks`)."""
    entry = REGISTRY.get(check([name])[0])
    return entry.obj(in_dim, num_classes, methods_cfg[entry.meta["config_key"]], chunks=chunks, **entry.meta["kwargs"])


for _module in ("no_expansion", "net2wider", "pnn", "plasticity_injection", "dynamic_moe"):
    importlib.import_module(f"{__name__}.{_module}")
