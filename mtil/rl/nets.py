"""SimBa actor-critic (Lee et al. 2024) whose residual blocks can be DynamicMoE blocks.

SimBa (SonyResearch/simba `scale_rl/networks`): encoder = Dense(h, orthogonal 1) -> blocks -> LayerNorm; a
block is x + Dense(h)(ReLU(Dense(4h)(LayerNorm(x)))) with He-normal kernels; observations are normalised with
running statistics. The MoE block keeps the LayerNorm and the residual and replaces the MLP by a softmax mixture
of bottleneck experts Dense(hb) -> ReLU -> Dense(h) with one linear router entry per expert (dojeon-ai/
grow_rl_synthetic `MoELayer`: dense softmax over the current experts, no top-k, no balance loss by default).
Parameter matching: `expert_hidden` makes N experts (with their router entries) hold as many parameters as
the dense block's MLP, so K experts match No MoE and 1 expert (sized for K) has 1/K of it.

Actor: 1 block then Dense(actions, orthogonal 0.01); critic: 2 blocks then Dense(1, orthogonal 1), as the
paper (one MoE block in the actor, two in the critic). Pixel inputs go first through Craftax_Baselines'
ActorCriticConv trunk (3 x [Conv 5x5 32, ReLU, max-pool 3/3]), shared by actor and critic.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

HE = nn.initializers.he_normal()
HE_STACKED = nn.initializers.he_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))


def expert_hidden(h: int, expansion: int, n: int) -> int:
    """Width hb such that n experts (2*h*hb + hb + h weights each, plus h + 1 router weights) hold at most the
    parameters of the dense block MLP (h*e*h + e*h + e*h*h + h, e = expansion)."""
    dense = 2 * h * expansion * h + expansion * h + h
    return max(1, math.floor((dense / n - (h + 1) - h) / (2 * h + 1)))


class MoEMLP(nn.Module):
    """Softmax mixture of `experts` bottleneck experts; returns (output, router probabilities)."""
    hidden: int
    experts: int
    expert_hidden: int

    @nn.compact
    def __call__(self, z):
        h, e, hb = self.hidden, self.experts, self.expert_hidden
        probs = jax.nn.softmax(nn.Dense(e, name="router")(z), axis=-1)
        w1 = self.param("w1", HE_STACKED, (e, h, hb))
        b1 = self.param("b1", nn.initializers.zeros, (e, hb))
        w2 = self.param("w2", HE_STACKED, (e, hb, h))
        b2 = self.param("b2", nn.initializers.zeros, (e, h))
        inner = jax.nn.relu(jnp.einsum("bh,ehk->bek", z, w1) + b1)
        out = jnp.einsum("bek,ekh->beh", inner, w2) + b2
        return jnp.einsum("be,beh->bh", probs, out), probs


class Block(nn.Module):
    """SimBa residual block; `experts` > 0 makes its MLP a MoE (router probabilities are sown)."""
    hidden: int
    expansion: int
    experts: int
    expert_hidden: int

    @nn.compact
    def __call__(self, x):
        z = nn.LayerNorm()(x)
        if self.experts:
            y, probs = MoEMLP(self.hidden, self.experts, self.expert_hidden, name="moe")(z)
            self.sow("intermediates", "router", probs)
        else:
            up = nn.Dense(self.hidden * self.expansion, kernel_init=HE)(z)
            y = nn.Dense(self.hidden, kernel_init=HE)(jax.nn.relu(up))
        return x + y


class Encoder(nn.Module):
    hidden: int
    expansion: int
    blocks: int
    experts: int
    expert_hidden: int

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.hidden, kernel_init=nn.initializers.orthogonal(1.0))(x)
        for i in range(self.blocks):
            x = Block(self.hidden, self.expansion, self.experts, self.expert_hidden, name=f"block{i}")(x)
        return nn.LayerNorm()(x)


class ActorCritic(nn.Module):
    """obs (batch, *shape) -> (action logits, value)."""
    actions: int
    torso: str
    hidden: int
    expansion: int
    actor_blocks: int
    critic_blocks: int
    experts: int
    expert_hidden: int

    @nn.compact
    def __call__(self, obs):
        x = obs
        if self.torso == "conv":
            for _ in range(3):
                x = nn.max_pool(jax.nn.relu(nn.Conv(32, (5, 5))(x)), (3, 3), strides=(3, 3))
        x = x.reshape((x.shape[0], -1))
        enc = dict(hidden=self.hidden, expansion=self.expansion, experts=self.experts,
                   expert_hidden=self.expert_hidden)
        a = Encoder(blocks=self.actor_blocks, name="actor", **enc)(x)
        logits = nn.Dense(self.actions, kernel_init=nn.initializers.orthogonal(0.01), name="pi")(a)
        c = Encoder(blocks=self.critic_blocks, name="critic", **enc)(x)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="v")(c)
        return logits, value[..., 0]


def build(net_cfg, moe_cfg, actions: int, experts: int) -> ActorCritic:
    """The network of a config with `experts` experts per MoE block (0 = dense SimBa blocks)."""
    hb = 0
    if experts:
        match = moe_cfg.match_experts or moe_cfg.experts_end
        hb = moe_cfg.expert_hidden or expert_hidden(net_cfg.hidden, net_cfg.expansion, match)
    return ActorCritic(actions, net_cfg.torso, net_cfg.hidden, net_cfg.expansion, net_cfg.actor_blocks,
                       net_cfg.critic_blocks, experts, hb)


def router_probs(intermediates) -> dict[str, jnp.ndarray]:
    """{'critic.block0': probs (batch, experts), ...} from `apply(..., mutable=['intermediates'])`."""
    out = {}
    for tower in ("actor", "critic"):
        for name, block in sorted(intermediates.get(tower, {}).items()):
            out[f"{tower}.{name}"] = block["router"][0]
    return out


# ---------------------------------------------------------------------------------- running observation norm
class ObsNorm(NamedTuple):
    """Running mean / variance (SimBa's RunningMeanStd: parallel update, count starts at 1e-4)."""
    mean: jnp.ndarray
    var: jnp.ndarray
    count: jnp.ndarray


def obs_norm_init(shape) -> ObsNorm:
    return ObsNorm(jnp.zeros(shape), jnp.ones(shape), jnp.asarray(1e-4))


def obs_norm_update(norm: ObsNorm, batch) -> ObsNorm:
    b_mean, b_var, n = batch.mean(0), batch.var(0), batch.shape[0]
    delta = b_mean - norm.mean
    total = norm.count + n
    m2 = norm.var * norm.count + b_var * n + jnp.square(delta) * norm.count * n / total
    return ObsNorm(norm.mean + delta * n / total, m2 / total, total)


def obs_norm_apply(norm: ObsNorm, x, clip: float | None = None, eps: float = 1e-8):
    """(x - mean) / sqrt(var + eps) (SimBa's ObservationNormalizer), clipped to [-clip, clip] unless clip is None
    (SimBa does not clip; `net.obs_clip`)."""
    z = (x - norm.mean) / jnp.sqrt(norm.var + eps)
    return z if clip is None else jnp.clip(z, -clip, clip)
