"""Speed and memory of the MoE adapters, measured as ratios within one process.

Every figure is a median over interleaved rounds (variant A, variant B, ..., then again), and every ratio is the
median of the per-round ratios, so a machine that is busy with other work slows the variants of a round alike
and the ratio stays meaningful where a raw time does not. On a CPU device the clock is the process's CPU time
(time spent waiting for a core shared with other jobs is not counted); on CUDA it is wall time. What is measured
(see `benchmarks/README.md`):

1. `train`: one training step (forward + backward + `SlotAdamW` step with the `SliceGuard`, frozen backbone, both
   towers adapted, CLIP logits against `classes` prompts, label-smoothed cross-entropy) with MoE adapters
   (`experts`, `top_k`, `hidden`) vs the same step with one dense adapter per block (1 expert, top-1, same
   hidden, through the same `MoEAdapter` code), vs a plain bottleneck adapter (no router, no gather), vs the
   frozen backbone's forward alone (no adapters, no grad).
2. `dispatch`: `MoEAdapter.dispatch` (vectorized) vs `reference_dispatch`, the per-expert loop a user would
   write, on one layer at the model's width and token count; forward (eval) and forward + backward.
3. `eval`: images per second of `Evaluator.row` (selector, per-sample routing, cached frozen features and
   pixels, text features per router) after a warm-up row vs the bare frozen image tower on the same pixels.
4. `memory`: peak memory of one training step above what is resident before it (CUDA: allocator peak; CPU: the
   process's resident set, sampled by a thread while the step runs, after returning freed heap to the system).
5. `scaling`: step time and memory vs the number of experts and vs top-k.

6. `optimizer`: one `SlotAdamW` step (slot masks from one batch's routing, as the Trainer runs it) vs torch's
   `AdamW(foreach=True)` (and `fused=True` on CUDA) on the ViT-B-16 adapter parameter set (`optimizer_model`).

7. `finetune`: a full fine-tuning step of the baselines (`mtil.methods.finetune`, with and without gradient
   checkpointing) vs the MoE method's step: step time, and each variant's whole memory footprint measured alone.

With CUDA and ViT-B-16, `projection` extrapolates the wall time of MTIL Order I from the measured step time
and evaluation throughput. Library code: it logs and returns a dict; `mtil bench` prints it.

Modules: `settings` (what to measure), `timing` (interleaved rounds, ratios), `memory` (peak memory),
`baselines` (the plain adapter), `dispatch` (the reference per-expert loop), `steps` (models and step closures),
`sections` (train, memory, dispatch, scaling), `optimizer` (the optimizer step), `finetune` (full fine-tuning), `evaluation` (eval), `projections` (targets, Order I projection),
`runner` (`run`, `profile_step`).
"""
from .dispatch import reference_dispatch
from .projections import ORDER1_TEST_IMAGES, TARGETS, check_targets, projection
from .runner import profile_step, run
from .settings import SECTIONS, Settings

__all__ = ["ORDER1_TEST_IMAGES", "SECTIONS", "TARGETS", "Settings", "check_targets", "profile_step", "projection",
           "reference_dispatch", "run"]
