"""Global-norm clipping then Adam, with one step count per parameter entry (so grown entries get their own).

For an unchanged network this computes exactly optax.chain(clip_by_global_norm(c), adam(lr, b1, b2, eps)),
the optimizer of Craftax_Baselines' PPO. `optax.adam` keeps one step count for the whole tree: an expert added
after t steps would start with zero moments but the bias correction 1 - b^t of step t, so its first update is
(1-b1)/sqrt(1-b2) ~ 3.2 times Adam's unit step. Here the count is per entry and `grow_like` gives new entries
count 0 with zero moments: their first update is the one a fresh Adam would make.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class AdamState(NamedTuple):
    mu: dict
    nu: dict
    count: dict  # int32, same shapes as the parameters


def init(params) -> AdamState:
    zeros = jax.tree.map(jnp.zeros_like, params)
    return AdamState(zeros, jax.tree.map(jnp.zeros_like, params),
                     jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.int32), params))


def clip_by_global_norm(grads, max_norm: float):
    """optax.clip_by_global_norm: unchanged below max_norm, else rescaled to norm max_norm."""
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    keep = norm < max_norm
    return jax.tree.map(lambda g: jax.lax.select(keep, g, (g / norm.astype(g.dtype)) * max_norm), grads)


def update(grads, state: AdamState, params, lr, *, b1: float, b2: float, eps: float, max_norm: float):
    """One clipped Adam step; returns (new params, new state)."""
    grads = clip_by_global_norm(grads, max_norm)
    mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
    nu = jax.tree.map(lambda g, v: (1 - b2) * g * g + b2 * v, grads, state.nu)
    count = jax.tree.map(lambda c: c + 1, state.count)

    def step(p, m, v, c):
        c = c.astype(m.dtype)
        m_hat = m / (1 - b1 ** c)
        v_hat = v / (1 - b2 ** c)
        return p - lr * (m_hat / (jnp.sqrt(v_hat) + eps))

    return jax.tree.map(step, params, mu, nu, count), AdamState(mu, nu, count)


def grow_like(old, new):
    """`new`'s shapes filled with `old` in the leading slice of the one axis that grew (leaves of equal shape
    are taken from `old` whole). Used for parameters (new = fresh init) and for moments / counts (new = zeros)."""
    def fill(o, n):
        if o.shape == n.shape:
            return o
        axes = [i for i, (a, b) in enumerate(zip(o.shape, n.shape)) if a != b]
        if o.ndim != n.ndim or len(axes) != 1 or o.shape[axes[0]] > n.shape[axes[0]]:
            raise ValueError(f"cannot grow a {o.shape} leaf into {n.shape}")
        index = tuple(slice(0, s) for s in o.shape)
        return n.at[index].set(o)
    return jax.tree.map(fill, old, new)
