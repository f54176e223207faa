"""Router specialisation by stage: Fig. 4 of seed 000 as a statistic over many greedy episodes.

The trained agent plays `specialisation.episodes` greedy episodes (running statistics frozen), each to its end
or `specialisation.max_steps`. In every MoE
block the router distributions of all steps spent in stage 0 are averaged into p0, those of stage >= 1 into
p1 (pooled over the episodes), and the block's specialisation is the Jensen-Shannon divergence JS(p0, p1) in
bits: 0 when the router gives both stages the same mixture on average, 1 when they use disjoint experts, and
the same whichever expert is called which. Control ("random router"): the same trained network on the same
observations with every router kernel replaced by a Gaussian matrix of the trained kernel's Frobenius norm
(router biases kept), `specialisation.random_routers` draws; the routers of later blocks then see the inputs of
the re-routed network. A router that separates the stages only as well as a random one of the same scale has
learned nothing about them that its input did not already show.

Also recorded, as diagnostics of the inputs: the rms of the normalised observation entries per stage before
and after the clip, the fraction of entries the clip changed, and the newest expert's mean weight per stage.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.distance import jensenshannon

from . import nets


def js_bits(p, q) -> float:
    """Jensen-Shannon divergence of two distributions over the experts, base 2 (scipy gives its square root)."""
    return float(jensenshannon(np.asarray(p, float), np.asarray(q, float), base=2) ** 2)


def _router_kernels(params) -> list[tuple]:
    """Paths (tower, block) of every MoE router in a parameter tree."""
    p = params["params"]
    return [(tower, name) for tower in ("actor", "critic") for name in sorted(p.get(tower, {}))
            if name.startswith("block") and "moe" in p[tower][name]]


def redraw_routers(params, key, draws: int):
    """`draws` copies of `params` stacked on a leading axis, each router kernel replaced by a Gaussian matrix
    with the trained kernel's Frobenius norm (biases and every other weight kept)."""
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (draws, *x.shape)), params)
    for i, (tower, block) in enumerate(_router_kernels(params)):
        kernel = params["params"][tower][block]["moe"]["router"]["kernel"]
        noise = jax.random.normal(jax.random.fold_in(key, i), (draws, *kernel.shape))
        scale = jnp.linalg.norm(kernel) / jnp.linalg.norm(noise.reshape(draws, -1), axis=1)
        router = stacked["params"][tower][block]["moe"]["router"]
        stacked["params"][tower][block]["moe"]["router"] = {**router, "kernel": noise * scale[:, None, None]}
    return stacked


def measure(env, net, params, norm, obs_clip, key, episodes: int, max_steps: int, random_routers: int) -> dict:
    """The statistic and its control for one trained network (see the module docstring)."""
    k_draw, k_eps = jax.random.split(key)
    random_params = redraw_routers(params, k_draw, random_routers) if random_routers else None

    def routers(prm, x):
        (logits, _), inter = net.apply(prm, x, mutable=["intermediates"])
        return logits, nets.router_probs(inter.get("intermediates", {}))

    def episode(k):
        k_reset, k_run = jax.random.split(k)
        obs, env_state = env.reset(k_reset)

        def step(carry):
            t, obs, env_state, alive, acc = carry
            k_step = jax.random.fold_in(k_run, t)
            raw = nets.obs_norm_apply(norm, obs[None])
            x = raw if obs_clip is None else jnp.clip(raw, -obs_clip, obs_clip)
            logits, probs = routers(params, x)
            one_hot = jax.nn.one_hot(jnp.minimum(env.stage(env_state), 1), 2) * alive   # (2,) stage of the step
            acc = dict(acc)
            acc["steps"] = acc["steps"] + one_hot
            acc["sq_raw"] = acc["sq_raw"] + one_hot * jnp.mean(raw ** 2)
            acc["sq"] = acc["sq"] + one_hot * jnp.mean(x ** 2)
            acc["clipped"] = acc["clipped"] + one_hot * jnp.mean(raw != x)
            acc["trained"] = {b: acc["trained"][b] + one_hot[:, None] * p[0] for b, p in probs.items()}
            if random_params is not None:
                rand = jax.vmap(lambda prm: routers(prm, x)[1])(random_params)
                acc["random"] = {b: acc["random"][b] + one_hot[None, :, None] * p[:, 0][:, None]
                                 for b, p in rand.items()}
            obs2, env_state2, _, done, _ = env.step(k_step, env_state, jnp.argmax(logits[0]))
            return t + 1, obs2, env_state2, alive & ~done, acc

        _, probs0 = routers(params, jnp.zeros((1, *env.obs_shape)))
        acc = {"steps": jnp.zeros(2), "sq_raw": jnp.zeros(2), "sq": jnp.zeros(2), "clipped": jnp.zeros(2),
               "trained": {b: jnp.zeros((2, p.shape[-1])) for b, p in probs0.items()},
               "random": {b: jnp.zeros((random_routers, 2, p.shape[-1])) for b, p in probs0.items()}
               if random_params is not None else {}}
        # until the episode ends (or max_steps): under vmap the loop runs as long as the longest episode
        *_, acc = jax.lax.while_loop(lambda c: (c[0] < max_steps) & c[3], step,
                                     (jnp.int32(0), obs, env_state, jnp.bool_(True), acc))
        return acc

    per_episode = jax.device_get(jax.jit(jax.vmap(episode))(jax.random.split(k_eps, episodes)))
    total = jax.tree.map(lambda x: np.asarray(x, float).sum(0), per_episode)
    steps = total["steps"]
    out = {"episodes": episodes, "reaching_stage1": int((per_episode["steps"][:, 1] > 0).sum()),
           "steps": steps.tolist(), "random_routers": random_routers, "obs_clip": obs_clip,
           "obs_rms_unclipped": _per_stage(np.sqrt(total["sq_raw"] / np.maximum(steps, 1)), steps),
           "obs_rms": _per_stage(np.sqrt(total["sq"] / np.maximum(steps, 1)), steps),
           "clipped_fraction": _per_stage(total["clipped"] / np.maximum(steps, 1), steps), "blocks": {}}
    both = bool((steps > 0).all())
    for block, sums in total["trained"].items():
        mean = sums / np.maximum(steps, 1)[:, None]
        row = {"experts": int(mean.shape[1]), "p0": mean[0].tolist(), "p1": mean[1].tolist(),
               "js": js_bits(mean[0], mean[1]) if both else None,
               "newest": [float(mean[0, -1]), float(mean[1, -1])] if both else None}
        if block in total["random"]:
            rmean = total["random"][block] / np.maximum(steps, 1)[None, :, None]
            row["random_js"] = [js_bits(m[0], m[1]) for m in rmean] if both else None
        out["blocks"][block] = row
    return out


def _per_stage(values, steps) -> list:
    return [float(v) if n > 0 else None for v, n in zip(values, steps)]
