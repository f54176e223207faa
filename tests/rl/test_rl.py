"""DynamicMoE RL study (mtil.rl): the networks, PPO loss, GAE and optimizer against hand-written references.

References: torch re-statements of SimBa's ResidualBlock and grow_rl_synthetic's MoELayer (forward and
gradients), numpy PPO loss / GAE as Craftax_Baselines' ppo.py computes them, optax's clip + Adam.
End-to-end runs are in tests/test_rl_runs.py.
"""
import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the [rl] extra is not installed")  # CI installs it: never skipped there
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

from mtil.rl import envs, nets, optim, ppo  # noqa: E402

H, E, HB, B = 8, 3, 5, 6


def _perturbed(params, seed):
    """Non-trivial weights everywhere (LayerNorm scale/bias and biases are 1/0 at init)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _t(x):
    return torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=True)


def _torch_layernorm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * scale + bias


def _block(experts):
    block = nets.Block(H, 4, experts, HB)
    x = jax.random.normal(jax.random.PRNGKey(1), (B, H))
    params = _perturbed(jax.jit(block.init)(jax.random.PRNGKey(0), x), 2)
    return block, params, x


def test_moe_block_matches_reference_forward_and_gradients():
    block, params, x = _block(E)
    p = params["params"]

    def f(prm, x):
        return jnp.sum(jnp.sin(block.apply(prm, x)))

    out = jax.jit(block.apply)(params, x)
    g_params, g_x = jax.jit(jax.grad(f, argnums=(0, 1)))(params, x)

    # reference: grow_rl_synthetic's MoELayer structure, one Linear(h, 1) router and one bottleneck MLP per expert
    tx = _t(x)
    ln = {k: _t(v) for k, v in p["LayerNorm_0"].items()}
    moe = {k: _t(v) for k, v in p["moe"].items() if k != "router"}
    rk, rb = _t(p["moe"]["router"]["kernel"]), _t(p["moe"]["router"]["bias"])
    z = _torch_layernorm(tx, ln["scale"], ln["bias"])
    logits = torch.stack([z @ rk[:, e] + rb[e] for e in range(E)], dim=1)
    outs = torch.stack([torch.relu(z @ moe["w1"][e] + moe["b1"][e]) @ moe["w2"][e] + moe["b2"][e]
                        for e in range(E)], dim=1)
    ref = tx + (torch.softmax(logits, dim=1)[..., None] * outs).sum(1)
    torch.sin(ref).sum().backward()

    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_x, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    for name in ("w1", "b1", "w2", "b2"):
        np.testing.assert_allclose(g_params["params"]["moe"][name], moe[name].grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_params["params"]["moe"]["router"]["kernel"], rk.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_params["params"]["LayerNorm_0"]["scale"], ln["scale"].grad.numpy(), rtol=1e-4,
                               atol=1e-5)


def test_dense_simba_block_matches_reference():
    block, params, x = _block(0)
    p = params["params"]
    tx = _t(x)
    z = _torch_layernorm(tx, _t(p["LayerNorm_0"]["scale"]), _t(p["LayerNorm_0"]["bias"]))
    d0, d1 = p["Dense_0"], p["Dense_1"]
    ref = tx + torch.relu(z @ _t(d0["kernel"]) + _t(d0["bias"])) @ _t(d1["kernel"]) + _t(d1["bias"])
    assert d0["kernel"].shape == (H, 4 * H)
    np.testing.assert_allclose(jax.jit(block.apply)(params, x), ref.detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h,n", [(64, 1), (64, 2), (512, 2), (16, 4)])
def test_parameter_matching(h, n):
    """n experts (with router entries) hold at most, and within one expert-width step of, the dense MLP."""
    dense = jax.eval_shape(nets.Block(h, 4, 0, 0).init, jax.random.PRNGKey(0), jnp.zeros((1, h)))
    hb = nets.expert_hidden(h, 4, n)
    moe = jax.eval_shape(nets.Block(h, 4, n, hb).init, jax.random.PRNGKey(0), jnp.zeros((1, h)))
    count = lambda t: sum(x.size for x in jax.tree.leaves(t))  # noqa: E731  (LayerNorm counted in both)
    assert count(moe) <= count(dense) < count(moe) + n * (2 * h + 1)


def test_router_probs_are_sown_per_moe_block():
    net = nets.ActorCritic(4, "flat", H, 4, 1, 2, 2, HB)
    params = jax.jit(net.init)(jax.random.PRNGKey(0), jnp.zeros((3, 10)))
    (logits, value), inter = jax.jit(lambda p, x: net.apply(p, x, mutable=["intermediates"]))(params, jnp.ones((3, 10)))
    routers = nets.router_probs(inter["intermediates"])
    assert sorted(routers) == ["actor.block0", "critic.block0", "critic.block1"]
    assert logits.shape == (3, 4) and value.shape == (3,)
    np.testing.assert_allclose(routers["critic.block0"].sum(-1), 1.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------- PPO
def _reference_loss(logits, values, actions, old_logp, old_values, adv, targets, clip, vf, ent):
    """Craftax_Baselines ppo.py `_loss_fn`, restated in numpy."""
    logp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    logp = logp_all[np.arange(len(actions)), actions]
    v_clip = old_values + np.clip(values - old_values, -clip, clip)
    value_loss = 0.5 * np.maximum((values - targets) ** 2, (v_clip - targets) ** 2).mean()
    ratio = np.exp(logp - old_logp)
    a = (adv - adv.mean()) / (adv.std() + 1e-8)
    actor = -np.minimum(ratio * a, np.clip(ratio, 1 - clip, 1 + clip) * a).mean()
    entropy = -(np.exp(logp_all) * logp_all).sum(-1).mean()
    return actor + vf * value_loss - ent * entropy, value_loss, actor, entropy


def test_ppo_loss_on_hand_made_batch():
    logits = np.array([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.5, -0.5, 1.5]])
    actions = np.array([0, 2, 1, 1])
    old_logp = np.array([-0.5, -1.5, -0.2, -3.0])  # ratios ~0.67, 0.88, 0.98, 6.7: the last is clipped
    old_values = np.array([0.0, 1.0, -1.0, 2.0])
    values = np.array([0.5, 1.05, -2.0, 2.1])      # first and third value updates exceed the clip
    adv = np.array([1.0, -2.0, 0.5, 3.0])
    targets = np.array([1.0, 0.0, -1.5, 2.5])
    batch = ppo.Transition(None, jnp.asarray(actions), jnp.asarray(old_logp), jnp.asarray(old_values), None, None)
    kw = dict(clip=0.2, vf_coef=0.5, ent_coef=0.01)
    loss = jax.jit(ppo.loss, static_argnames=("clip", "vf_coef", "ent_coef"))
    total, (vl, al, en) = loss(jnp.asarray(logits), jnp.asarray(values), batch, jnp.asarray(adv),
                                   jnp.asarray(targets), **kw)
    ref = _reference_loss(logits, values, actions, old_logp, old_values, adv, targets, 0.2, 0.5, 0.01)
    np.testing.assert_allclose([total, vl, al, en], ref, rtol=1e-5)
    # the clipped value branch is active here (unclipped value loss differs)
    assert abs(vl - 0.5 * ((values - targets) ** 2).mean()) > 1e-3
    # advantages are normalised per minibatch: an affine change of them leaves the loss unchanged
    total2, _ = loss(jnp.asarray(logits), jnp.asarray(values), batch, jnp.asarray(5 * adv + 7),
                         jnp.asarray(targets), **kw)
    np.testing.assert_allclose(total2, total, rtol=1e-5)


def test_gae_matches_loop_reference():
    rng = np.random.default_rng(0)
    T, N, gamma, lam = 7, 3, 0.99, 0.8
    rewards, values = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    dones = (rng.random((T, N)) < 0.3).astype(float)
    last = rng.normal(size=N)
    adv = np.zeros((T, N))
    for n in range(N):
        running, next_v = 0.0, last[n]
        for t in reversed(range(T)):
            delta = rewards[t, n] + gamma * next_v * (1 - dones[t, n]) - values[t, n]
            running = delta + gamma * lam * (1 - dones[t, n]) * running
            adv[t, n], next_v = running, values[t, n]
    got_adv, got_targets = jax.jit(ppo.gae, static_argnums=(4, 5))(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones),
                                   jnp.asarray(last), gamma, lam)
    np.testing.assert_allclose(got_adv, adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_targets, adv + values, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- optimizer
_update = jax.jit(optim.update, static_argnames=("b1", "b2", "eps", "max_norm"))


def _grads(seed, shapes):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.normal(size=s) * 3, dtype=jnp.float32) for k, s in shapes.items()}


def test_adam_matches_optax_clip_adam():
    shapes = {"a": (4, 3), "b": (5,)}
    params = _grads(100, shapes)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3, eps=1e-5))
    ref_p, ref_s = params, tx.init(params)
    p, s = params, optim.init(params)
    for i in range(6):  # gradient norms ~10: clipping is active
        g = _grads(i, shapes)
        u, ref_s = tx.update(g, ref_s, ref_p)
        ref_p = optax.apply_updates(ref_p, u)
        p, s = _update(g, s, p, 3e-3, b1=0.9, b2=0.999, eps=1e-5, max_norm=1.0)
    for k in shapes:
        np.testing.assert_allclose(p[k], ref_p[k], rtol=1e-6, atol=1e-7)


def test_grown_entries_get_fresh_adam_and_old_entries_continue():
    """After growth, old entries continue as without growth; new entries step as a fresh Adam from zero."""
    kw = dict(b1=0.9, b2=0.999, eps=1e-5, max_norm=1e9)
    old = {"w": (2, 4, 3), "r": (4, 2)}
    grown = {"w": (3, 4, 3), "r": (4, 3)}  # one more expert: leading axis of w, last axis of the router
    p, s = _grads(50, old), optim.init(_grads(50, old))
    for i in range(4):
        p, s = _update(_grads(i, old), s, p, 1e-2, **kw)
    fresh = _grads(77, grown)
    gp = optim.grow_like(p, fresh)
    gs = optim.AdamState(*(optim.grow_like(o, z) for o, z in zip(s, optim.init(fresh))))
    np.testing.assert_array_equal(gp["w"][:2], p["w"])
    np.testing.assert_array_equal(gp["w"][2], fresh["w"][2])
    assert int(gs.count["w"][0].min()) == 4 and int(gs.count["w"][2].max()) == 0
    np.testing.assert_array_equal(gs.mu["r"][:, 2], 0.0)

    ref_old, ref_s = p, s
    new_only = {"w": fresh["w"][2:], "r": fresh["r"][:, 2:]}
    new_s = optim.init(new_only)
    for i in range(10, 13):
        g = _grads(i, grown)
        gp, gs = _update(g, gs, gp, 1e-2, **kw)
        ref_old, ref_s = _update({"w": g["w"][:2], "r": g["r"][:, :2]}, ref_s, ref_old, 1e-2, **kw)
        new_only, new_s = _update({"w": g["w"][2:], "r": g["r"][:, 2:]}, new_s, new_only, 1e-2, **kw)
    np.testing.assert_allclose(gp["w"][:2], ref_old["w"], rtol=1e-6)
    np.testing.assert_allclose(gp["r"][:, :2], ref_old["r"], rtol=1e-6)
    np.testing.assert_allclose(gp["w"][2:], new_only["w"], rtol=1e-6)
    np.testing.assert_allclose(gp["r"][:, 2:], new_only["r"], rtol=1e-6)
    # optax's single count would have made the new entries' first step (1-b1)/sqrt(1-b2) ~ 3.2x larger
    tx = optax.adam(1e-2)
    st = tx.init({"x": jnp.zeros(1)})
    st = (st[0]._replace(count=jnp.int32(100_000)), st[1])
    u, _ = tx.update({"x": jnp.ones(1)}, st)
    assert abs(float(u["x"][0])) > 3 * 1e-2


# ---------------------------------------------------------------------------------------------------- envs
def test_two_stage_minatar_switches_after_switch_at_points():
    env = envs.TwoStageMinAtar(switch_at=2, max_steps=400)
    n = 16

    def rollout(key):
        obs, state = env.reset(key)

        def step(carry, k):
            obs, state, alive, score = carry
            k_a, k_s = jax.random.split(k)
            action = jax.random.randint(k_a, (), 0, 4)
            obs2, state2, reward, done, _ = env.step(k_s, state, action)
            in_first = env.stage(state) == 0
            out = (env.stage(state), obs, alive, score)
            return (obs2, state2, alive & ~done, score + jnp.where(in_first, reward, 0.0)), out

        _, outs = jax.lax.scan(step, (obs, state, True, 0.0), jax.random.split(key, 400))
        return outs

    stage, obs, alive, score = jax.device_get(jax.jit(jax.vmap(rollout))(jax.random.split(jax.random.PRNGKey(0), n)))
    assert obs.shape[-3:] == (10, 10, 10)
    switched = 0
    for i in range(n):
        st, ob, sc = stage[i][alive[i]], obs[i][alive[i]], score[i][alive[i]]
        assert np.all(np.diff(st) >= 0)                       # stages only move forward within an episode
        assert np.all(sc[st == 1] >= 2)                        # stage 1 only after 2 Breakout points
        assert np.all(sc[st == 0] < 2)
        assert not ob[st == 1][..., :4].any() and not ob[st == 0][..., 4:].any()
        assert ob[st == 0][..., :4].any()
        switched += bool((st == 1).any())
    assert switched > 0, "random play should reach 2 Breakout points in some of 16 episodes"


def test_vec_env_resets_finished_episodes_and_logs_returns():
    env = envs.TwoStageMinAtar(switch_at=100, max_steps=3)  # every episode ends after 3 steps
    venv = envs.VecEnv(env, 8, reset_ratio=4)
    def three_steps(key):
        obs, log = venv.reset(key)
        for k in jax.random.split(key, 3):
            obs, log, reward, done, info = venv.step(k, log, jnp.zeros(8, jnp.int32))
        return obs, log, done, info

    obs, log, done, info = jax.jit(three_steps)(jax.random.PRNGKey(0))
    assert bool(done.all())
    np.testing.assert_array_equal(info["length"], 3)
    np.testing.assert_array_equal(log.length, 0)
    np.testing.assert_array_equal(log.env.time, 0)          # fresh worlds after the done
    # 2 fresh worlds (8 envs / ratio 4) were shared by the 8 finished episodes
    assert len({np.asarray(x).tobytes() for x in obs}) <= 2


def test_shared_layout_writes_both_games_into_the_same_channels_by_role():
    separate = envs.TwoStageMinAtar(switch_at=1, max_steps=50)
    shared = envs.TwoStageMinAtar(switch_at=1, max_steps=50, layout="shared")
    _, state = separate.reset(jax.random.PRNGKey(3))
    assert shared.obs_shape == (10, 10, 6)
    for stage in (0, 1):
        st = state._replace(stage=jnp.int32(stage))
        sep, sh = np.asarray(separate._obs(st.first, st.second, st.stage)), np.asarray(
            shared._obs(st.first, st.second, st.stage))
        own = sep[..., :4] if stage == 0 else sep[..., 4:]
        ref = np.zeros((10, 10, 6))
        for c, target in enumerate(envs.SHARED_CHANNELS[stage]):   # hand mapping: game channel c -> target
            ref[..., target] = own[..., c]
        np.testing.assert_array_equal(sh, ref)
        assert own.any()
    # the player is channel 0 in both games, the targets (bricks / aliens) channel 3
    assert envs.SHARED_CHANNELS[0][0] == envs.SHARED_CHANNELS[1][0] == 0
    assert envs.SHARED_CHANNELS[0][3] == envs.SHARED_CHANNELS[1][1] == 3


def test_vec_env_splits_the_return_by_stage():
    """Per finished episode: stage-0 part + stage-1 part = return; rewards after the switch go to stage 1."""
    env = envs.TwoStageMinAtar(switch_at=1, max_steps=300)
    venv = envs.VecEnv(env, 16, reset_ratio=1)

    def run(key):
        obs, log = venv.reset(key)

        def step(carry, k):
            log = carry
            k_a, k_s = jax.random.split(k)
            _, log, reward, done, info = venv.step(k_s, log, jax.random.randint(k_a, (16,), 0, 4))
            return log, (info, done)
        _, (info, done) = jax.lax.scan(step, log, jax.random.split(key, 600))
        return info, done

    info, done = jax.device_get(jax.jit(run)(jax.random.PRNGKey(0)))
    d = done.astype(bool)
    assert d.sum() > 10
    np.testing.assert_allclose(info["return_stage0"][d] + info["return_stage1"][d], info["return"][d], atol=1e-5)
    reached = info["reached_stage1"][d] > 0
    assert reached.any() and (~reached).any()
    assert np.all(info["return_stage1"][d][~reached] == 0)       # never in stage 1: nothing earned there
    assert np.all(info["return_stage0"][d][reached] >= 1)        # switch_at 1: the switching point is stage 0's


def test_observation_clip():
    norm = nets.ObsNorm(jnp.zeros(3), jnp.array([1.0, 1e-4, 4.0]), jnp.asarray(10.0))
    x = jnp.array([[2.0, 1.0, -40.0]])
    np.testing.assert_allclose(nets.obs_norm_apply(norm, x), [[2.0, 100.0, -20.0]], rtol=1e-4)
    np.testing.assert_allclose(nets.obs_norm_apply(norm, x, 5.0), [[2.0, 5.0, -5.0]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------------- specialisation
def test_js_bits_matches_hand_formula():
    from mtil.rl.specialisation import js_bits
    p, q = np.array([0.9, 0.1]), np.array([0.2, 0.8])
    m = (p + q) / 2
    ref = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert js_bits(p, q) == pytest.approx(ref, rel=1e-9)
    assert js_bits([1, 0], [0, 1]) == pytest.approx(1.0) and js_bits(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_bits(p, q) == pytest.approx(js_bits(p[::-1], q[::-1]))   # relabelling the experts


class _TwoPhase:
    """A toy environment for the statistic: 8 steps per episode, stage 1 from step 4, observations that
    differ between the stages (plus noise from the reset key)."""
    actions, obs_shape = 3, (5,)

    def reset(self, key):
        return self._obs(jnp.int32(0), key), (jnp.int32(0), key)

    def _obs(self, t, key):
        base = jnp.where(t >= 4, jnp.array([1.0, -1, 0, 2, 0]), jnp.array([0.0, 1, 1, -1, 0]))
        return base + 0.3 * jax.random.normal(jax.random.fold_in(key, t), (5,))

    def step(self, key, state, action):
        t, k = state
        return self._obs(t + 1, k), (t + 1, k), 0.0, t + 1 >= 8, {}

    @staticmethod
    def stage(state):
        return (state[0] >= 4).astype(jnp.int32)


def test_specialisation_matches_a_loop_over_episodes_and_its_control_keeps_the_scale():
    from mtil.rl import specialisation as spec
    env, net = _TwoPhase(), nets.ActorCritic(3, "flat", H, 4, 1, 2, 2, HB)
    params = _perturbed(jax.jit(net.init)(jax.random.PRNGKey(0), jnp.zeros((1, 5))), 4)
    norm = nets.ObsNorm(jnp.full(5, 0.1), jnp.full(5, 0.5), jnp.asarray(100.0))
    key = jax.random.PRNGKey(9)
    got = spec.measure(env, net, params, norm, 1.5, key, episodes=3, max_steps=12, random_routers=2)

    # reference: the same episodes step by step in Python, router probabilities pooled per stage
    k_draw, k_eps = jax.random.split(key)
    drawn = spec.redraw_routers(params, k_draw, 2)
    one = [jax.tree.map(lambda x: x[i], drawn) for i in range(2)]
    sums = {}
    for k in jax.random.split(k_eps, 3):
        k_reset, _ = jax.random.split(k)
        obs, state = env.reset(k_reset)
        for _ in range(8):
            x = jnp.clip((obs[None] - norm.mean) / jnp.sqrt(norm.var + 1e-8), -1.5, 1.5)
            s = int(env.stage(state))
            for name, prm in [("trained", params), ("r0", one[0]), ("r1", one[1])]:
                _, inter = net.apply(prm, x, mutable=["intermediates"])
                for block, p in nets.router_probs(inter["intermediates"]).items():
                    sums.setdefault((name, block), np.zeros((2, 2)))[s] += np.asarray(p[0])
            obs, state, *_ = env.step(None, state, 0)
    assert got["steps"] == [12.0, 12.0] and got["reaching_stage1"] == 3
    for block, row in got["blocks"].items():
        ref = sums[("trained", block)] / 12
        np.testing.assert_allclose([row["p0"], row["p1"]], ref, rtol=1e-5)
        assert row["js"] == pytest.approx(spec.js_bits(*ref), rel=1e-4)
        assert row["newest"] == pytest.approx(ref[:, -1].tolist(), rel=1e-5)
        for r in range(2):
            assert row["random_js"][r] == pytest.approx(spec.js_bits(*(sums[(f"r{r}", block)] / 12)), rel=1e-4)
    # the control re-draws only router kernels, at the trained kernel's norm
    for tower, block in (("actor", "block0"), ("critic", "block1")):
        trained = params["params"][tower][block]["moe"]
        for r in range(2):
            redrawn = one[r]["params"][tower][block]["moe"]
            assert float(jnp.linalg.norm(redrawn["router"]["kernel"])) == pytest.approx(
                float(jnp.linalg.norm(trained["router"]["kernel"])), rel=1e-5)
            assert not np.allclose(redrawn["router"]["kernel"], trained["router"]["kernel"])
            np.testing.assert_array_equal(redrawn["router"]["bias"], trained["router"]["bias"])
            np.testing.assert_array_equal(redrawn["w1"], trained["w1"])
    # relabelling the experts (swap them everywhere) leaves the statistic unchanged
    def swap(tree):
        moe = dict(tree)
        moe["router"] = {"kernel": tree["router"]["kernel"][:, ::-1], "bias": tree["router"]["bias"][::-1]}
        for k in ("w1", "b1", "w2", "b2"):
            moe[k] = tree[k][::-1]
        return moe
    swapped = jax.tree.map(lambda x: x, params)
    for tower, block in (("actor", "block0"), ("critic", "block0"), ("critic", "block1")):
        swapped["params"][tower][block]["moe"] = swap(params["params"][tower][block]["moe"])
    again = spec.measure(env, net, swapped, norm, 1.5, key, episodes=3, max_steps=12, random_routers=0)
    for block, row in again["blocks"].items():
        assert row["js"] == pytest.approx(got["blocks"][block]["js"], rel=1e-4)
        np.testing.assert_allclose(row["p0"], got["blocks"][block]["p0"][::-1], rtol=1e-5)
