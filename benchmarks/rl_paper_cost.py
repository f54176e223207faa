"""CPU cost of the network part of one PPO environment step at the paper's sizes (`rl/craftax_*.yaml`), to estimate
the GPU cost of the paper's setting from a measurement.

Per environment step the PPO loop runs one forward pass (the rollout) and, in each of `ppo.epochs` epochs, one
forward + backward + Adam step of the clipped PPO loss for that sample (every sample is in one minibatch per
epoch). Both are timed here (process CPU time, median of `--rounds`) on `--batch` random observations of the
config's environment shape, for 1 expert and for 2 experts per MoE block; the per-sample cost is assumed constant
in the batch size (a CPU core is saturated at small batches). The environment's own step is not timed (Craftax's
rate on this CPU is in DESIGN.md §9).

    python benchmarks/rl_paper_cost.py [--batch 32] [--rounds 3] [--obs-shape 130,110,3] [--json FILE]

--obs-shape skips building the environment (Craftax-Pixels-v1's observation is 130 x 110 x 3; building it first
renders Craftax's texture cache, minutes of CPU when the package has none).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default="rl/craftax_grow.yaml")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--obs-shape", default=None, metavar="H,W,C",
                   help="the observation shape, instead of building the environment to read it")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from mtil.rl import envs, nets, optim, ppo, train

    cfg = train.load_config(args.config)
    shape = (tuple(int(x) for x in args.obs_shape.split(",")) if args.obs_shape
             else envs.make(cfg.env).obs_shape)
    c, b = cfg.ppo, args.batch
    adam = dict(b1=0.9, b2=0.999, eps=c.adam_eps, max_norm=c.max_grad_norm)
    key = jax.random.PRNGKey(0)
    obs = jax.random.uniform(key, (b, *shape))
    out = {"config": args.config, "obs_shape": list(shape), "batch": b, "epochs": c.epochs,
           "hidden": cfg.net.hidden, "torso": cfg.net.torso, "device": jax.devices()[0].platform, "experts": {}}
    for experts in (1, 2):
        net = nets.build(cfg.net, cfg.moe, 17, experts)
        params = jax.jit(net.init)(key, obs[:1])
        opt = optim.init(params)
        batch = ppo.Transition(obs, jnp.zeros(b, jnp.int32), jnp.zeros(b), jnp.zeros(b), jnp.zeros(b), jnp.zeros(b))
        forward = jax.jit(lambda prm, x: net.apply(prm, x))

        @jax.jit
        def update(prm, opt):
            def objective(q):
                logits, values = net.apply(q, batch.obs)
                return ppo.loss(logits, values, batch, jnp.ones(b), jnp.ones(b), clip=c.clip, vf_coef=c.vf_coef,
                                ent_coef=c.ent_coef)[0]
            g = jax.grad(objective)(prm)
            return optim.update(g, opt, prm, c.lr, **adam)

        def timed(fn, *a):
            jax.block_until_ready(fn(*a))   # compile
            ts = []
            for _ in range(args.rounds):
                t0 = time.process_time()
                jax.block_until_ready(fn(*a))
                ts.append(time.process_time() - t0)
            return statistics.median(ts)

        f, u = timed(forward, params, obs), timed(update, params, opt)
        per_step = (f + c.epochs * u) / b
        out["experts"][experts] = {"forward_s": f, "update_s": u, "cpu_s_per_env_step": per_step,
                                   "env_steps_per_cpu_s": 1 / per_step}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
