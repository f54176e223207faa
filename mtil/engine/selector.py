"""Task-ID inference for task-free evaluation, on L2-normalised frozen-CLIP image features.

Per seen task a model is fitted on (up to `selector.max_fit_samples` of) its training images and gives each
sample a distance; the task's threshold is the `quantile` of the distances of its own training images, and a
sample's score for the task is distance / threshold. Three models (`selector.method`):
  * `knn` (default): cosine distance to the `neighbours`-th nearest training image of the task (Sun et al. 2022's
    deep-nearest-neighbour novelty score); the training distances behind the threshold leave each image itself
    out, so a seen task's test images score like its training images; the task is the one of lowest score;
  * `gaussian`: class-conditional Gaussians with one shared, Ledoit-Wolf-shrunk covariance per task;
    distance = squared Mahalanobis distance to the nearest class mean of the task; the task is chosen by the
    Gaussian log-likelihood (distance + log det of the task's covariance), the unseen test uses the score;
  * `pca`: a `components`-dimensional PCA per task; distance = squared reconstruction error.
Two decision granularities (`selector.mode`):
  * `sample` (default): each sample goes to its lowest-score task, or is "unseen" (-1, answered by zero-shot
    CLIP) when even that score exceeds `margin`;
  * `batch`: MoE-Adapters' DDAS: one decision per evaluation batch (all from one dataset), from each task's
    score averaged over the batch, with the same one global threshold `margin`.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

from ..errors import MtilError

UNSEEN = -1
METHODS = ("knn", "gaussian", "pca")
MODES = ("sample", "batch")


class _PCAModel:
    def __init__(self, x: np.ndarray, y: np.ndarray, components: int):
        k = max(1, min(components, x.shape[0] - 1, x.shape[1]))
        self.pca = PCA(n_components=k, svd_solver="full").fit(x)

    def distance(self, x: np.ndarray) -> np.ndarray:
        recon = self.pca.inverse_transform(self.pca.transform(x))
        return ((x - recon) ** 2).sum(axis=1)

    training_distance = distance


class _KNNModel:
    def __init__(self, x: np.ndarray, y: np.ndarray, neighbours: int):
        self.bank = x / np.linalg.norm(x, axis=1, keepdims=True)
        self.k = max(1, min(neighbours, len(x) - 1))

    def distance(self, x: np.ndarray, leave_self_out: bool = False) -> np.ndarray:
        sim = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ self.bank.T
        if leave_self_out:
            np.fill_diagonal(sim, -np.inf)
        return 1.0 - np.partition(sim, -self.k, axis=1)[:, -self.k]

    def training_distance(self, x: np.ndarray) -> np.ndarray:
        return self.distance(x, leave_self_out=True)


class _GaussianModel:
    """Class means + one within-class covariance (Ledoit-Wolf shrinkage) of one task."""

    def __init__(self, x: np.ndarray, y: np.ndarray, size: int = 0):   # no size knob
        classes = np.unique(y)
        self.means = np.stack([x[y == c].mean(axis=0) for c in classes])
        residual = x - self.means[np.searchsorted(classes, y)]
        fitted = LedoitWolf(assume_centered=True).fit(residual)
        self.precision = fitted.precision_
        self.logdet = float(np.linalg.slogdet(fitted.covariance_)[1])

    def distance(self, x: np.ndarray) -> np.ndarray:
        diff = x[:, None, :] - self.means[None]                       # [n, classes, d]
        return np.einsum("nkd,de,nke->nk", diff, self.precision, diff).min(axis=1)

    training_distance = distance


_MODELS = {"knn": _KNNModel, "gaussian": _GaussianModel, "pca": _PCAModel}


class TaskSelector:
    def __init__(self, method: str = "knn", *, components: int = 16, neighbours: int = 5, quantile: float = 0.99,
                 margin: float = 1.0, mode: str = "sample"):
        if method not in METHODS:
            raise MtilError(f"selector.method must be one of {', '.join(METHODS)}, got {method!r}")
        if mode not in MODES:
            raise MtilError(f"selector.mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.method, self.quantile, self.margin, self.mode = method, quantile, margin, mode
        self.size = {"knn": neighbours, "pca": components, "gaussian": 0}[method]   # the model's one size knob
        self.models: dict[int, tuple[object, float]] = {}

    @classmethod
    def from_config(cls, section, **overrides) -> "TaskSelector":
        """The selector of a config's `selector:` section (`overrides` replace some of its keys)."""
        kw = {k: section[k] for k in ("method", "components", "neighbours", "quantile", "margin", "mode")}
        return cls(**{**kw, **overrides})

    def fit_task(self, task: int, features: torch.Tensor, labels: torch.Tensor) -> None:
        x = features.float().cpu().numpy().astype(np.float64)
        y = labels.cpu().numpy()
        model = _MODELS[self.method](x, y, self.size)
        threshold = float(np.quantile(model.training_distance(x), self.quantile)) + 1e-12
        self.models[task] = (model, threshold)

    def _distances(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = features.float().cpu().numpy().astype(np.float64)
        models = [m for _, m in sorted(self.models.items())]
        dist = np.stack([m.distance(x) for m, _ in models], axis=1)
        return dist, np.array([thr for _, thr in models])

    def scores(self, features: torch.Tensor) -> np.ndarray:
        """[N, tasks] distance / threshold, tasks in sorted order."""
        dist, thr = self._distances(features)
        return dist / thr

    def predict(self, features: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Task id per sample (-1 = unseen). In `batch` mode, consecutive groups of `batch_size` samples (one
        evaluation batch of one dataset) share one decision."""
        n = features.shape[0]
        if not self.models:
            return torch.full((n,), UNSEEN, dtype=torch.long)
        tasks = np.array(sorted(self.models))
        dist, thr = self._distances(features)
        if self.mode == "batch":
            starts = np.arange(0, n, batch_size or n)
            sizes = np.diff(np.append(starts, n))
            dist = np.repeat(np.add.reduceat(dist, starts, axis=0) / sizes[:, None], sizes, axis=0)
        if self.method == "gaussian":   # the Gaussian log-likelihood; the other models compare distance / threshold
            key = dist + np.array([m.logdet for _, (m, _) in sorted(self.models.items())])
        else:
            key = dist / thr
        best = key.argmin(axis=1)
        pred = np.where(dist[np.arange(n), best] / thr[best] <= self.margin, tasks[best], UNSEEN)
        return torch.from_numpy(pred).long()


def check_sizes(section, fit_sizes: dict[str, int], feature_dim: int | None) -> None:
    """A selector setting larger than what a task's data allows is one MtilError line naming the key (the models
    above would otherwise clamp it without a word). `fit_sizes`: task -> training images its selector is fitted
    on; `feature_dim`: the frozen features' width (None when unknown)."""
    for name, n in fit_sizes.items():
        if section["method"] == "knn" and section["neighbours"] > n - 1:
            raise MtilError(f"config key 'selector.neighbours' = {section['neighbours']} is larger than task {name} "
                            f"allows: its selector is fitted on {n} training images, each left out of its own "
                            f"neighbours, so at most {n - 1}")
        if section["method"] == "pca":
            limit = min(n - 1, feature_dim) if feature_dim else n - 1
            if section["components"] > limit:
                raise MtilError(f"config key 'selector.components' = {section['components']} is larger than task "
                                f"{name} allows: at most {limit} (its selector is fitted on {n} training images"
                                f"{f' of {feature_dim}-d features' if feature_dim else ''})")
