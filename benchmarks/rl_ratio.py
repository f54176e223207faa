"""Environment steps per second of the PPO loop (`mtil rl`) over the bare environment, as a ratio, on one machine.

Both sides run the same vectorised environment (`mtil.rl.envs.VecEnv`: the config's env, num_envs, reset ratio)
for num_envs x num_steps steps as one jitted scan: the bare side with uniform random actions, the PPO side is a
whole iteration of `mtil.rl.ppo` (rollout through the network + GAE + epochs x minibatches updates). Rounds
interleave the two (A B, B A, ...); the ratio is the median of per-round ratios, with its IQR. Clock: process CPU
time on a CPU (waiting for a shared core is not counted), wall time with block_until_ready on an accelerator.

    python benchmarks/rl_ratio.py [CONFIG] [--set k=v ...] [--rounds 7] [--iters 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default="rl/minatar_grow.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=3, help="timed calls per side per round")
    p.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args(argv)

    import jax

    from mtil.rl import train

    cfg = train.load_config(args.config, args.overrides)
    run = train.Run(cfg, "/nonexistent")
    run._compile()
    state = run._template()
    venv, n, T = run.venv, cfg.ppo.num_envs, cfg.ppo.num_steps

    def bare(carry):
        log, key = carry

        def step(c, _):
            log, key = c
            key, k_a, k_e = jax.random.split(key, 3)
            _, log, reward, _, _ = venv.step(k_e, log, jax.random.randint(k_a, (n,), 0, run.env.actions))
            return (log, key), reward.sum()

        (log, key), r = jax.lax.scan(step, (log, key), None, T)
        return (log, key), r.sum()

    bare = jax.jit(bare)
    cpu = jax.devices()[0].platform == "cpu"
    clock = time.process_time if cpu else time.perf_counter
    env_carry = (state.env, jax.random.PRNGKey(1))

    def timed(fn, carry):
        out = fn(carry)  # warm-up / compile
        jax.block_until_ready(out)
        carry = out[0]
        t = clock()
        for _ in range(args.iters):
            carry = fn(carry)[0]
        jax.block_until_ready(carry)
        return carry, (clock() - t) / args.iters

    ppo_rates, bare_rates, ratios = [], [], []
    it = run.iteration
    for r in range(args.rounds):
        order = [("ppo", it), ("bare", bare)] if r % 2 == 0 else [("bare", bare), ("ppo", it)]
        rates = {}
        for name, fn in order:
            if name == "ppo":
                state, sec = timed(fn, state)
            else:
                env_carry, sec = timed(fn, env_carry)
            rates[name] = n * T / sec
        ppo_rates.append(rates["ppo"])
        bare_rates.append(rates["bare"])
        ratios.append(rates["ppo"] / rates["bare"])
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    result = {"config": args.config, "overrides": args.overrides, "device": jax.devices()[0].platform,
              "clock": "process_cpu" if cpu else "wall", "num_envs": n, "num_steps": T,
              "ppo_steps_per_s": float(np.median(ppo_rates)), "bare_env_steps_per_s": float(np.median(bare_rates)),
              "ppo_over_bare": float(med), "iqr": [float(q1), float(q3)], "rounds": args.rounds}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
