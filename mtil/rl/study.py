"""The RL study's grid: variants x seeds of `mtil rl`, resumable, a few processes at a time.

    python -m mtil.rl.study rl/minatar --seeds 0,1,2,3,4 --out runs/rl/study [--jobs 2] [--set k=v ...]

runs `mtil rl rl/minatar_<variant>.yaml --set seed=S --out OUT/<variant>_s<S>` for every variant and seed. The
1-expert run of a seed starts from its grow run's snapshot at the growth point (`--start-from`, bit-identical to
running it from the start), so it waits for that grow run. With `--branch-from 1_expert` (the switch study,
`python -m mtil.rl.study rl/minatar_switch --variants 1_expert,grow,grow_zero,fresh --branch-from 1_expert`) the
1-expert (continued) run goes first and every other arm of its seed starts from its snapshot at the switch. Rerunning the command skips finished runs and resumes
stopped ones from their checkpoints. Each process's CPU time (user + system) is appended to OUT/cpu_times.jsonl,
its output to OUT/logs/<run>.log. Environment (XLA_FLAGS, OMP_NUM_THREADS) and niceness are inherited.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("mtil.rl.study")
VARIANTS = ("grow", "1_expert", "2_experts", "no_moe", "grow_zero", "fresh")
# the run a variant starts from (--start-from), by the source variant
BRANCHES = {"grow": ("1_expert",), "1_expert": ("grow", "grow_zero", "fresh")}


def run_state(run: Path) -> str:
    """done | stopped (has a checkpoint) | new."""
    try:
        if json.loads((run / "results.json").read_text()).get("complete"):
            return "done"
    except (OSError, ValueError):
        pass
    return "stopped" if (run / "checkpoint.npz").exists() else "new"


def plan(prefix: str, variants, seeds, out: Path, overrides, source: str = "grow") -> list[dict]:
    """Jobs in start order; a job of a variant in BRANCHES[source] depends on the source job of its seed when
    both are in the grid (default: the 1-expert job on the grow job)."""
    sets = [a for kv in overrides for a in ("--set", kv)]
    jobs = []
    for seed in seeds:
        for v in sorted(variants, key=lambda v: (v != source, VARIANTS.index(v))):
            run = out / f"{v}_s{seed}"
            branched = v in BRANCHES.get(source, ()) and source in variants
            after = out / f"{source}_s{seed}" if branched else None
            jobs.append({"name": run.name, "run": run, "after": after,
                         "cmd": [sys.executable, "-m", "mtil", "rl", f"{prefix}_{v}.yaml", "--out", str(run),
                                 *sets, "--set", f"seed={seed}"]})
    return jobs


def command(job: dict) -> list[str]:
    state = run_state(job["run"])
    if state == "stopped":
        return [sys.executable, "-m", "mtil", "rl", "--out", str(job["run"]), "--resume"]
    if job["after"] is not None:
        return [*job["cmd"], "--start-from", str(job["after"])]
    return job["cmd"]


def execute(jobs: list[dict], out: Path, parallel: int) -> int:
    """Run the jobs (skipping finished ones), at most `parallel` at a time; returns the number that failed."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    pending = [j for j in jobs if run_state(j["run"]) != "done"]
    running: dict[int, tuple[dict, float, object]] = {}
    failed = 0
    while pending or running:
        ready = [j for j in pending if j["after"] is None or run_state(j["after"]) == "done"]
        while ready and len(running) < parallel:
            job = ready.pop(0)
            pending.remove(job)
            logf = open(out / "logs" / f"{job['name']}.log", "a")
            cmd = command(job)
            log.info("start %s: %s", job["name"], " ".join(cmd[2:]))
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
            running[proc.pid] = (job, time.time(), logf)
        if not running:
            blocked = ", ".join(j["name"] for j in pending)
            log.error("cannot start %s: the runs they start from did not finish", blocked)
            return failed + len(pending)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        job, t0, logf = running.pop(pid)
        logf.close()
        code = os.waitstatus_to_exitcode(status)
        row = {"run": job["name"], "exit": code, "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
               "wall_s": round(time.time() - t0, 1), "state": run_state(job["run"])}
        with open(out / "cpu_times.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("end %s: %s", job["name"], row)
        if code != 0:
            failed += 1
            pending = [j for j in pending if j["after"] != job["run"]]
    return failed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prefix", help="config prefix: <prefix>_<variant>.yaml, e.g. rl/minatar")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=2, help="processes at a time")
    p.add_argument("--branch-from", default="grow", choices=sorted(BRANCHES),
                   help="the variant whose snapshot the others of its seed start from (see BRANCHES)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown or args.jobs < 1:
        p.error(f"variants must be among {', '.join(VARIANTS)} and --jobs >= 1")
    out = Path(args.out)
    jobs = plan(args.prefix, variants, [int(s) for s in args.seeds.split(",")], out, args.overrides,
                args.branch_from)
    return 1 if execute(jobs, out, args.jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
