"""Reading a run directory written by `mtil run` (config.yaml, results.json, events.jsonl, usage.npz).

`load_run(path)` returns a `RunRecord`; anything that is not a run directory, or a file that cannot be read,
gives one `MtilError` line that names the path and what to do. `find_runs(folder)` lists the run directories
below a folder (a directory holding results.json), sorted.

Only results.json is required: config.yaml, events.jsonl and usage.npz are optional (a figure that needs one
of them is skipped by `plots.plot_run`), but present and malformed is an error.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import MtilError
from ..model import TOWERS
from .layout import RESULTS, RunDir

log = logging.getLogger(__name__)


HINT = "give the --out of a `mtil run`"


@dataclass
class RunRecord:
    path: Path
    config: dict
    results: dict
    events: list[dict] = field(default_factory=list)
    usage: dict[str, np.ndarray] = field(default_factory=dict)

    # ---- conveniences the figures and notebooks share -----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def tasks(self) -> list[str]:
        return list(self.results["tasks"])

    @property
    def matrix(self) -> list[list[float]]:
        return self.results["matrix"]

    @property
    def complete(self) -> bool:
        return bool(self.results.get("complete"))

    @property
    def policy(self) -> str:
        return str(self.results.get("policy") or _get(self.config, "policy.name") or "?")

    @property
    def method(self) -> str:
        """`method.name` (runs older than the methods: moe)."""
        return str(self.results.get("method") or _get(self.config, "method.name") or "moe")

    @property
    def what(self) -> str:
        """What trained, for titles: 'policy merge' (the MoE method) or 'method finetune'."""
        return f"policy {self.policy}" if self.method == "moe" else f"method {self.method}"

    @property
    def iterations(self) -> int | None:
        """Optimizer steps per task (`train.iterations`); task k spans global steps (k*it, (k+1)*it]."""
        value = _get(self.config, "train.iterations")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def towers(self) -> list[str]:
        """Towers that carry adapters according to usage.npz (in image, text order)."""
        return [t for t in TOWERS if f"{t}_blocks" in self.usage and len(self.usage[f"{t}_blocks"])]

    def layers(self) -> list[str]:
        """Adapter layer names, `<tower>.<block>` (e.g. `image.0`), in tower then block order."""
        return [f"{t}.{int(b)}" for t in self.towers for b in self.usage[f"{t}_blocks"]]

    def task_boundaries(self) -> list[int]:
        """Global steps at which task k (k >= 1) begins, for the tasks of the sequence; [] without iterations."""
        if self.iterations is None:
            return []
        return [k * self.iterations for k in range(1, len(self.tasks))]


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _malformed(file: Path, why: str) -> MtilError:
    return MtilError(f"{file} is malformed ({why}); it was not written by `mtil run` or is damaged — "
                     f"re-run into a new --out")


def _parse(file: Path, parse, errors: tuple, kind: str):
    """`parse(text of file)`; an unreadable file or a parse error is one clear MtilError."""
    try:
        return parse(file.read_text())
    except OSError as e:
        raise MtilError(f"cannot read {file} ({e.strerror}); check its permissions") from None
    except errors as e:
        raise _malformed(file, f"not {kind}: {type(e).__name__}") from None


class OtherKind(MtilError):
    """results.json of another mtil command's output (an RL run, a plasticity study), not of `mtil run`."""


def _other_kind(results: dict, file: Path) -> None:
    """results.json of another mtil command's output: one line saying which command reads it."""
    folder = file.parent
    if results.get("kind") == "rl":
        raise OtherKind(f"{folder} is an `mtil rl` run, not an MTIL run; compare RL runs with "
                        f"`mtil rl --compare {folder}`")
    if {"methods", "seeds", "summary", "runs"} <= set(results):
        raise OtherKind(f"{folder} is the output of `mtil plasticity`, not an MTIL run; its table is "
                        f"{folder / 'table.md'}")


def _read_results(file: Path) -> dict:
    results = _parse(file, json.loads, (json.JSONDecodeError, UnicodeDecodeError), "JSON")
    if not isinstance(results, dict):
        raise _malformed(file, f"a JSON {type(results).__name__}, expected an object")
    _other_kind(results, file)
    tasks, matrix = results.get("tasks"), results.get("matrix")
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise _malformed(file, "'tasks' must be a list of dataset names")
    if len(set(tasks)) != len(tasks):
        raise _malformed(file, "'tasks' names a dataset twice")
    if not isinstance(matrix, list) or len(matrix) > len(tasks):
        raise _malformed(file, "'matrix' must be a list of at most one row per task")
    for i, row in enumerate(matrix):
        if (not isinstance(row, list) or len(row) != len(tasks)
                or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in row)):
            raise _malformed(file, f"matrix row {i} must hold {len(tasks)} numbers")
        for j, a in enumerate(row):
            if not 0.0 <= a <= 100.0:   # NaN fails this too
                raise _malformed(file, f"matrix row {i} ({tasks[i] if i < len(tasks) else i}), column {j} "
                                       f"({tasks[j]}) is {a}, not an accuracy in [0, 100]")
    if results.get("complete") and len(matrix) != len(tasks):
        raise _malformed(file, f"marked complete with {len(matrix)} of {len(tasks)} rows")
    return results


