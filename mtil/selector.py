"""Task-ID inference per sample, for task-free evaluation.

For every seen task a PCA (scikit-learn) is fitted on L2-normalised frozen-CLIP image features of that task's
training images; its threshold is a quantile of the reconstruction errors on those images. A test sample goes
to the task with the smallest error relative to its threshold, or is "unseen" (-1, answered by the original
zero-shot CLIP) when every relative error exceeds `margin`. Constants come from the `selector` config section.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA

UNSEEN = -1


class TaskSelector:
    def __init__(self, components: int, quantile: float, margin: float):
        self.components, self.quantile, self.margin = components, quantile, margin
        self.models: dict[int, tuple[PCA, float]] = {}

    def fit_task(self, task: int, features: torch.Tensor) -> None:
        x = features.float().cpu().numpy()
        k = max(1, min(self.components, x.shape[0] - 1, x.shape[1]))
        pca = PCA(n_components=k, svd_solver="full").fit(x)
        threshold = float(np.quantile(self._errors(pca, x), self.quantile)) + 1e-12
        self.models[task] = (pca, threshold)

    @staticmethod
    def _errors(pca: PCA, x: np.ndarray) -> np.ndarray:
        recon = pca.inverse_transform(pca.transform(x))
        return ((x - recon) ** 2).sum(axis=1)

    def scores(self, features: torch.Tensor) -> np.ndarray:
        """[N, tasks] reconstruction error / threshold, tasks in sorted order."""
        x = features.float().cpu().numpy()
        return np.stack([self._errors(p, x) / thr for _, (p, thr) in sorted(self.models.items())], axis=1)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        if not self.models:
            return torch.full((features.shape[0],), UNSEEN, dtype=torch.long)
        tasks = np.array(sorted(self.models))
        s = self.scores(features)
        best = s.argmin(axis=1)
        pred = np.where(s[np.arange(len(s)), best] <= self.margin, tasks[best], UNSEEN)
        return torch.from_numpy(pred).long()
