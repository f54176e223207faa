"""`mtil bench [--model tiny|mid|ViT-B-16] [--batch N] [--threads N] [--json] [--out FILE] [--profile]`."""
from __future__ import annotations

import json
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--model", default="tiny", help="tiny | mid | ViT-B-16 (any open_clip name; random weights)")
    p.add_argument("--batch", type=int, default=64, help="training batch (default 64)")
    p.add_argument("--classes", type=int, default=100, help="prompts per training step (default 100)")
    p.add_argument("--experts", type=int, default=22, help="experts per MoE layer (default 22)")
    p.add_argument("--top-k", type=int, default=2, help="experts per sample (default 2)")
    p.add_argument("--hidden", type=int, default=None, help="expert width (default: width/12, i.e. 64 for ViT-B/16)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; figures are medians (default 7)")
    p.add_argument("--steps", type=int, default=2, help="timed calls per variant per round (default 2)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="autocast dtype (default fp32)")
    p.add_argument("--clock", default="auto", choices=["auto", "cpu", "wall"],
                   help="auto (default): process CPU time on CPU, so other jobs on shared cores do not skew the "
                   "ratios; wall time on CUDA")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--sections", default=None, help="comma-separated subset of the sections (train, dispatch, eval, "
                   "memory, scaling, optimizer, finetune: mtil.bench.SECTIONS); default all")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    p.add_argument("--profile", choices=["moe", "dense", "plain"], default=None,
                   help="instead of the benchmark, print torch.profiler's op table of this variant's training step")


def settings_from_args(args):
    from ..bench import (  # imported here: building the CLI parser stays torch-free
        SECTIONS,
        Settings,
    )
    sections = SECTIONS if args.sections is None else tuple(x.strip() for x in args.sections.split(",") if x.strip())
    return Settings(model=args.model, batch=args.batch, classes=args.classes, experts=args.experts, top_k=args.top_k,
                    hidden=args.hidden, threads=args.threads, rounds=args.rounds, steps=args.steps,
                    precision=args.precision, clock=args.clock, device=args.device, sections=sections)


def _iqr(v):
    return f"[{v[0]:.2f}, {v[1]:.2f}]" if v else ""


def _f(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def render(r: dict) -> list[str]:
    """Human-readable lines of a bench result."""
    s, m = r["settings"], r["machine"]
    lines = [f"mtil bench: {s['model']} on {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, "
             f"{m['torch_threads']} torch thread(s), {m['cpus']} cpus, load {_f((m.get('load_average') or [None])[0], 2)}"
             f", batch {s['batch']}, {s['classes']} prompts, {s['experts']} experts top-{s['top_k']}, hidden "
             f"{s['hidden']}, {s['precision']}; medians of {s['rounds']} interleaved rounds, {s['clock']} time"]
    if "train" in r:
        t = r["train"]
        lines += ["", f"training step (fwd + bwd + AdamW)      median s ({s['clock']})",
                  f"  MoE adapters                        {t['moe_s']:.4f}",
                  f"  dense adapter (1 expert, top-1)     {t['dense_s']:.4f}",
                  f"  plain bottleneck adapter            {t['plain_s']:.4f}",
                  f"  frozen backbone forward only        {t['frozen_forward_s']:.4f}",
                  f"  MoE / dense     {t['moe_over_dense']:.3f}   IQR {_iqr(t.get('moe_over_dense_iqr'))}   (target <= 1.15)",
                  f"  MoE / plain     {t['moe_over_plain']:.3f}",
                  f"  dense / plain   {t['dense_over_plain']:.3f}",
                  f"  MoE / frozen    {t['moe_over_frozen']:.3f}"]
    if "dispatch" in r:
        d = r["dispatch"]
        lines += ["", f"dispatch, one layer ({d['samples']} samples x {d['tokens']} tokens, d={d['dim']}, "
                  f"{d['experts_used']}/{d['experts']} experts used), median s: vectorized / per-expert loop",
                  f"  forward (eval)     {d['vectorized_forward_s']:.5f} / {d['loop_forward_s']:.5f}   speedup "
                  f"{d['speedup_forward']:.2f}x IQR {_iqr(d.get('speedup_forward_iqr'))} (target >= 3)",
                  f"  forward + backward {d['vectorized_train_s']:.5f} / {d['loop_train_s']:.5f}   speedup "
                  f"{d['speedup_train']:.2f}x IQR {_iqr(d.get('speedup_train_iqr'))} (target >= 3)"]
    if "eval" in r:
        e = r["eval"]
        lines += ["", f"evaluation row ({e['tasks']} tasks, {e['images_per_row']} images, {e['prompts_per_row']} "
                  f"prompts, {100 * e['routed_fraction']:.0f}% routed)",
                  f"  Evaluator.row       {e['row_images_per_s']:.1f} images/s",
                  f"  bare image tower    {e['bare_images_per_s']:.1f} images/s",
                  f"  row / bare          {e['eval_over_bare']:.3f}   IQR {_iqr(e.get('eval_over_bare_iqr'))}   (target >= 0.85); text features "
                  f"{100 * e['text_share_of_row']:.0f}% of the row"]
    if "memory" in r:
        lines += ["", "peak memory of a training step above resident (MiB)"]
        lines += [f"  {name:<16}{v['peak_delta_mb']:9.1f}   ({v['how']})" for name, v in r["memory"].items()]
    if "scaling" in r:
        for axis, rows in r["scaling"].items():
            lines += ["", f"scaling with {axis}: step s, vs reference, peak MiB"]
            lines += [f"  {row[axis]:>3}   {row['step_s']:.4f}   {_f(row['over_reference'])}   "
                      f"{_f(row.get('peak_delta_mb'), 1)}" for row in rows]
    if "optimizer" in r:
        o = r["optimizer"]
        lines += ["", f"optimizer step on the {o['model']} adapter set trained by one task"
                  + (f" of {o['config']}" if o.get("config") else "")
                  + f" ({o['tensors']} tensors, {o['values'] / 1e6:.1f}M values: {o['experts']} experts of width "
                  f"{o['hidden'] or 'd/12'}, the current of {o['routers']} routers; {o['experts_stepped']}/"
                  f"{o['expert_slots']} expert slots selected, the others a zero gradient), same gradients for both",
                  "                                 median s   state MiB   allocated per step MiB",
                  f"  SlotAdamW (slot masks)         {o['slot_s']:.4f}   {o['slot_state_mb']:9.1f}   "
                  f"{o['slot_step_alloc_mb']:9.1f}",
                  f"  torch AdamW(foreach=True)      {o['torch_foreach_s']:.4f}   {o['torch_state_mb']:9.1f}   "
                  f"{o['torch_step_alloc_mb']:9.1f}"
                  + (f"\n  torch AdamW(fused=True)        {o['torch_fused_s']:.4f}" if "torch_fused_s" in o else ""),
                  f"  SlotAdamW / torch foreach      {o['slot_over_torch']:.3f}   IQR {_iqr(o.get('slot_over_torch_iqr'))}"
                  "   (target <= 1.2; SlotAdamW's state includes its kept denominator buffer, torch allocates its "
                  "denominator every step)",
                  f"  torch's fresh denominator      {o['allocation_s']:.4f}   (its allocation and first touch); "
                  f"without it SlotAdamW / torch {o['slot_over_torch_without_allocation']:.3f}"]
    if "finetune" in r:
        ft = r["finetune"]
        lines += ["", f"full fine-tuning ({ft['trainable_finetune'] / 1e6:.2f}M trainable) vs the MoE method: median s "
                  "per step, memory footprint MiB (model copy + grads + optimizer state + activations)"]
        lines += [f"  {name:<24}{ft[name + '_s']:.4f}   {m['peak_delta_mb']:9.1f}   ({m['how']})"
                  for name, m in ft["memory"].items()]
        lines += [f"  fine-tuning / MoE: step {ft['finetune_over_moe']:.2f}x IQR {_iqr(ft.get('finetune_over_moe_iqr'))}, "
                  f"memory {_f(ft['memory_finetune_over_moe'], 2)}x; checkpointing / plain fine-tuning: step "
                  f"{ft['checkpointing_over_finetune']:.2f}x, memory {_f(ft['memory_checkpointing_over_finetune'], 2)}x"]
    if r.get("projection"):
        p = r["projection"]
        lines += ["", f"projected MTIL Order I: training {p['train_hours']:.2f} h "
                  f"({p['tasks']} x {p['iterations_per_task']} steps x {p['step_s']:.3f} s)"
                  + (f", evaluation {p['eval_hours']:.2f} h, total {p['total_hours']:.2f} h" if 'eval_hours' in p else "")]
    if r.get("targets"):
        lines += ["", "targets: " + ", ".join(f"{k} {v['value']:.3f} {v['target']} {'met' if v['met'] else 'MISSED'}"
                                              for k, v in r["targets"].items())]
    lines.append(f"wall time {r['wall_s']:.1f} s")
    return lines


def execute(args) -> int:
    from .. import bench
    settings = settings_from_args(args)
    if args.profile:
        print(bench.profile_step(settings, what=args.profile))
        return 0
    result = bench.run(settings)
    if args.out:
        from ..rundir.files import write_json
        write_json(Path(args.out), result)
    print(json.dumps(result, indent=2) if args.json else "\n".join(render(result)))
    return 0
