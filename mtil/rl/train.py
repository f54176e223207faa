"""`mtil rl CONFIG --out DIR [--resume]`: one PPO run in a run directory.

The directory holds config.yaml, results.json (`kind: rl`, the learning curve, the final return; `complete`
once done), events.jsonl (one `grow` line per MoE block growth, one `resume` line per resume),
checkpoint.npz (every `train.checkpoint_every` iterations; --resume continues from it bit-exactly on the same
machine; it and results.json carry the config's hash, `provenance.config_record`, and a checkpoint written by
another config is refused), snapshot-<iteration>.npz (the state just before each growth, when `train.keep_snapshots`),
trace.json (Fig. 4: router weights of the first critic MoE block over one greedy episode, with the stage),
specialisation.json (the router-specialisation statistic and its random-router control, `specialisation`) and
figures/. Every file is written atomically.

Growth: `moe.experts_end - moe.experts_start` times, evenly spaced over the iterations, one expert is added to
every MoE block (new expert and router entry from a fresh init drawn from seed and iteration; old experts keep
their weights and Adam moments, new entries start with zero moments and their own step count). The run's own
PRNG stream is not touched by growth, so the 1-to-K grow run equals the 1-expert run of the same seed up to the
growth point: it continues the 1-expert run's state, as the paper's grow run continues its checkpoint.
`--start-from RUN` uses that: a run whose config equals RUN's up to `moe.experts_end` (and keys that act only
after training) starts from RUN's snapshot at its growth point instead of recomputing the shared part; the
result is bit-identical to running it from the start (tested).

Stage switch by step (`env.switch_step` T, two-stage MinAtar): training sees Breakout episodes only until the
iteration nearest T and SpaceInvaders episodes only after it (every environment is reset there, with a key
that does not depend on the arm); growths then happen at and after the switch, not evenly over the run. At the
switch the run keeps `snapshot-<iteration>.npz` and may restart its network (`train.reset_at_switch`: the
fresh-network control) and its lr decay (`ppo.anneal_over: stage`). The arms of the switch study (1 expert
continued, grow, grow with a zero-output expert, fresh network) differ only from the switch on, so each can
`--start-from` the continued run's snapshot.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import config as mtil_config
from .. import provenance
from ..errors import MtilError
from ..rundir.files import numpy_savez, write_json, write_jsonl, write_text
from . import envs, figures, nets, optim, ppo, specialisation

log = logging.getLogger(__name__)
SCHEMA = "rl/base.yaml"
TRACE_LAYER = "critic.block0"
# keys that do not act on the computation up to the end of training (or only through experts_end's growths),
# ignored when deciding whether a run may --start-from another
START_FROM_IGNORED = ("label", "moe.experts_end", "moe.match_experts", "moe.grow_init", "train.checkpoint_every",
                      "train.keep_snapshots", "train.reset_at_switch", "train.final_window", "trace.",
                      "specialisation.")


def load_config(path, overrides=()) -> mtil_config.Config:
    cfg = mtil_config.load(path, overrides, schema=SCHEMA)
    p = cfg.ppo
    if (p.num_envs * p.num_steps) % p.minibatches:
        raise MtilError(f"ppo.minibatches ({p.minibatches}) must divide ppo.num_envs * ppo.num_steps "
                        f"({p.num_envs * p.num_steps})")
    if p.total_steps < p.num_envs * p.num_steps:
        raise MtilError(f"ppo.total_steps ({p.total_steps}) is less than one iteration "
                        f"(num_envs * num_steps = {p.num_envs * p.num_steps}); raise it")
    if cfg.net.block == "moe" and cfg.moe.experts_end < cfg.moe.experts_start:
        raise MtilError(f"moe.experts_end ({cfg.moe.experts_end}) must be >= moe.experts_start "
                        f"({cfg.moe.experts_start})")
    if cfg.env.switch_step is not None:
        if cfg.env.name != "two_stage_minatar":
            raise MtilError(f"env.switch_step needs env.name two_stage_minatar (got {cfg.env.name}); set "
                            f"env.switch_step: null")
        s, n = switch_iteration(cfg), iterations(cfg)
        if not 1 <= s < n:
            raise MtilError(f"env.switch_step ({cfg.env.switch_step}) falls at iteration {s} of {n}; choose a step "
                            f"inside the run (between one iteration and ppo.total_steps)")
    elif cfg.train.reset_at_switch or cfg.ppo.anneal_over == "stage":
        raise MtilError("train.reset_at_switch and ppo.anneal_over: stage act at a stage switch; set "
                        "env.switch_step")
    return cfg


def variant(cfg) -> str:
    """The study's variant of a config: no_moe, 1_expert, k_experts, grow, grow_zero (zero-output new
    experts) or fresh (network restarted at the stage switch)."""
    if cfg.train.reset_at_switch:
        return "fresh"
    if cfg.net.block == "dense":
        return "no_moe"
    s, e = cfg.moe.experts_start, cfg.moe.experts_end
    if s != e:
        return "grow_zero" if cfg.moe.grow_init == "zero_output" else "grow"
    return "1_expert" if s == 1 else "k_experts"


def label(cfg) -> str:
    if cfg.label:
        return cfg.label
    if cfg.train.reset_at_switch:
        return "fresh network"
    if cfg.net.block == "dense":
        return "No MoE"
    s, e = cfg.moe.experts_start, cfg.moe.experts_end
    if s != e:
        return f"1-to-{e} grow" + (" (zero output)" if cfg.moe.grow_init == "zero_output" else "")
    return "1 expert" if s == 1 else f"{s} experts"


def iterations(cfg) -> int:
    return int(cfg.ppo.total_steps // (cfg.ppo.num_envs * cfg.ppo.num_steps))


def switch_iteration(cfg) -> int | None:
    """The iteration before which a stage switch by step happens (None: stages within episodes)."""
    if cfg.env.switch_step is None:
        return None
    return round(cfg.env.switch_step / (cfg.ppo.num_envs * cfg.ppo.num_steps))


def grow_points(cfg) -> list[int]:
    """Iterations before which one expert is added to every MoE block: evenly spaced over the run, or with a
    stage switch by step, the first at the switch and the rest evenly spaced over the iterations after it."""
    if cfg.net.block != "moe":
        return []
    g, n, s = cfg.moe.experts_end - cfg.moe.experts_start, iterations(cfg), switch_iteration(cfg)
    if s is not None:
        return [s + round(j * (n - s) / g) for j in range(g)]
    return [round(j * n / (g + 1)) for j in range(1, g + 1)]


def shared_computation(cfg) -> dict:
    """The flattened config minus the keys that do not change the computation before the first growth
    (START_FROM_IGNORED), with the expert width resolved."""
    flat = mtil_config.flatten(mtil_config.unwrap(cfg))
    flat = {k: v for k, v in flat.items() if not any(k == i or (i.endswith(".") and k.startswith(i))
                                                   for i in START_FROM_IGNORED)}
    if cfg.net.block == "moe":
        flat["expert_hidden"] = nets.build(cfg.net, cfg.moe, 1, 1).expert_hidden
    return flat


def zero_output_expert(params):
    """Grown `params` with the newest expert of every MoE block made function-preserving: its output layer
    (w2, b2) zero, its router entry a copy of the previous expert's, whose output layer is doubled. From one
    expert the two router weights are then equal (1/2) for every input, so the block computes what it did
    before the growth; the new expert's first layer keeps its fresh init, so gradients reach its output layer
    at once."""
    def fix(moe):
        moe = dict(moe)
        router = dict(moe["router"])
        router["kernel"] = router["kernel"].at[:, -1].set(router["kernel"][:, -2])
        router["bias"] = router["bias"].at[-1].set(router["bias"][-2])
        moe["router"] = router
        for k in ("w2", "b2"):
            moe[k] = moe[k].at[-2].multiply(2.0).at[-1].set(0.0)
        return moe

    p = jax.tree.map(lambda x: x, params)   # a copy of the containers
    for tower in ("actor", "critic"):
        for name, block in p["params"].get(tower, {}).items():
            if name.startswith("block") and "moe" in block:
                p["params"][tower][name] = {**block, "moe": fix(block["moe"])}
    return p


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) or (isinstance(x, np.ndarray) and x.ndim):
        return [_clean(v) for v in x]
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


class Run:
    def __init__(self, cfg, out: Path, resume: bool = False, start_from: Path | None = None):
        self.cfg, self.out, self.resume = cfg, Path(out), resume
        self.start_from = None if start_from is None else Path(start_from)
        self.switch = switch_iteration(cfg)
        self._set_stage(0)
        self.iterations = iterations(cfg)
        self.steps_per_iteration = cfg.ppo.num_envs * cfg.ppo.num_steps
        self.grow_at = grow_points(cfg)
        self.experts = cfg.moe.experts_start if cfg.net.block == "moe" else 0
        self.curve: list[dict] = []
        self.events: list[dict] = []
        self.window: list[dict] = []  # metrics of the iterations since the last curve point
        self.provenance = provenance.config_record(cfg)

    # ------------------------------------------------------------------------------------------ network / state
    def _set_stage(self, stage: int):
        """The training environment of `stage` (0 before a switch by step, 1 after; always the stream without)."""
        self.stage = stage
        which = "stream" if self.switch is None else ("first", "second")[stage]
        self.env = envs.make(self.cfg.env, which)
        self.venv = envs.VecEnv(self.env, self.cfg.ppo.num_envs, self.cfg.env.reset_ratio)

    def _decay(self) -> tuple[int, int]:
        """(first iteration, length) of the current linear lr decay."""
        if self.switch is None or self.cfg.ppo.anneal_over == "run":
            return 0, self.iterations
        return (0, self.switch) if self.stage == 0 else (self.switch, self.iterations - self.switch)

    def _net(self, experts: int):
        return nets.build(self.cfg.net, self.cfg.moe, self.env.actions, experts)

    def _compile(self):
        self.net = self._net(self.experts)
        start, length = self._decay()
        self.iteration = jax.jit(ppo.make_iteration(self.net, self.venv, self.cfg.ppo, length,
                                                    self.cfg.net.obs_clip, start))

    def grow(self, state: ppo.TrainState) -> ppo.TrainState:
        """Add one expert to every MoE block of `state` (and recompile the iteration)."""
        new_net = self._net(self.experts + 1)
        key = jax.random.fold_in(jax.random.PRNGKey(self.cfg.seed), 1_000_003 + int(state.iteration))
        fresh = jax.jit(new_net.init)(key, jnp.zeros((1, *self.env.obs_shape)))
        zeros = optim.init(fresh)
        params = optim.grow_like(state.params, fresh)
        if self.cfg.moe.grow_init == "zero_output":
            params = zero_output_expert(params)
        opt = optim.AdamState(*(optim.grow_like(o, z) for o, z in zip(state.opt, zeros)))
        it = int(state.iteration)
        self.events.append({"event": "grow", "iteration": it, "steps": it * self.steps_per_iteration,
                            "experts_from": self.experts, "experts_to": self.experts + 1,
                            "blocks": self.cfg.net.actor_blocks + self.cfg.net.critic_blocks})
        log.info("iteration %d: grew every MoE block from %d to %d experts", it, self.experts, self.experts + 1)
        self.experts += 1
        return state._replace(params=params, opt=opt)

    def switch_stage(self, state: ppo.TrainState) -> ppo.TrainState:
        """The stage switch by step: SpaceInvaders environments from here on (all reset with a key shared by
        every arm of a seed), and with `train.reset_at_switch` a new network, optimizer and observation
        statistics (drawn from a key of their own)."""
        self._set_stage(1)
        seed_key = jax.random.PRNGKey(self.cfg.seed)
        obs, env_state = jax.jit(self.venv.reset)(jax.random.fold_in(seed_key, 3_000_017))
        state = state._replace(env=env_state, obs=obs)
        it = int(state.iteration)
        self.events.append({"event": "switch", "iteration": it, "steps": it * self.steps_per_iteration,
                            "reset_network": bool(self.cfg.train.reset_at_switch)})
        if self.cfg.train.reset_at_switch:
            params = jax.jit(self.net.init)(jax.random.fold_in(seed_key, 2_000_003),
                                            jnp.zeros((1, *self.env.obs_shape)))
            state = state._replace(params=params, opt=optim.init(params),
                                   norm=nets.obs_norm_init(self.env.obs_shape))
        log.info("iteration %d: switched training to stage 1%s", it,
                 " with a fresh network" if self.cfg.train.reset_at_switch else "")
        return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), state)

    def _template(self) -> ppo.TrainState:
        return ppo.init_state(self.net, self.venv, self.env.obs_shape, jax.random.PRNGKey(self.cfg.seed))

    # ------------------------------------------------------------------------------------------ files
    def _check_out(self):
        results = self.out / "results.json"
        if self.resume:
            if not (self.out / "checkpoint.npz").exists():
                raise MtilError(f"--resume: {self.out} has no checkpoint.npz; start the run without --resume")
            return
        if self.start_from is not None and self.start_from.resolve() == self.out.resolve():
            raise MtilError("--start-from names the run's own --out; give the source run's directory")
        if results.exists() or (self.out / "checkpoint.npz").exists():
            raise MtilError(f"{self.out} already holds an RL run; pass --resume to continue it or choose a new --out")

    def _write_state(self, path: Path, state: ppo.TrainState):
        leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
        meta = {"experts": self.experts, "iteration": int(state.iteration), "curve": self.curve,
                "events": self.events, "window": self.window,
                "config_sha256": self.provenance["config_sha256"]}
        numpy_savez(path, meta=np.array(json.dumps(meta)), **{f"leaf{i:05d}": x for i, x in enumerate(leaves)})

    def _save(self, state: ppo.TrainState, complete: bool):
        self._write_state(self.out / "checkpoint.npz", state)
        write_jsonl(self.out / "events.jsonl", self.events)
        write_json(self.out / "results.json", self.results(complete))

    def _read_state(self, path: Path, hint: str, config_sha256: str | None = None) -> ppo.TrainState:
        """The state saved in `path` (the network is rebuilt with the experts it had); sets curve, events and
        the pending window from it. With `config_sha256`, a state written under another config is refused
        (states of mtil < 0.3 carry no hash)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                leaves = [z[k] for k in sorted(k for k in z.files if k.startswith("leaf"))]
        except (OSError, ValueError, KeyError) as e:
            raise MtilError(f"cannot read {path} ({type(e).__name__}); {hint}") from None
        there = meta.get("config_sha256")
        if config_sha256 is not None and there is not None and there != config_sha256:
            raise MtilError(f"cannot resume {self.out}: its checkpoint was written by another run (config sha256 "
                            f"{there[:12]} there, {config_sha256[:12]} now); {hint}")
        self.experts, self.curve, self.events = meta["experts"], meta["curve"], meta["events"]
        self.window = meta["window"]
        if self.switch is not None:   # states are saved between iterations; the switch runs before iteration s
            self._set_stage(int(meta["iteration"] > self.switch))
        self._compile()
        template = self._template()
        ref = jax.tree.leaves(template)
        if len(ref) != len(leaves) or any(a.shape != b.shape for a, b in zip(ref, leaves)):
            raise MtilError(f"{path} does not fit the config (different network or environment sizes); {hint}")
        return jax.tree.unflatten(jax.tree.structure(template),
                                  [jnp.asarray(x, dtype=r.dtype) for x, r in zip(leaves, ref)])

    def load_checkpoint(self) -> ppo.TrainState:
        """The state saved in checkpoint.npz."""
        state = self._read_state(self.out / "checkpoint.npz", "start a new run into a new --out",
                                 self.provenance["config_sha256"])
        self.events.append({"event": "resume", "iteration": int(state.iteration)})
        return state

    def snapshot_to_start_from(self) -> Path:
        """The snapshot of --start-from's run that this run may continue: the source's config must equal this
        one up to START_FROM_IGNORED, and the snapshot must lie before this run's first growth and hold this
        run's starting experts; the latest such snapshot is taken."""
        src = self.start_from
        if not (src / "config.yaml").exists():
            raise MtilError(f"--start-from: {src} is not a `mtil rl` run directory (no config.yaml)")
        src_cfg = load_config(src / "config.yaml")
        mine, theirs = shared_computation(self.cfg), shared_computation(src_cfg)
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            raise MtilError(f"--start-from: {src} ran a different computation ({', '.join(differ[:4])} differ); "
                            f"it must equal this config up to moe.experts_end")
        first_growth = min([*self.grow_at, *([] if self.switch is None else [self.switch])],
                           default=self.iterations)
        usable = []
        for f in src.glob("snapshot-*.npz"):
            it = f.stem.split("-", 1)[1]
            if it.isdigit() and int(it) <= first_growth:
                usable.append((int(it), f))
        if not usable:
            raise MtilError(f"--start-from: {src} has no snapshot-<iteration>.npz at or before this run's first "
                            f"growth (iteration {first_growth}); run the source with train.keep_snapshots: true")
        return max(usable)[1]

    def load_start(self) -> ppo.TrainState:
        path = self.snapshot_to_start_from()
        state = self._read_state(path, "choose another --start-from")
        if self.experts != (self.cfg.moe.experts_start if self.cfg.net.block == "moe" else 0):
            raise MtilError(f"--start-from: {path} holds {self.experts} experts per block, this run starts with "
                            f"{self.cfg.moe.experts_start}")
        self.events = [{"event": "start_from", "run": str(self.start_from), "iteration": int(state.iteration)}]
        return state

    def results(self, complete: bool) -> dict:
        n = self.cfg.train.final_window
        return {"kind": "rl", "label": label(self.cfg), "variant": variant(self.cfg), "env": self.cfg.env.name,
                "seed": self.cfg.seed, "iterations": self.iterations,
                "steps_per_iteration": self.steps_per_iteration, "experts": self.experts, "grow_at": self.grow_at,
                "switch_at": self.switch,
                "complete": complete, "final_window": n, "provenance": self.provenance,
                **figures.finals(self.curve, n), "curve": self.curve}

    # ------------------------------------------------------------------------------------------ loop
    def execute(self, stop_after: int | None = None) -> dict:
        self._check_out()
        if self.resume:
            state = self.load_checkpoint()
        else:
            if self.start_from is not None:
                state = self.load_start()
            else:
                self._compile()
                state = self._template()
            write_text(self.out / "config.yaml", mtil_config.dump(self.cfg))
        it = int(state.iteration)
        t0 = time.perf_counter()
        last_stop = self.iterations if stop_after is None else min(stop_after, self.iterations)
        while it < last_stop:
            switching = it == self.switch and self.stage == 0
            growing = it in self.grow_at and self.experts < self.cfg.moe.experts_end
            if switching or growing:
                if self.cfg.train.keep_snapshots:
                    self._write_state(self.out / f"snapshot-{it}.npz", state)
                if switching:
                    state = self.switch_stage(state)
                if growing:
                    state = self.grow(state)
                self._compile()
            state, metrics = self.iteration(state)
            self.window.append(_clean(jax.device_get(metrics)))
            it += 1
            if it % self.cfg.train.log_every == 0 or it == self.iterations:
                self._log_point(it, self.window, time.perf_counter() - t0)
                self.window = []
            if it % self.cfg.train.checkpoint_every == 0 or it == last_stop:
                self._save(state, complete=False)
        complete = it >= self.iterations
        if complete:
            write_json(self.out / "trace.json", self.trace(state))
            write_json(self.out / "specialisation.json", self.measure_specialisation(state))
            self._save(state, complete=True)
        return self.results(complete)

    def measure(self) -> list[Path]:
        """trace.json and specialisation.json of the state in checkpoint.npz (a complete run writes them itself;
        this measures a run stopped with --stop-after, e.g. the switch study's arms a few iterations after the
        switch)."""
        if not (self.out / "checkpoint.npz").exists():
            raise MtilError(f"--measure: {self.out} has no checkpoint.npz; run it first")
        # the config may differ from the run's in trace.* / specialisation.* (`mtil rl --measure` checks the rest)
        state = self._read_state(self.out / "checkpoint.npz", "measure a run of this config")
        return [write_json(self.out / "trace.json", self.trace(state)),
                write_json(self.out / "specialisation.json", self.measure_specialisation(state))]

    def _log_point(self, it: int, window: list[dict], seconds: float):
        eps = np.array([m["episodes"] for m in window], dtype=float)

        def mean(key):
            vals = np.array([np.nan if m[key] is None else m[key] for m in window], dtype=float)
            ok = eps > 0
            return float((vals[ok] * eps[ok]).sum() / eps[ok].sum()) if ok.any() else None

        row = {"iteration": it, "steps": it * self.steps_per_iteration, "episodes": int(eps.sum()),
               **{k: mean(k) for k in ("return", "return_stage0", "return_stage1", "reached_stage1", "length",
                                       "max_stage")}, "experts": self.experts}
        ach = [k for k in window[0] if k.startswith("Achievements/")]
        if ach:
            per = {k.split("/", 1)[1]: mean(k) for k in ach}
            row["achievements"] = None if row["return"] is None else sum(per.values()) / 100.0
            row["achievement_rates"] = per
        for key in ("loss", "value_loss", "actor_loss", "entropy", "lr"):
            row[key] = float(np.mean([m[key] for m in window]))
        # a point whose window spans a growth averages the router weights of the iterations after it
        row["router"] = {k: np.mean([m["router"][k] for m in window if len(m["router"][k]) == len(v)],
                                    axis=0).tolist() for k, v in window[-1]["router"].items()}
        self.curve.append(_clean(row))
        log.info("iteration %d/%d  steps %d  return %s  max stage %s  (%.0f steps/s)", it, self.iterations,
                 row["steps"], "n/a" if row["return"] is None else f"{row['return']:.2f}",
                 "n/a" if row["max_stage"] is None else f"{row['max_stage']:.2f}",
                 len(window) * self.steps_per_iteration / max(seconds - getattr(self, "_t_last", 0.0), 1e-9))
        self._t_last = seconds

    # ------------------------------------------------------------------------------------------ Fig. 4
    def trace(self, state: ppo.TrainState) -> dict:
        """Router weights of the first critic MoE block over greedy episodes; keeps the first that reaches
        stage 1 (else the longest)."""
        n, horizon = self.cfg.trace.episodes, self.cfg.trace.max_steps
        if n == 0:
            return {"layer": None, "router": [], "stage": [], "reward": []}
        env, net, params, norm = self.stream_env(), self.net, state.params, state.norm
        width = self.experts if self.cfg.net.block == "moe" and self.cfg.net.critic_blocks else 0

        def step(carry, k):
            t, obs, env_state, alive, buf = carry
            x = nets.obs_norm_apply(norm, obs[None], self.cfg.net.obs_clip)
            (logits, _), inter = net.apply(params, x, mutable=["intermediates"])
            routers = nets.router_probs(inter.get("intermediates", {}))
            probs = routers[TRACE_LAYER][0] if TRACE_LAYER in routers else jnp.zeros(0)
            stage = env.stage(env_state)
            obs2, env_state2, reward, done, _ = env.step(jax.random.fold_in(k, t), env_state,
                                                         jnp.argmax(logits[0]))
            buf = {"probs": buf["probs"].at[t].set(probs), "stage": buf["stage"].at[t].set(stage),
                   "reward": buf["reward"].at[t].set(reward), "alive": buf["alive"].at[t].set(True)}
            return t + 1, obs2, env_state2, ~done, buf

        def episode(key):
            k_reset, k_run = jax.random.split(key)
            obs, env_state = env.reset(k_reset)
            buf = {"probs": jnp.zeros((horizon, width)),
                   "stage": jnp.zeros(horizon, jnp.int32), "reward": jnp.zeros(horizon),
                   "alive": jnp.zeros(horizon, bool)}
            # to the episode's end or the horizon; under vmap, as long as the longest episode
            *_, buf = jax.lax.while_loop(lambda c: (c[0] < horizon) & c[3], lambda c: step(c, k_run),
                                         (jnp.int32(0), obs, env_state, jnp.bool_(True), buf))
            return buf["probs"], buf["stage"], buf["reward"], buf["alive"]

        key = jax.random.fold_in(jax.random.PRNGKey(self.cfg.seed), 7)
        probs, stage, reward, alive = jax.device_get(jax.jit(jax.vmap(episode))(jax.random.split(key, n)))
        lengths = alive.sum(1)
        reached = [i for i in range(n) if (stage[i][: lengths[i]] >= 1).any()]
        i = reached[0] if reached else int(np.argmax(lengths))
        T = int(lengths[i])
        return {"layer": TRACE_LAYER if probs.shape[-1] else None, "episode": i, "episodes_tried": n,
                "episodes_reaching_stage1": len(reached), "length": T, "return": float(reward[i].sum()),
                "router": probs[i][:T].tolist(), "stage": stage[i][:T].astype(int).tolist(),
                "reward": reward[i][:T].tolist(), "experts": self.experts}

    def stream_env(self):
        """The trace's environment: the stages within each episode (two-stage MinAtar: Breakout, then
        SpaceInvaders after switch_at points), whatever the training saw."""
        return self.env if self.switch is None else envs.make(self.cfg.env, "stream")

    def measure_specialisation(self, state: ppo.TrainState) -> dict:
        """specialisation.json: router specialisation by stage over greedy episodes, trained and random routers.
        With a stage switch by step, half the episodes (in expectation) are Breakout and half SpaceInvaders
        episodes, so both stages are measured whether or not the final agent still reaches stage 1."""
        c = self.cfg.specialisation
        if c.episodes == 0:
            return {"episodes": 0, "blocks": {}}
        key = jax.random.fold_in(jax.random.PRNGKey(self.cfg.seed), 11)
        env = self.env if self.switch is None else envs.make(self.cfg.env, "either")
        return specialisation.measure(env, self.net, state.params, state.norm, self.cfg.net.obs_clip, key,
                                      c.episodes, c.max_steps, c.random_routers)
