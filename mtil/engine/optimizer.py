"""The adapters' optimizer and learning-rate schedules, and the reset of one slot's optimizer state.

`SlotAdamW` is torch's AdamW (decoupled weight decay) over stacked expert tensors, made to train what MoE-Adapters
trains. There every expert (and every task's router) is its own `nn.Parameter`: an expert that no sample selected
in a step gets `grad = None` and torch's AdamW skips it (no moment update, no weight decay, no step count), and a
frozen expert (`requires_grad=False`) is never touched. Here experts are slices of one tensor, so the optimizer
keeps a step count per slot and updates, in each step, only the slots of that step's mask (`set_masks`, filled by
`SliceGuard` from the experts that were routed a sample); the others stay bit-identical, moments and count
included. `reset_state` (merge target, grown expert) zeroes one slot's moments and step count, so its next updates
are a freshly created AdamW's whatever the tensor's age.

The update runs on `torch._foreach_*` over whole tensors with per-slot factors (no Python loop over slots): a
masked slot gets moment weights 0 (exactly unchanged) and an infinite Adam denominator (exactly no step).

Schedules (`train.schedule`): `reference` is MoE-Adapters' / ZSCL's `utils.cosine_lr` (linear warm-up to the base
lr, then a cosine over the steps after the warm-up); `timm` is timm's `CosineLRScheduler` (its cosine also covers
the warm-up steps), mtil's earlier schedule.
"""
from __future__ import annotations

import math

import torch
from timm.scheduler import CosineLRScheduler

from ..model.moe import AdaptedCLIP, MoEAdapter

SCHEDULES = ("reference", "timm")


