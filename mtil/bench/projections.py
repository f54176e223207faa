"""What a result is read against: the targets (`TARGETS`, `check_targets`) and the projected wall time of MTIL
Order I on ViT-B/16 from the measured step time and evaluation throughput (`projection`)."""
from __future__ import annotations

# Targets: (result path, comparison, bound). `train.moe_over_dense` is a slowdown (lower is better).
TARGETS = {"train.moe_over_dense": ("<=", 1.15), "dispatch.speedup_train": (">=", 3.0),
           "dispatch.speedup_forward": (">=", 3.0), "eval.eval_over_bare": (">=", 0.85),
           "optimizer.slot_over_torch": ("<=", 1.2)}
# MTIL Order I: test images per dataset (the splits the MTIL papers evaluate on), for the wall-time projection
# only. Approximate: a prepared dataset may differ by a few images.
ORDER1_TEST_IMAGES = {"Aircraft": 3333, "Caltech101": 6085, "CIFAR100": 10000, "DTD": 1880, "EuroSAT": 5400,
                      "Flowers102": 6149, "Food101": 25250, "MNIST": 10000, "OxfordPet": 3669,
                      "StanfordCars": 8041, "SUN397": 19850}
ORDER1_ITERATIONS = 1000


def projection(result: dict) -> dict | None:
    """Projected wall time of MTIL Order I (ViT-B-16): 11 tasks x 1000 steps x step time, plus evaluation."""
    train = result.get("train")
    ev = result.get("eval")
    if not train:
        return None
    names = list(ORDER1_TEST_IMAGES)
    sizes = [ORDER1_TEST_IMAGES[n] for n in names]
    train_s = len(names) * ORDER1_ITERATIONS * train["moe_s"]
    out = {"train_hours": train_s / 3600, "step_s": train["moe_s"], "tasks": len(names),
           "iterations_per_task": ORDER1_ITERATIONS}
    if ev:
        # first row: frozen features of every test set (bare speed); row i re-encodes the test sets of the i
        # learned tasks (a perfect selector routes exactly those), at the measured row speed.
        routed = sum(sum(sizes[:i + 1]) for i in range(len(names)))
        eval_s = sum(sizes) / ev["bare_images_per_s"] + routed / ev["row_images_per_s"]
        out.update(eval_hours=eval_s / 3600, total_hours=(train_s + eval_s) / 3600)
    return out


def check_targets(result: dict) -> dict:
    out = {}
    for key, (op, bound) in TARGETS.items():
        section, name = key.split(".")
        value = result.get(section, {}).get(name) if isinstance(result.get(section), dict) else None
        if value is None:
            continue
        out[key] = {"value": value, "target": f"{op} {bound}", "met": value <= bound if op == "<=" else value >= bound}
    return out
