"""Building blocks: the shared 3-layer CNN trunk and the 3-layer MLP whose expansion the study compares."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import MtilError

#: (kernel, stride, padding) of the three convolutions of each trunk kind
CONVS = {"nature": ((8, 4, 3), (4, 2, 2), (3, 1, 1)),  # the reference's Nature-DQN CNN
         "stride2": ((3, 2, 1), (3, 2, 1), (3, 2, 1))}


class ConvTrunk(nn.Module):
    """Three convolutions with ReLU (`kind`: nature | stride2), optionally adaptive average pooling to
    pool x pool, flattened. The reference flattens the Nature CNN's map without pooling (pool = None)."""

    def __init__(self, in_channels: int, channels: list[int], pool: int | None, image_size: int,
                 kind: str = "nature"):
        super().__init__()
        if kind not in CONVS:
            raise MtilError(f"model.cnn must be one of {', '.join(CONVS)}, got '{kind}'")
        if len(channels) != 3:
            raise MtilError("the study's CNN has exactly three conv layers; model.cnn_channels must list 3 widths")
        layers, c_in, size = [], in_channels, image_size
        for c, (k, s, p) in zip(channels, CONVS[kind]):
            layers += [nn.Conv2d(c_in, c, k, stride=s, padding=p), nn.ReLU()]
            c_in, size = c, (size + 2 * p - k) // s + 1
        if size < 1:
            raise MtilError(f"images of size {image_size} are too small for the {kind} CNN; raise data.image_size")
        if pool is not None:
            layers.append(nn.AdaptiveAvgPool2d(pool))
            size = pool
        layers.append(nn.Flatten())
        self.net = nn.Sequential(*layers)
        self.out_dim = channels[-1] * size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp3(in_dim: int, hidden1: int, hidden2: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden1), nn.ReLU(), nn.Linear(hidden1, hidden2), nn.ReLU(),
                         nn.Linear(hidden2, out_dim))


def run_mlp3(net: nn.Sequential, x: torch.Tensor, note) -> torch.Tensor:
    """Forward through an `mlp3`, passing its two hidden ReLU outputs to `note(name, units)`."""
    h1 = net[1](net[0](x))
    note("h1", h1)
    h2 = net[3](net[2](h1))
    note("h2", h2)
    return net[4](h2)


def mlp3_params(in_dim: int, hidden1: int, hidden2: int, out_dim: int) -> int:
    return (in_dim + 1) * hidden1 + (hidden1 + 1) * hidden2 + (hidden2 + 1) * out_dim


def n_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class PlasticityNet(nn.Module):
    """CNN trunk -> expandable MLP head (one of the registered methods). Only the MLP expands."""

    def __init__(self, cnn: ConvTrunk, mlp: nn.Module):
        super().__init__()
        self.cnn = cnn
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.cnn(x))