class SlotAdamW(torch.optim.Optimizer):
    """AdamW with one step count per slot and a per-step slot mask.

    `slot_dims[i]`: the dims of the i-th parameter that index its slots ((0,) for expert tensors [E, ...], (0, 2) for
    routers [R, d, E]: one slot per router and expert column; () = one slot). `set_masks({p: bool tensor of p's slot
    shape})` before `step()` restricts that step to the masked slots (a parameter without a mask updates every slot);
    masks last one step."""

    def __init__(self, params, slot_dims, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        params = list(params)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.slot_dims = {p: tuple(d) for p, d in zip(params, slot_dims)}
        self._masks: dict = {}
        self._scratch: dict = {}   # per-parameter buffer for the Adam denominator (not optimizer state)

    def slot_shape(self, p: torch.Tensor) -> list[int]:
        shape = [1] * p.dim()
        for d in self.slot_dims.get(p, ()):
            shape[d] = p.shape[d]
        return shape

    def slot_steps(self, p: torch.Tensor) -> torch.Tensor:
        """The step counts of p's slots (created at zero; widened from an older optimizer's coarser counts)."""
        state = self.state[p]
        shape = self.slot_shape(p)
        step = state.get("step")
        if step is None:
            step = torch.zeros(shape, dtype=torch.float32, device=p.device)
        elif list(step.shape) != shape:
            step = step.to(torch.float32).expand(shape).clone()
        state["step"] = step.to(p.device)
        return state["step"]

    def set_masks(self, masks: dict) -> None:
        """Slots to update in the next step, {parameter: bool tensor of its slot shape}."""
        self._masks = masks

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        masks, self._masks = self._masks, {}
        for group in self.param_groups:
            self._update(group, masks)
        return loss

    def _update(self, group: dict, masks: dict) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        params, grads, exp_avgs, exp_avg_sqs, scratch, slot_masks = [], [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            mask = masks.get(p)
            mask = torch.ones(self.slot_shape(p), dtype=torch.bool, device=p.device) if mask is None else mask.to(p.device)
            rows = _row_range(mask) if 0 in self.slot_dims.get(p, ()) else (0, p.shape[0] if p.dim() else 1)
            if rows[0] == rows[1]:
                continue   # no slot of p takes part in this step, as a Parameter whose grad is None
            state = self.state[p]
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if p not in self._scratch:
                self._scratch[p] = torch.empty_like(p, memory_format=torch.preserve_format)
            tensors = [p, p.grad, state["exp_avg"], state["exp_avg_sq"], self._scratch[p], self.slot_steps(p), mask]
            if p.dim() and rows[1] - rows[0] < p.shape[0]:   # only the rows from the first to the last masked slot
                tensors = [t[rows[0]:rows[1]] for t in tensors]   # (e.g. the router being trained)
            p_, g_, m_, v_, buf, step, mask = tensors
            _zero_masked(g_, mask)
            step.add_(mask)
            for out, t in zip((params, grads, exp_avgs, exp_avg_sqs, scratch, slot_masks), (p_, g_, m_, v_, buf, (step, mask))):
                out.append(t)
        if not params:
            return
        f = _slot_factors(slot_masks, [p.dtype for p in params], lr, beta1, beta2, eps, wd)
        if wd != 0:
            torch._foreach_mul_(params, f["decay"])
        torch._foreach_lerp_(exp_avgs, grads, f["w1"])
        torch._foreach_mul_(exp_avg_sqs, f["beta2"])
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        for v, buf in zip(exp_avg_sqs, scratch):   # the denominator in a kept buffer: no large allocation per step
            torch.sqrt(v, out=buf)
        torch._foreach_mul_(scratch, f["a"])
        torch._foreach_add_(scratch, f["c"])
        torch._foreach_addcdiv_(params, exp_avgs, scratch, value=-1.0)

    @torch.no_grad()
    def reset_slot(self, p: torch.Tensor, index) -> None:
        """Forget slot `index` of p: zero moments and step count (the next update is a fresh AdamW's first)."""
        state = self.state.get(p)
        if not state:
            return
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][index] = 0
        self.slot_steps(p)[index] = 0


def _zero_masked(grad: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero the gradient of the slots outside the mask, so the second moment of a masked slot gains nothing (an
    unselected expert's gradient is exactly zero already; a frozen expert's is not)."""
    if bool(mask.all()):
        return
    if all(n == 1 for n in mask.shape[1:]):          # whole rows (expert slots): index them, no full pass
        grad[~mask.reshape(-1)] = 0
    else:
        grad.masked_fill_(~mask, 0)


def _row_range(mask: torch.Tensor) -> tuple[int, int]:
    """[first, last + 1) of the rows (dim 0) holding a masked slot; (0, 0) when none does."""
    rows = mask.reshape(mask.shape[0], -1).any(dim=1).nonzero()
    return (0, 0) if rows.numel() == 0 else (int(rows[0]), int(rows[-1]) + 1)


def _slot_factors(slot_masks: list, dtypes: list, lr: float, beta1: float, beta2: float, eps: float,
                  wd: float) -> dict:
    """Per-slot factors of one AdamW step, computed once on all slots (float64, as torch's bias corrections):
    the first moment's weight w1 = 1 - beta1, the second's decay beta2; a = 1 / (sqrt(bias2) * step_size) and
    c = eps / step_size, so that p -= m / (c + a sqrt(v)) is torch's p -= step_size * m / (sqrt(v) / sqrt(bias2) + eps);
    decay = 1 - lr wd. A masked slot (its gradient zeroed) gets w1 = 0, beta2 = 1, a = 0, c = inf and decay 1: it is
    left exactly as it is. With lr = 0 the moments still update and the weights do not (as torch's AdamW)."""
    shapes = [m.shape for _, m in slot_masks]
    sizes = [m.numel() for _, m in slot_masks]
    step = torch.cat([s.reshape(-1) for s, _ in slot_masks]).double()
    on = torch.cat([m.reshape(-1) for _, m in slot_masks])
    bias1 = 1 - torch.pow(beta1, step)
    bias2_sqrt = (1 - torch.pow(beta2, step)).sqrt()
    step_size = lr / bias1
    moves = on & (step_size > 0)
    zero = torch.zeros_like(step)
    out = {"w1": torch.where(on, 1 - beta1, zero), "beta2": torch.where(on, beta2, zero + 1),
           "a": torch.where(moves, 1 / (bias2_sqrt * step_size), zero),
           "c": torch.where(moves, eps / step_size, torch.full_like(step, math.inf)),
           "decay": torch.where(on, 1 - lr * wd, zero + 1)}
    return {k: [t.to(dtype).view(shape) for t, dtype, shape in zip(v.split(sizes), dtypes, shapes)]
            for k, v in out.items()}


def build_optimizer(model: AdaptedCLIP, lr: float, weight_decay: float) -> SlotAdamW:
    """SlotAdamW over the adapters: one step count per expert (expert tensors) and per router and expert column
    (routers)."""
    params, dims = [], []
    for layer in model.layers:
        for p, d in [(t, (0,)) for t in layer.expert_tensors()] + [(t, (0, 2)) for t in layer.router_tensors()]:
            if p.requires_grad:
                params.append(p)
                dims.append(d)
    return SlotAdamW(params, dims, lr=lr, weight_decay=weight_decay)


class ReferenceCosine:
    """MoE-Adapters' / ZSCL's `utils.cosine_lr`: the lr of loop step s (0-based) is base (s + 1) / warmup while
    s < warmup, then min_lr + (base - min_lr) (1 + cos(pi (s - warmup) / (iterations - warmup))) / 2 (the reference
    has min_lr 0). `step_update(n)` sets the lr of the n-th update (n = s + 1), the interface of timm's schedulers.
    A pure function of the step: resuming needs no state."""

    def __init__(self, optimizer: torch.optim.Optimizer, iterations: int, warmup: int, min_lr: float = 0.0):
        self.optimizer, self.iterations, self.warmup, self.min_lr = optimizer, iterations, warmup, min_lr
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]

    def lr_at(self, step: int, base_lr: float) -> float:
        if step < self.warmup:
            return base_lr * (step + 1) / self.warmup
        span = self.iterations - self.warmup
        progress = (step - self.warmup) / span if span > 0 else 1.0
        return self.min_lr + (base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def step_update(self, num_updates: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(num_updates - 1, base)

    def state_dict(self) -> dict:
        return {"base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.base_lrs = list(state.get("base_lrs", self.base_lrs))


def build_scheduler(optimizer: torch.optim.Optimizer, iterations: int, warmup: int, min_lr: float,
                    kind: str = "reference"):
    """The per-update lr schedule of one task (`train.schedule`), stepped with `step_update(n)` before update n."""
    if kind == "reference":
        return ReferenceCosine(optimizer, iterations, warmup, min_lr)
    if kind == "timm":
        return CosineLRScheduler(optimizer, t_initial=max(iterations, 1), lr_min=min_lr,
                                 warmup_t=min(warmup, max(iterations - 1, 0)), warmup_lr_init=0.0,
                                 warmup_prefix=False, t_in_epochs=False)
    raise ValueError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")


@torch.no_grad()
def reset_state(optimizer: torch.optim.Optimizer, layer: MoEAdapter, expert: int, router_column: bool = False) -> None:
    """Forget the optimizer state of one expert's slices (and optionally its router columns): zero moments and,
    with `SlotAdamW`, the slot's step count, so its next updates are a freshly created AdamW's."""
    targets = [(p, (expert,)) for p in layer.expert_tensors()]
    if router_column:
        targets += [(p, (slice(None), slice(None), expert)) for p in layer.router_tensors()]
    for p, index in targets:
        if isinstance(optimizer, SlotAdamW):
            optimizer.reset_slot(p, index)
            continue
        for key, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value) and value.shape == p.shape:
                value[index] = 0
