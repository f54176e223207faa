"""`mtil rl CONFIG [--set k=v] --out DIR [--resume]`: one PPO run of the DynamicMoE RL study (seed 000, 3.2).
`mtil rl --compare RUN_DIR... --out DIR`: the variants x seeds comparison (tables with bootstrap intervals,
Fig. 3 curves, the router-specialisation figure).

Configs: rl/minatar_{no_moe,1_expert,2_experts,grow}.yaml (CPU), rl/craftax_*.yaml (the paper's, GPU).
Needs the optional extra: pip install -e ".[rl]".
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import MtilError


def add_arguments(p) -> None:
    p.add_argument("config", nargs="?", help="YAML config (path or name under configs/, e.g. rl/minatar_grow.yaml); "
                   "default with --resume: the run directory's config.yaml")
    p.add_argument("--out", default=None, help="run directory (default runs/rl/<config name>); with --compare, "
                   "the folder for the comparison figure and table (default runs/rl/compare)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--start-from", default=None, metavar="RUN_DIR",
                   help="start from RUN_DIR's snapshot before its growth (a run of the same config up to "
                   "moe.experts_end, e.g. the 1-expert run from the grow run of its seed): bit-identical, cheaper")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (with a checkpoint) after iteration N; --resume continues")
    p.add_argument("--compare", nargs="+", default=None, metavar="RUN_DIR",
                   help="compare run directories (or folders holding them) instead of training")


def _require_extra():
    try:
        import flax  # noqa: F401
        import gymnax  # noqa: F401
        import jax  # noqa: F401
    except ImportError as e:
        raise MtilError(f"`mtil rl` needs the optional extra ({e.name} is missing): pip install -e \".[rl]\"") \
            from None


def _compilation_cache():
    """Reuse XLA compilations across runs of the same shapes (seeds, resumes): MTIL_JAX_CACHE, default
    ~/.cache/mtil/jax; MTIL_JAX_CACHE= (empty) turns it off."""
    import jax
    folder = os.environ.get("MTIL_JAX_CACHE", str(Path.home() / ".cache" / "mtil" / "jax"))
    if folder:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def execute(args) -> int:
    if args.compare is not None:
        from ..rl import compare
        out = Path(args.out or "runs/rl/compare")
        table, files = compare.compare(args.compare, out)
        print(table)
        print("wrote: " + ", ".join(str(f) for f in files))
        return 0
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # jax's "no TPU" notice at INFO
    _require_extra()
    _compilation_cache()
    from ..rl import figures, train
    if args.stop_after is not None and args.stop_after < 1:
        raise MtilError(f"--stop-after must be a positive iteration count, got {args.stop_after}")
    out = Path(args.out) if args.out else None
    path = args.config
    if path is None:
        if not (args.resume and out is not None and (out / "config.yaml").exists()):
            raise MtilError("give a config (e.g. rl/minatar_grow.yaml), or --resume with the --out of a run")
        path = out / "config.yaml"
    cfg = train.load_config(path, args.overrides)
    if out is None:
        out = Path("runs/rl") / Path(args.config).stem
    results = train.Run(cfg, out, args.resume, args.start_from).execute(args.stop_after)
    final = results["final_return"]
    print(f"{results['label']}: {len(results['curve'])} curve points, final return "
          f"{'n/a' if final is None else f'{final:.2f}'} ({'complete' if results['complete'] else 'stopped'}; "
          f"{out / 'results.json'})")
    if results["complete"]:
        files = figures.plot_run(out)
        print(f"figures: {out / 'figures'} ({len(files)} files)")
    return 0
