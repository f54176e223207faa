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
from ..rundir.claim import claim


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
    p.add_argument("--measure", action="store_true",
                   help="with --out: write trace.json and specialisation.json from the run's last checkpoint (for a "
                   "run stopped with --stop-after)")
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


def _check_same_config(out: Path, cfg, free=()) -> None:
    """--resume continues the run of out/config.yaml: any other value (a changed lr, seed, ...) is refused
    (except keys under the prefixes in `free`)."""
    from .. import config, provenance, rundir
    if not (out / "config.yaml").is_file():
        raise MtilError(f"--resume: {out} has no config.yaml, so its checkpoint cannot be checked against this "
                        "config; start a new --out")
    saved, now = config.flatten(rundir.read_config(out)), config.flatten(config.unwrap(cfg))
    diffs = [f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(saved) | set(now))
             if saved.get(k) != now.get(k) and not k.startswith(tuple(free))]
    if diffs:
        raise MtilError(f"cannot resume {out}: it was started with another config ({provenance.summary(diffs)}); "
                        f"resume it with its own (`mtil rl --resume --out {out}`) or start a new --out")


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
        if not ((args.resume or args.measure) and out is not None and (out / "config.yaml").exists()):
            raise MtilError("give a config (e.g. rl/minatar_grow.yaml), or --resume with the --out of a run")
        path = out / "config.yaml"
    cfg = train.load_config(path, args.overrides)
    if args.measure:
        if out is None or not (out / "config.yaml").exists():
            raise MtilError("--measure needs --out naming a `mtil rl` run directory")
        _check_same_config(out, cfg, free=("trace.", "specialisation."))   # they act only after training
        files = train.Run(cfg, out).measure()
        print("wrote: " + ", ".join(str(f) for f in files))
        return 0
    if out is None:
        out = Path("runs/rl") / Path(args.config).stem
    held = claim(out, args.resume, command="rl")   # not a file, not the user's folder, one writer at a time
    try:
        if args.resume:
            _check_same_config(out, cfg)
        run = train.Run(cfg, out, args.resume, args.start_from)
        if args.start_from is not None and not args.resume:
            run.snapshot_to_start_from()   # a source that does not fit is refused before anything is written
        held.keep()
        results = run.execute(args.stop_after)
    finally:
        held.release()
    final = results["final_return"]
    print(f"{results['label']}: {len(results['curve'])} curve points, final return "
          f"{'n/a' if final is None else f'{final:.2f}'} ({'complete' if results['complete'] else 'stopped'}; "
          f"{out / 'results.json'})")
    if results["complete"]:
        files = figures.plot_run(out)
        print(f"figures: {out / 'figures'} ({len(files)} files)")
    return 0
