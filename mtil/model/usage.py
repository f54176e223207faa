"""Usage tracker: per layer x expert selection counts (per window, per task) and router weights over steps.

The counting itself happens inside each `MoEAdapter` (vectorized `bincount` into its `window_counts`,
`task_counts` and `gate_mass` buffers, which travel with the adapter state). This object reads them, keeps
the history (per-task counts, router-weight snapshots), and makes counts agree across processes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from .moe import AdaptedCLIP


def _all_reduced(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


class UsageTracker:
    def __init__(self, model: AdaptedCLIP):
        self.layers = model.layers
        self.task_history: list[np.ndarray] = []      # one [L, E] count matrix per finished task
        self.frozen_history: list[np.ndarray] = []    # [L] frozen experts per layer after each task
        self.active_history: list[np.ndarray] = []    # [L] active experts per layer after each task
        self.router_history: list[np.ndarray] = []    # [L, E] mean gate weight per snapshot
        self.router_steps: list[int] = []

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def window(self) -> torch.Tensor:
        """Selection counts since the window began, [L, E], summed over processes."""
        return _all_reduced(torch.stack([layer.window_counts for layer in self.layers]))

    def new_window(self) -> None:
        for layer in self.layers:
            layer.window_counts.zero_()

    def task_counts(self) -> torch.Tensor:
        """Selection counts of the current task, [L, E], summed over processes."""
        return _all_reduced(torch.stack([layer.task_counts for layer in self.layers]))

    def end_task(self) -> np.ndarray:
        counts = self.task_counts().cpu().numpy()
        self.task_history.append(counts)
        self.frozen_history.append(np.array([int(layer.frozen.sum()) for layer in self.layers]))
        self.active_history.append(np.array([int(layer.active.sum()) for layer in self.layers]))
        for layer in self.layers:
            layer.task_counts.zero_()
        return counts

    def reset_router_mass(self) -> None:
        for layer in self.layers:
            layer.gate_mass.zero_()

    def snapshot_router(self, step: int) -> None:
        """Record each layer's mean gate weight per expert since the last snapshot (DynamicMoE Fig. 4)."""
        mass = _all_reduced(torch.stack([layer.gate_mass for layer in self.layers])).cpu().numpy()
        total = mass.sum(axis=1, keepdims=True)
        self.router_history.append(np.divide(mass, total, out=np.zeros_like(mass), where=total > 0))
        self.router_steps.append(int(step))
        self.reset_router_mass()

    def state_dict(self) -> dict:
        return {"task_history": [h.tolist() for h in self.task_history],
                "frozen_history": [h.tolist() for h in self.frozen_history],
                "active_history": [h.tolist() for h in self.active_history],
                "router_history": [h.tolist() for h in self.router_history],
                "router_steps": list(self.router_steps)}

    def load_state_dict(self, state: dict) -> None:
        self.task_history = [np.asarray(h, dtype=np.int64) for h in state["task_history"]]
        self.frozen_history = [np.asarray(h, dtype=np.int64) for h in state["frozen_history"]]
        self.active_history = [np.asarray(h, dtype=np.int64) for h in state["active_history"]]
        self.router_history = [np.asarray(h, dtype=np.float32) for h in state["router_history"]]
        self.router_steps = list(state["router_steps"])

    def arrays(self, tasks: list[str]) -> dict[str, np.ndarray]:
        """`usage.npz` content. Per tower: `<tower>_blocks` [B] block indices, `<tower>_usage` [T, B, E] selection
        counts per finished task, `<tower>_frozen` / `<tower>_active` [T, B] expert counts after each task,
        `<tower>_router` [S, B, E] mean gate weights per snapshot. Shared: `tasks` [T], `router_steps` [S]."""
        out = {"tasks": np.array(tasks[:len(self.task_history)]), "router_steps": np.array(self.router_steps, dtype=np.int64)}
        for tower in sorted({layer.tower for layer in self.layers}):
            rows = [i for i, layer in enumerate(self.layers) if layer.tower == tower]
            out[f"{tower}_blocks"] = np.array([self.layers[i].block for i in rows], dtype=np.int64)
            num_experts = self.layers[rows[0]].num_experts
            out[f"{tower}_usage"] = (np.stack([h[rows] for h in self.task_history]) if self.task_history
                                     else np.zeros((0, len(rows), num_experts), dtype=np.int64))
            for key, history in (("frozen", self.frozen_history), ("active", self.active_history)):
                out[f"{tower}_{key}"] = (np.stack([h[rows] for h in history]) if history
                                         else np.zeros((0, len(rows)), dtype=np.int64))
            out[f"{tower}_router"] = (np.stack([h[rows] for h in self.router_history]) if self.router_history
                                      else np.zeros((0, len(rows), num_experts), dtype=np.float32))
        return out
