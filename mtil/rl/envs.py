"""Environments: the two-stage MinAtar stream (CPU) and Craftax (GPU), batched with optimistic resets.

Every single environment here has reset(key) -> (obs, state) and step(key, state, action) -> (obs, state,
reward, done, info) without auto-reset, and `stage(state)`: the distribution the agent is in (two-stage
MinAtar: 0 Breakout, 1 SpaceInvaders; Craftax: `player_level`, 0 overworld, 1 dungeon, ...).
`VecEnv` batches one, resets finished episodes the way Craftax_Baselines' OptimisticResetVecEnvWrapper does
(num_envs / reset_ratio fresh worlds per step, shared among the finished episodes; ratio 1 = a fresh world for
every episode) and logs episode return, length and the highest stage reached, as its LogWrapper does, plus the
return split by the stage the agent was in when it earned it (stage 0 / stage >= 1).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..errors import MtilError


def _select(cond, a, b):
    return jax.tree.map(lambda x, y: jax.lax.select(cond, x, y), a, b)


class TwoStageState(NamedTuple):
    first: Any
    second: Any
    stage: jnp.ndarray
    score: jnp.ndarray
    time: jnp.ndarray


# layout "shared": the channel of the shared 6 that each game's own channels go to, by role (player, own
# projectile, motion cue, targets, then SpaceInvaders' alien direction right and enemy bullets)
SHARED_CHANNELS = (
    (0, 1, 2, 3),         # Breakout: paddle, ball, trail, bricks
    (0, 3, 2, 4, 1, 5),   # SpaceInvaders: cannon, aliens, aliens moving left, aliens moving right, own / enemy bullets
)


class TwoStageMinAtar:
    """Breakout until the agent has scored `switch_at` in the episode, then SpaceInvaders in the same episode.

    Observation, `layout` "separate": (10, 10, 10), Breakout's 4 channels then SpaceInvaders' 6, the inactive
    game's zero (every channel belongs to one game, so the active game can be read off which channels are lit);
    "shared": (10, 10, 6), both games write into the same channels by role (SHARED_CHANNELS: the paddle and the
    cannon share channel 0, ball and own bullets 1, trail and left-moving aliens 2, bricks and aliens 3).
    Actions: noop, left, right, fire (fire does nothing in Breakout). The episode ends when the active game
    ends or after `max_steps` steps.

    `stages`: "stream" (the above), "first" (Breakout episodes, never switching), "second" (SpaceInvaders
    episodes from the first step) or "either" (each reset draws "first" or "second" with probability 1/2; the
    specialisation statistic's episodes when training switches the stage by step, `env.switch_step`).
    """
    actions = 4
    STAGES = ("stream", "first", "second", "either")

    def __init__(self, switch_at: int, max_steps: int, layout: str = "separate", stages: str = "stream"):
        if stages not in self.STAGES:
            raise ValueError(f"stages must be one of {self.STAGES}, got {stages!r}")
        from gymnax.environments.minatar.breakout import MinBreakout
        from gymnax.environments.minatar.space_invaders import MinSpaceInvaders
        self.games = (MinBreakout(use_minimal_action_set=False), MinSpaceInvaders(use_minimal_action_set=False))
        self.params = tuple(g.default_params for g in self.games)
        self.action_codes = jnp.array([0, 1, 3, 5])
        self.switch_at, self.max_steps, self.layout = float(switch_at), int(max_steps), layout
        self.stages = stages
        self.obs_shape = (10, 10, 10 if layout == "separate" else 6)

    def _obs(self, first, second, stage):
        o1 = self.games[0].get_obs(first) * (stage == 0)
        o2 = self.games[1].get_obs(second) * (stage == 1)
        if self.layout == "separate":
            return jnp.concatenate([o1, o2], axis=-1)
        shared = jnp.zeros(self.obs_shape)
        for o, channels in zip((o1, o2), SHARED_CHANNELS):
            shared = shared.at[..., jnp.array(channels)].add(o)
        return shared

    def reset(self, key):
        k1, k2 = jax.random.split(key)
        _, first = self.games[0].reset_env(k1, self.params[0])
        _, second = self.games[1].reset_env(k2, self.params[1])
        if self.stages == "either":
            start = jax.random.bernoulli(jax.random.fold_in(key, 3)).astype(jnp.int32)
        else:
            start = jnp.int32(1 if self.stages == "second" else 0)
        state = TwoStageState(first, second, start, jnp.float32(0), jnp.int32(0))
        return self._obs(first, second, state.stage), state

    def step(self, key, state: TwoStageState, action):
        k1, k2 = jax.random.split(key)
        code = self.action_codes[action]
        _, first, r1, end1, _ = self.games[0].step_env(k1, state.first, code, self.params[0])
        _, second, r2, end2, _ = self.games[1].step_env(k2, state.second, code, self.params[1])
        in_first = state.stage == 0
        score = state.score + jnp.where(in_first, r1, 0.0)
        switch = in_first & (score >= self.switch_at) & (self.stages == "stream")
        stage = jnp.where(switch, 1, state.stage).astype(jnp.int32)
        first = _select(in_first, first, state.first)
        second = _select(in_first, state.second, second)
        time = state.time + 1
        done = jnp.where(in_first, end1 & ~switch, end2) | (time >= self.max_steps)
        new = TwoStageState(first, second, stage, score, time)
        return self._obs(first, second, stage), new, jnp.where(in_first, r1, r2), done, {}

    @staticmethod
    def stage(state: TwoStageState):
        return state.stage


class Craftax:
    """Craftax (pixels or symbolic) without auto-reset; the stage is `player_level`."""

    def __init__(self, name: str):
        from craftax.craftax_env import make_craftax_env_from_name
        self.env = make_craftax_env_from_name(name, False)
        self.params = self.env.default_params
        self.actions = int(self.env.action_space(self.params).n)
        self.obs_shape = tuple(self.env.observation_space(self.params).shape)

    def reset(self, key):
        return self.env.reset(key, self.params)

    def step(self, key, state, action):
        obs, state, reward, done, info = self.env.step(key, state, action, self.params)
        achievements = {k: v for k, v in info.items() if k.startswith("Achievements/")}
        return obs, state, reward, done, achievements

    @staticmethod
    def stage(state):
        return state.player_level


def make(env_cfg, stages: str = "stream"):
    """The single environment named by `env.name` (`stages`: which stages a two-stage MinAtar episode plays)."""
    if env_cfg.name == "two_stage_minatar":
        return TwoStageMinAtar(env_cfg.switch_at, env_cfg.max_steps, env_cfg.layout, stages)
    if env_cfg.name.startswith("Craftax"):
        try:
            return Craftax(env_cfg.name)
        except (ValueError, KeyError) as e:
            raise MtilError(f"env.name '{env_cfg.name}' is not a Craftax environment ({e}); use "
                            f"Craftax-Pixels-v1, Craftax-Symbolic-v1 or two_stage_minatar") from None
    raise MtilError(f"env.name '{env_cfg.name}' is unknown; use two_stage_minatar or a Craftax name such as "
                    f"Craftax-Pixels-v1")


class EpisodeLog(NamedTuple):
    env: Any
    ret: jnp.ndarray
    ret_later: jnp.ndarray  # the part of `ret` earned in stage >= 1
    length: jnp.ndarray
    max_stage: jnp.ndarray


class VecEnv:
    """`num_envs` copies of `env` with optimistic resets and episode logging."""

    def __init__(self, env, num_envs: int, reset_ratio: int):
        if num_envs % reset_ratio:
            raise MtilError(f"env.reset_ratio ({reset_ratio}) must divide ppo.num_envs ({num_envs})")
        self.env, self.num_envs, self.ratio = env, num_envs, reset_ratio
        self.num_resets = num_envs // reset_ratio

    def reset(self, key):
        obs, state = jax.vmap(self.env.reset)(jax.random.split(key, self.num_envs))
        zeros = jnp.zeros(self.num_envs)
        return obs, EpisodeLog(state, zeros, zeros, zeros.astype(jnp.int32), jax.vmap(self.env.stage)(state))

    def step(self, key, log: EpisodeLog, action):
        """One step of every environment. `info` holds, per environment, the episode's running statistics
        (read where `returned`): return, its stage-0 and stage >= 1 parts (a reward belongs to the stage the
        step started in), length, highest stage reached and whether it reached stage 1."""
        k_step, k_reset, k_pick = jax.random.split(key, 3)
        earned_later = jax.vmap(self.env.stage)(log.env) >= 1
        obs, state, reward, done, info = jax.vmap(self.env.step)(
            jax.random.split(k_step, self.num_envs), log.env, action)
        ret, length = log.ret + reward, log.length + 1
        ret_later = log.ret_later + jnp.where(earned_later, reward, 0.0)
        stage = jax.vmap(self.env.stage)(state)
        max_stage = jnp.maximum(log.max_stage, stage)
        info = {**info, "returned": done, "return": ret, "return_stage0": ret - ret_later,
                "return_stage1": ret_later, "length": length, "max_stage": max_stage,
                "reached_stage1": (max_stage >= 1).astype(jnp.float32), "stage": stage}

        obs_re, state_re = jax.vmap(self.env.reset)(jax.random.split(k_reset, self.num_resets))
        # which finished episode gets which fresh world: every one its own when fewer finished than worlds
        # exist, else a random distinct subset of the finished ones; the rest share worlds round-robin
        owners = jax.lax.select(done.sum() < self.num_resets,
                                jnp.argsort(done)[-self.num_resets:],
                                jax.random.choice(k_pick, self.num_envs, (self.num_resets,), replace=False,
                                                  p=done.astype(jnp.float32)))
        source = jnp.arange(self.num_resets).repeat(self.ratio).at[owners].set(jnp.arange(self.num_resets))
        obs_re, state_re = obs_re[source], jax.tree.map(lambda x: x[source], state_re)

        def pick(d, fresh, old):
            return jax.tree.map(lambda a, b: jax.lax.select(d, a, b), fresh, old)

        state = jax.vmap(pick)(done, state_re, state)
        obs = jax.vmap(pick)(done, obs_re, obs)
        keep = 1 - done
        new_log = EpisodeLog(state, ret * keep, ret_later * keep, (length * keep).astype(jnp.int32),
                             jnp.where(done, jax.vmap(self.env.stage)(state), max_stage))
        return obs, new_log, reward, done, info
