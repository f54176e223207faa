"""The protocol of a result row: what decides whether two MTIL numbers may be compared at all.

MTIL rows of the field differ in more than the method: how the task of a test image is known (the true task, a
selector deciding per sample or per test batch, no task identity at all), how many training images per class
(full or few-shot), the task order, the backbone and its activation (OpenAI's CLIP weights were trained with
QuickGELU), how many parameters train, and whether the settings are the published scripts' or not. `record(...)` is
that description of one run (in results.json as `protocol`), `of_results` reads it back (or derives it from the
provenance record of a run written before it existed), `key` is the part that must agree for two runs to be
averaged, and `matches` says whether a published row (`mtil/references.yaml`, `protocols`) is of a run's protocol.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from . import config

ORDERS = {"order1": "Order I", "order2": "Order II"}
# compared to decide whether rows may share a group or sit beside a published row
KEY_FIELDS = ("task_identity", "shots", "order", "backbone", "activation")
# keys that are protocol columns of their own, or change no number: left out of the settings comparison
_NOT_SETTINGS = ("seed", "threads", "data.root", "data.demo", "data.order", "data.few_shot", "data.num_workers",
                 "model.pretrained", "eval.mode", "selector.mode", "eval.batch_size", "eval.pixel_cache_mb",
                 "eval.cache_features", "output.", "train.log_every", "train.checkpoint_every",
                 "train.router_snapshot_every", "data.max_eval_per_dataset", "demo.")
# what no one can know from the published code: the row's settings are mtil's guess
GUESSED = {"icarl": "iCaRL's settings are not in ZSCL's scripts (icarl.sh is a 5-iteration smoke test)"}


def _references() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parent / "references.yaml").read_text())


def task_identity(eval_mode: str | None, selector_mode: str | None) -> str:
    """How a test image's task is known: oracle, selector per sample / per batch, task-free, or none needed."""
    if eval_mode == "selector":
        return f"selector per {selector_mode or 'sample'}"
    return {"oracle": "oracle", "task-free": "task-free", "zero-shot": "none (zero-shot)",
            "whole-model": "none (one model)"}.get(eval_mode, str(eval_mode))


def order_of(tasks: list[str]) -> str:
    """'Order I' / 'Order II' for the MTIL orders, else 'custom (N tasks)'."""
    for name, entry in _references().items():
        if isinstance(entry, dict) and entry.get("tasks") == list(tasks):
            return ORDERS.get(name, name)
    return f"custom ({len(tasks)} tasks)"


def activation_of(model) -> str | None:
    """'quick_gelu' / 'gelu' from the modules of a built open_clip model (None: neither found)."""
    names = {type(m).__name__ for m in model.modules()}
    return "quick_gelu" if "QuickGELU" in names else "gelu" if "GELU" in names else None


def _published_config(flat: dict) -> tuple[str, dict] | None:
    """(name, flat config) of the shipped config of this run's order, shots and method, or None (another stream)."""
    order = next((n for n, e in _references().items() if isinstance(e, dict)
                  and e.get("tasks") == flat.get("data.order")), None)
    if order not in ORDERS:
        return None
    method = flat.get("method.name", "moe")
    if method == "moe":
        name = f"mtil_{order}" + ("_fewshot" if flat.get("data.few_shot") else "")
        overrides = [f"policy.name={flat.get('policy.name')}"]
    else:
        name, overrides = f"baselines/{order}", [f"method.name={method}"]
    try:
        return name, config.flatten(config.unwrap(config.load(name, overrides)))
    except Exception:   # a config that no longer loads (an older run's policy): nothing to compare with
        return None


def settings_status(flat: dict) -> str:
    """'published' (the shipped config of its order: the published scripts' settings), 'guessed: why' for a method
    whose settings no published script gives, 'changed: keys' otherwise, 'n/a' for a stream that is no MTIL order."""
    shipped = _published_config(flat)
    if shipped is None:
        return "n/a"
    name, ref = shipped
    method = flat.get("method.name", "moe")
    irrelevant = ("method.",) if method == "moe" else ("policy.", "moe.", "selector.")
    keep = lambda k: (not k.startswith(_NOT_SETTINGS) and (not k.startswith(irrelevant) or k == "method.name"   # noqa: E731
                      or k.startswith(f"method.{method}.")))
    changed = sorted(k for k in set(flat) | set(ref) if keep(k) and flat.get(k) != ref.get(k))
    changed = [k for k in changed if not any(k.startswith(o + ".") for o in changed)]   # a table, not its entries
    guessed = f"guessed: {GUESSED[method]}" if method in GUESSED else None
    if changed:
        shown = ", ".join(changed[:3]) + (f" (+{len(changed) - 3})" if len(changed) > 3 else "")
        return f"changed from {name}: {shown}" + (f"; {guessed}" if guessed else "")
    return guessed or "published"


def record(cfg, eval_mode: str, tasks: list[str], trainable: int | None, activation: str | None) -> dict:
    """The protocol of one run (results.json `protocol`)."""
    flat = config.flatten(config.unwrap(dict(cfg)))
    shots = flat.get("data.few_shot")
    return {"task_identity": task_identity(eval_mode, flat.get("selector.mode")),
            "shots": f"{shots}-shot" if shots else "full", "order": order_of(tasks),
            "backbone": f"{flat.get('model.name')} ({flat.get('model.pretrained') or 'random init'})",
            "activation": activation, "trainable": trainable, "settings": settings_status(flat)}


def of_results(results: dict) -> dict:
    """A results.json's protocol; for a run written before it was recorded, derived from its provenance record
    (activation then unknown)."""
    if isinstance(results.get("protocol"), dict):
        return results["protocol"]
    cfg = (results.get("provenance") or {}).get("config")
    trainable = [p.get("trainable") for p in results.get("params") or []]
    trainable = trainable[-1] if trainable and None not in trainable else None
    if not isinstance(cfg, dict):
        return {"task_identity": None, "shots": None, "order": order_of(results["tasks"]), "backbone": None,
                "activation": None, "trainable": trainable, "settings": "n/a"}
    method = (cfg.get("method") or {}).get("name", "moe")
    mode = (cfg.get("eval") or {}).get("mode")
    if method not in ("moe", "zero-shot"):
        mode = "whole-model"
    elif method == "zero-shot":
        mode = "zero-shot"
    return record(cfg, mode, results["tasks"], trainable, None)


def key(protocol: dict) -> dict:
    return {k: protocol.get(k) for k in KEY_FIELDS}


def matches(published: dict, protocol: dict) -> bool:
    """A published row's protocol against a run's: every field the paper states agrees (a field the run does not
    record, e.g. an older run's activation, does not exclude it)."""
    for k, v in published.items():
        mine = protocol.get(k)
        if k == "backbone" and mine is not None:
            mine = mine.split(" (")[0]
        if mine is not None and v is not None and mine != v:
            return False
    return True
