"""Registry of MLP expansion methods. A method is an `ExpandableMLP` registered with `@register("name")`.

The runner builds a method with `build(name, in_dim, num_classes, methods_cfg)`, calls `expand()` at the start
of every chunk after the first, and rebuilds the optimizer over the parameters that still require gradients.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from torch import nn

from ...errors import MtilError


class ExpandableMLP(nn.Module):
    """Maps CNN features [B, in_dim] to logits [B, num_classes] and grows at chunk starts.

    Subclasses set `label` (figure / table name) and implement `forward`, `expand` (may be a no-op) and
    `active_params` (parameters that take part in computing the output for one input).
    """

    label = ""

    def __init__(self):
        super().__init__()
        self.chunk = 1
        self.moved: list[tuple[nn.Parameter, nn.Parameter]] = []

    def grow(self) -> None:
        """Called by the runner at the start of chunk 2, 3, ...; counts chunks and calls `expand`."""
        self.chunk += 1
        self.moved = []
        self.expand()

    def replaced(self, old: nn.Parameter, new: nn.Parameter) -> None:
        """Record, during `expand`, that `new` replaces `old`, whose values are `new`'s leading block
        (`new[:old.shape[0], :old.shape[1], ...]`), so optimizer state can follow (train.keep_optimizer_state)."""
        self.moved.append((old, new))

    def expand(self) -> None:
        raise NotImplementedError

    def active_params(self) -> int:
        raise NotImplementedError

    def extra_loss(self):
        """An auxiliary loss of the last training forward pass to add to the task loss, or None."""
        return None


@dataclass
class Entry:
    name: str
    cls: type
    config_key: str
    label: str
    kwargs: dict = field(default_factory=dict)


REGISTRY: dict[str, Entry] = {}


def register(name: str, config_key: str | None = None, label: str | None = None, **kwargs):
    """Class decorator. `config_key` names the `methods.<key>` config section (default: `name`), `label` the
    name in figures and tables (default: the class's `label`); `kwargs` go to the constructor, so one class may
    be registered under several names (e.g. one per granularity)."""

    def deco(cls):
        if name in REGISTRY:
            raise ValueError(f"method '{name}' registered twice")
        REGISTRY[name] = Entry(name, cls, config_key or name, label or cls.label or name, kwargs)
        return cls

    return deco


def names() -> list[str]:
    return list(REGISTRY)


def label(name: str) -> str:
    return REGISTRY[name].label


def check(names_: list[str]) -> list[str]:
    bad = [n for n in names_ if n not in REGISTRY]
    if bad:
        raise MtilError(f"unknown method(s) {', '.join(bad)}; registered: {', '.join(REGISTRY)}")
    if not names_:
        raise MtilError(f"no method selected; registered: {', '.join(REGISTRY)}")
    return names_


def build(name: str, in_dim: int, num_classes: int, methods_cfg) -> ExpandableMLP:
    entry = REGISTRY[check([name])[0]]
    return entry.cls(in_dim, num_classes, methods_cfg[entry.config_key], **entry.kwargs)


for _module in ("no_expansion", "net2wider", "pnn", "plasticity_injection", "dynamic_moe"):
    importlib.import_module(f"{__name__}.{_module}")
