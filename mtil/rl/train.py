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
START_FROM_IGNORED = ("label", "moe.experts_end", "moe.match_experts", "train.checkpoint_every",
                      "train.keep_snapshots", "train.final_window", "trace.", "specialisation.")


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
    return cfg


def variant(cfg) -> str:
    """The study's variant of a config: no_moe, 1_expert, k_experts or grow."""
    if cfg.net.block == "dense":
        return "no_moe"
    s, e = cfg.moe.experts_start, cfg.moe.experts_end
    return "grow" if s != e else ("1_expert" if s == 1 else "k_experts")


def label(cfg) -> str:
    if cfg.label:
        return cfg.label
    if cfg.net.block == "dense":
        return "No MoE"
    s, e = cfg.moe.experts_start, cfg.moe.experts_end
    return f"1-to-{e} grow" if s != e else ("1 expert" if s == 1 else f"{s} experts")


def iterations(cfg) -> int:
    return int(cfg.ppo.total_steps // (cfg.ppo.num_envs * cfg.ppo.num_steps))


def grow_points(cfg) -> list[int]:
    """Iterations before which one expert is added to every MoE block."""
    if cfg.net.block != "moe":
        return []
    g, n = cfg.moe.experts_end - cfg.moe.experts_start, iterations(cfg)
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
        self.env = envs.make(cfg.env)
        self.venv = envs.VecEnv(self.env, cfg.ppo.num_envs, cfg.env.reset_ratio)
        self.iterations = iterations(cfg)
        self.steps_per_iteration = cfg.ppo.num_envs * cfg.ppo.num_steps
        self.grow_at = grow_points(cfg)
        self.experts = cfg.moe.experts_start if cfg.net.block == "moe" else 0
        self.curve: list[dict] = []
        self.events: list[dict] = []
        self.window: list[dict] = []  # metrics of the iterations since the last curve point
        self.provenance = provenance.config_record(cfg)

    # ------------------------------------------------------------------------------------------ network / state
    def _net(self, experts: int):
        return nets.build(self.cfg.net, self.cfg.moe, self.env.actions, experts)

    def _compile(self):
        self.net = self._net(self.experts)
        self.iteration = jax.jit(ppo.make_iteration(self.net, self.venv, self.cfg.ppo, self.iterations,
                                                    self.cfg.net.obs_clip))

    def grow(self, state: ppo.TrainState) -> ppo.TrainState:
        """Add one expert to every MoE block of `state` (and recompile the iteration)."""
        new_net = self._net(self.experts + 1)
        key = jax.random.fold_in(jax.random.PRNGKey(self.cfg.seed), 1_000_003 + int(state.iteration))
        fresh = jax.jit(new_net.init)(key, jnp.zeros((1, *self.env.obs_shape)))
        zeros = optim.init(fresh)
        params = optim.grow_like(state.params, fresh)
        opt = optim.AdamState(*(optim.grow_like(o, z) for o, z in zip(state.opt, zeros)))
        it = int(state.iteration)
        self.events.append({"event": "grow", "iteration": it, "steps": it * self.steps_per_iteration,
                            "experts_from": self.experts, "experts_to": self.experts + 1,
                            "blocks": self.cfg.net.actor_blocks + self.cfg.net.critic_blocks})
        log.info("iteration %d: grew every MoE block from %d to %d experts", it, self.experts, self.experts + 1)
        self.experts += 1
        self._compile()
        return state._replace(params=params, opt=opt)

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
        first_growth = min(self.grow_at, default=self.iterations)
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
            if it in self.grow_at and self.experts < self.cfg.moe.experts_end:
                if self.cfg.train.keep_snapshots:
                    self._write_state(self.out / f"snapshot-{it}.npz", state)
                state = self.grow(state)
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
        for key in ("loss", "value_loss", "actor_loss", "entropy"):
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
        env, net, params, norm = self.env, self.net, state.params, state.norm

        def episode(key):
            k_reset, k_run = jax.random.split(key)
            obs, env_state = env.reset(k_reset)

            def step(carry, k):
                obs, env_state, alive = carry
                x = nets.obs_norm_apply(norm, obs[None], self.cfg.net.obs_clip)
                (logits, _), inter = net.apply(params, x, mutable=["intermediates"])
                routers = nets.router_probs(inter.get("intermediates", {}))
                probs = routers[TRACE_LAYER][0] if TRACE_LAYER in routers else jnp.zeros(0)
                stage = env.stage(env_state)
                obs2, env_state2, reward, done, _ = env.step(k, env_state, jnp.argmax(logits[0]))
                out = (probs, stage, reward * alive, alive)
                return (obs2, env_state2, alive & ~done), out

            _, outs = jax.lax.scan(step, (obs, env_state, jnp.bool_(True)), jax.random.split(k_run, horizon))
            return outs

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

    def measure_specialisation(self, state: ppo.TrainState) -> dict:
        """specialisation.json: router specialisation by stage over greedy episodes, trained and random routers."""
        c = self.cfg.specialisation
        if c.episodes == 0:
            return {"episodes": 0, "blocks": {}}
        key = jax.random.fold_in(jax.random.PRNGKey(self.cfg.seed), 11)
        return specialisation.measure(self.env, self.net, state.params, state.norm, self.cfg.net.obs_clip, key,
                                      c.episodes, c.max_steps, c.random_routers)