def read_results(path: str | os.PathLike) -> dict:
    """results.json of run directory `path`, checked (tasks, a matrix of numbers, complete only with every row)."""
    return _read_results(RunDir(path).results)


def read_config(path: str | os.PathLike) -> dict:
    """config.yaml of run directory `path` as a plain mapping ({} when missing)."""
    return _read_config(RunDir(path).config)


def _read_config(file: Path) -> dict:
    if not file.exists():
        log.warning("%s missing; figures fall back to what results.json and usage.npz hold", file)
        return {}
    cfg = _parse(file, yaml.safe_load, (yaml.YAMLError, UnicodeDecodeError), "YAML")
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise _malformed(file, f"a YAML {type(cfg).__name__}, expected a mapping")
    return cfg


def _read_events(file: Path) -> list[dict]:
    if not file.exists():
        return []
    try:
        lines = file.read_text().splitlines()
    except OSError as e:
        raise MtilError(f"cannot read {file} ({e.strerror}); check its permissions") from None
    except UnicodeDecodeError:
        raise _malformed(file, "not UTF-8 text") from None
    events = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            raise _malformed(file, f"line {n} is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("action"), str) \
                or not isinstance(event.get("step"), int):
            raise _malformed(file, f"line {n} lacks an integer 'step' or an 'action'")
        events.append(event)
    return events


def _read_usage(file: Path, num_tasks: int, has_experts: bool = True) -> dict[str, np.ndarray]:
    if not file.exists():
        if has_experts:   # a baseline method has no experts, hence no usage.npz: nothing to warn about
            log.warning("%s missing; the expert figures are skipped", file)
        return {}
    try:
        with np.load(file, allow_pickle=False) as z:
            usage = {k: z[k] for k in z.files}
    except OSError as e:
        raise MtilError(f"cannot read {file} ({e.strerror or e}); it is not a numpy .npz archive") from None
    except (ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise _malformed(file, f"not a numpy .npz archive: {type(e).__name__}") from None
    steps = usage.get("router_steps")
    for tower in TOWERS:
        if f"{tower}_blocks" not in usage:
            continue
        b = len(usage[f"{tower}_blocks"])
        expect = {"usage": 3, "frozen": 2, "active": 2, "router": 3}
        for key, ndim in expect.items():
            arr = usage.get(f"{tower}_{key}")
            if arr is None:
                raise _malformed(file, f"'{tower}_{key}' missing")
            if arr.ndim != ndim or arr.shape[1] != b:
                raise _malformed(file, f"'{tower}_{key}' has shape {arr.shape}, expected {ndim} axes with "
                                       f"{b} blocks on axis 1")
            if key in ("usage", "frozen", "active") and arr.shape[0] > num_tasks:
                raise _malformed(file, f"'{tower}_{key}' has {arr.shape[0]} task rows for {num_tasks} tasks")
        if steps is not None and len(steps) != usage[f"{tower}_router"].shape[0]:
            raise _malformed(file, f"{len(steps)} router_steps but {usage[f'{tower}_router'].shape[0]} "
                                   f"'{tower}_router' snapshots")
    return usage


def load_run(path: str | os.PathLike) -> RunRecord:
    """Read one run directory; one clear `MtilError` when it is not one or a file is malformed."""
    path = Path(path)
    if not path.exists():
        raise MtilError(f"{path} does not exist; {HINT}")
    if not path.is_dir():
        raise MtilError(f"{path} is not an mtil run directory (not a folder); {HINT}")
    results_file = RunDir(path).results
    if not results_file.exists():
        inside = find_runs(path)
        if inside:
            raise MtilError(f"{path} is not an mtil run directory (results.json missing) but holds {len(inside)} "
                            f"run directories; give one of them, e.g. {inside[0]}")
        raise MtilError(f"{path} is not an mtil run directory (results.json missing); {HINT}")
    results = _read_results(results_file)
    files = RunDir(path)
    return RunRecord(path=path, config=_read_config(files.config), results=results, events=_read_events(files.events),
                     usage=_read_usage(files.usage, len(results["tasks"]),
                                       has_experts=(results.get("method") or "moe") == "moe"))


def find_runs(path: str | os.PathLike) -> list[Path]:
    """Every run directory (a folder holding results.json) at or below `path`, sorted; [] when there is none."""
    path = Path(path)
    if not path.is_dir():
        raise MtilError(f"{path} is not a folder; give a folder of run directories (e.g. the --out of `mtil compare`)")
    found = {f.parent for f in path.rglob(RESULTS) if f.is_file()}
    return sorted(found)
