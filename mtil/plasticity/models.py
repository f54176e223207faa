"""Building blocks: the shared 3-layer CNN trunk and the 3-layer MLP whose expansion the study compares."""
from __future__ import annotations

import torch
from torch import nn


class ConvTrunk(nn.Module):
    """Three 3x3 stride-2 convolutions with ReLU, then adaptive average pooling to pool x pool, flattened."""

    def __init__(self, in_channels: int, channels: list[int], pool: int):
        super().__init__()
        if len(channels) != 3:
            raise ValueError("the study's CNN has exactly three conv layers")
        layers, c_in = [], in_channels
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU()]
            c_in = c
        layers += [nn.AdaptiveAvgPool2d(pool), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.out_dim = channels[-1] * pool * pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp3(in_dim: int, hidden1: int, hidden2: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden1), nn.ReLU(), nn.Linear(hidden1, hidden2), nn.ReLU(),
                         nn.Linear(hidden2, out_dim))


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
