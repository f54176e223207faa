"""PPO as Craftax_Baselines' ppo.py (from purejaxrl) computes it, as one jitted iteration.

An iteration: `num_steps` vectorised env steps (actions sampled from the current policy on running-normalised
observations), GAE, then `epochs` passes of `minibatches` shuffled minibatches of the clipped PPO loss
(clipped value loss, advantages normalised per minibatch), each followed by a clipped Adam step at the
learning rate lr * (1 - (iteration - start) / iterations) when annealed (start 0: Craftax_Baselines' one decay
over the run; a stage switch by step may restart it, `ppo.anneal_over: stage`).
Deviation (needed by SimBa's running normalisation, which the reference lacks): the trajectory stores the
observations normalised with the statistics of the moment they were acted on, so the first epoch's ratio is 1.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import nets, optim


class TrainState(NamedTuple):
    params: Any
    opt: optim.AdamState
    norm: nets.ObsNorm
    env: Any
    obs: jnp.ndarray
    key: jnp.ndarray
    iteration: jnp.ndarray


class Transition(NamedTuple):
    obs: jnp.ndarray
    action: jnp.ndarray
    log_prob: jnp.ndarray
    value: jnp.ndarray
    reward: jnp.ndarray
    done: jnp.ndarray


def gae(rewards, values, dones, last_value, gamma: float, lam: float):
    """Generalised advantage estimates and value targets over a (time, env) rollout; `dones[t]` ends the
    episode after step t (the reference's convention: the next value is masked by the step's own done)."""
    def back(carry, x):
        adv, next_value = carry
        reward, value, done = x
        delta = reward + gamma * next_value * (1 - done) - value
        adv = delta + gamma * lam * (1 - done) * adv
        return (adv, value), adv

    _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value), (rewards, values, dones), reverse=True)
    return adv, adv + values


def log_prob_entropy(logits, actions):
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, actions[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    return logp, entropy


def loss(logits, values, batch: Transition, adv, targets, *, clip: float, vf_coef: float, ent_coef: float):
    """Total loss and (value loss, actor loss, entropy) of one minibatch, given the network's outputs."""
    logp, entropy = log_prob_entropy(logits, batch.action)
    v_clipped = batch.value + jnp.clip(values - batch.value, -clip, clip)
    value_loss = 0.5 * jnp.maximum(jnp.square(values - targets), jnp.square(v_clipped - targets)).mean()
    ratio = jnp.exp(logp - batch.log_prob)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    actor_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv).mean()
    ent = entropy.mean()
    return actor_loss + vf_coef * value_loss - ent_coef * ent, (value_loss, actor_loss, ent)


def make_iteration(net, venv, ppo_cfg, iterations: int, obs_clip: float | None = None, start: int = 0):
    """jit-able `iteration(state) -> (state, metrics)` for network `net` on vectorised env `venv`; the network
    sees observations normalised with running statistics and clipped to +-obs_clip (None: not clipped). The
    annealed lr falls linearly from lr at iteration `start` to 0 at `start + iterations`."""
    c = ppo_cfg
    batch_size = c.num_envs * c.num_steps
    adam = dict(b1=0.9, b2=0.999, eps=c.adam_eps, max_norm=c.max_grad_norm)

    def policy(params, obs):
        (logits, value), inter = net.apply(params, obs, mutable=["intermediates"])
        return logits, value, nets.router_probs(inter.get("intermediates", {}))

    def env_step(carry, _):
        params, norm, env_state, obs, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        norm = nets.obs_norm_update(norm, obs)
        x = nets.obs_norm_apply(norm, obs, obs_clip)
        logits, value, routers = policy(params, x)
        action = jax.random.categorical(k_act, logits)
        logp, _ = log_prob_entropy(logits, action)
        next_obs, env_state, reward, done, info = venv.step(k_env, env_state, action)
        step = Transition(x, action, logp, value, reward, done.astype(jnp.float32))
        stats = {k: v for k, v in info.items() if k not in ("stage",)}
        stats["router"] = {k: v.mean(0) for k, v in routers.items()}
        return (params, norm, env_state, next_obs, key), (step, stats)

    def iteration(state: TrainState):
        carry = (state.params, state.norm, state.env, state.obs, state.key)
        (params, norm, env_state, obs, key), (traj, stats) = jax.lax.scan(env_step, carry, None, c.num_steps)
        _, last_value, _ = policy(params, nets.obs_norm_apply(norm, obs, obs_clip))
        adv, targets = gae(traj.reward, traj.value, traj.done, last_value, c.gamma, c.gae_lambda)
        frac = 1.0 - (state.iteration - start) / iterations if c.anneal_lr else 1.0
        lr = c.lr * frac

        def minibatch(carry, mb):
            params, opt = carry
            batch, mb_adv, mb_targets = mb

            def objective(p):
                logits, values = net.apply(p, batch.obs)
                return loss(logits, values, batch, mb_adv, mb_targets, clip=c.clip, vf_coef=c.vf_coef,
                            ent_coef=c.ent_coef)

            (total, parts), grads = jax.value_and_grad(objective, has_aux=True)(params)
            params, opt = optim.update(grads, opt, params, lr, **adam)
            return (params, opt), (total, *parts)

        def epoch(carry, _):
            params, opt, key = carry
            key, k_perm = jax.random.split(key)
            perm = jax.random.permutation(k_perm, batch_size)
            data = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), (traj, adv, targets))
            data = jax.tree.map(lambda x: jnp.take(x, perm, axis=0).reshape((c.minibatches, -1) + x.shape[1:]),
                                data)
            (params, opt), losses = jax.lax.scan(minibatch, (params, opt), data)
            return (params, opt, key), losses

        (params, opt, key), losses = jax.lax.scan(epoch, (params, state.opt, key), None, c.epochs)
        finished = stats["returned"].astype(jnp.float32)
        n = finished.sum()

        def per_episode(x):
            return jnp.where(n > 0, (x * finished).sum() / jnp.maximum(n, 1), jnp.nan)

        metrics = {k: per_episode(v) for k, v in stats.items() if k not in ("returned", "router")}
        metrics["episodes"] = n
        metrics["lr"] = lr
        metrics["router"] = {k: v.mean(0) for k, v in stats["router"].items()}
        metrics.update(zip(("loss", "value_loss", "actor_loss", "entropy"), (x.mean() for x in losses)))
        new = TrainState(params, opt, norm, env_state, obs, key, state.iteration + 1)
        return new, metrics

    return iteration


def init_state(net, venv, obs_shape, key, params=None) -> TrainState:
    """Fresh state: parameters (unless given), optimizer, observation statistics and reset environments."""
    k_net, k_env, k_run = jax.random.split(key, 3)
    if params is None:
        params = jax.jit(net.init)(k_net, jnp.zeros((1, *obs_shape)))
    obs, env_state = jax.jit(venv.reset)(k_env)
    state = TrainState(params, optim.init(params), nets.obs_norm_init(obs_shape), env_state, obs, k_run,
                       jnp.int32(0))
    # no weakly typed leaves (Python ints in env states): the iteration returns strong types, and a weak one
    # in the first state would compile the whole iteration a second time
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), state)
