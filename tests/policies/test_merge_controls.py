"""The merge policy's controls (random pair, copy) and per-merge diagnostics, against hand computations."""
import copy
import functools
import json

import pytest
import torch
import torch.nn.functional as F

from mtil.cli import main
from mtil.engine import optimizer as optim
from mtil.model import backbone
from mtil.policies import TrainContext

from merge_helpers import merge_setup

COUNTS = torch.tensor([5, 40, 3, 30, 0, 1])   # a=1, b=3 by selection; slot 4 is frozen below, so c=5


@pytest.fixture(scope="module")
def clip():
    return backbone.load("mtil-tiny", None)


def setup(clip_model, seed=0, **merge_cfg):
    _, model, tracker, policy = merge_setup(clip_model, seed=seed, **merge_cfg)
    opt = optim.build_optimizer(model, 1e-3, 0.0)
    return model, policy, functools.partial(optim.reset_state, opt)


def merge_once(model, policy, resets, step=10, frozen=(4,)):
    """One merge step with COUNTS in every layer's window; returns the expert tensors before it."""
    before = [[t.detach().clone() for t in layer.expert_tensors()] for layer in model.layers]
    for layer in model.layers:
        layer.frozen[list(frozen)] = True
        layer.window_counts[:] = COUNTS
    policy.after_step(TrainContext(0, "Red", step, step, resets))
    return before


def merges(policy):
    return [e for e in policy.events if e["action"] == "merge"]


def test_copy_writes_exactly_expert_a_into_slot_c_and_nothing_else(clip):
    model, policy, resets = setup(clip.model, combine="copy")
    before = merge_once(model, policy, resets)
    for layer, old in zip(model.layers, before):
        for t, b in zip(layer.expert_tensors(), old):
            assert torch.equal(t.detach()[5], b[1])                 # W_c = W_a, a = the most selected
            for e in (0, 1, 2, 3, 4):
                assert torch.equal(t.detach()[e], b[e])
    assert {tuple(e["experts"]) for e in merges(policy)} == {(1, 3, 5)}


def test_the_reference_merge_writes_exactly_the_mean_into_the_least_used_unfrozen_slot(clip):
    model, policy, resets = setup(clip.model)
    before = merge_once(model, policy, resets, frozen=(5,))         # slot 5 frozen: c = 4 (0 selections)
    for layer, old in zip(model.layers, before):
        for t, b in zip(layer.expert_tensors(), old):
            assert torch.equal(t.detach()[4], (b[1] + b[3]) / 2)
            assert torch.equal(t.detach()[5], b[5])
    assert {tuple(e["experts"]) for e in merges(policy)} == {(1, 3, 4)}


def test_random_pair_is_the_seeded_draw_reproducible_and_not_the_top_pair(clip):
    """Pairs are drawn with torch.randperm from a generator seeded with the run's seed, layer after layer, over the
    eligible sources (the active experts: frozen ones may be sources); c is the least-used slot outside the pair."""
    model, policy, resets = setup(clip.model, seed=7, pair="random")
    before = merge_once(model, policy, resets)
    gen = torch.Generator().manual_seed(7)
    for layer, old, event in zip(model.layers, before, merges(policy)):
        a, b = torch.randperm(6, generator=gen)[:2].tolist()
        free = [e for e in range(6) if e not in (a, b, 4)]
        c = min(free, key=lambda e: (int(COUNTS[e]), e))
        assert event["experts"] == [a, b, c]
        for t, w in zip(layer.expert_tensors(), old):
            assert torch.equal(t.detach()[c], (w[a] + w[b]) / 2)
    pairs = [tuple(e["experts"][:2]) for e in merges(policy)]
    assert len(set(pairs)) > 1 and any(set(p) != {1, 3} for p in pairs)
    again = setup(clip.model, seed=7, pair="random")
    merge_once(*again)
    assert [e["experts"] for e in merges(again[1])] == [e["experts"] for e in merges(policy)]
    other = setup(clip.model, seed=8, pair="random")
    merge_once(*other)
    assert [e["experts"] for e in merges(other[1])] != [e["experts"] for e in merges(policy)]


def test_random_pair_generator_survives_a_checkpoint(clip):
    model, policy, resets = setup(clip.model, seed=3, pair="random")
    merge_once(model, policy, resets)
    state = copy.deepcopy(policy.state_dict())
    merge_once(model, policy, resets, step=20)
    model2, resumed, resets2 = setup(clip.model, seed=3, pair="random")
    resumed.load_state_dict(state)
    merge_once(model2, resumed, resets2, step=20)
    assert [e["experts"] for e in merges(resumed)] == [e["experts"] for e in merges(policy)]


def test_diagnostics_cosine_share_after_losses_and_frozen_at_end(clip):
    model, policy, resets = setup(clip.model, loss_steps=2)
    layer = model.layers[0]
    wa = torch.cat([t.detach()[1].flatten() for t in layer.expert_tensors()])
    wb = torch.cat([t.detach()[3].flatten() for t in layer.expert_tensors()])
    layer.task_counts[:] = torch.tensor([10, 50, 10, 40, 0, 2])
    for step, loss in zip(range(7, 10), (4.0, 3.0, 2.0)):     # steps 7..9
        policy.after_step(TrainContext(0, "Red", step, step, resets, loss=loss))
    for other in model.layers:
        other.frozen[4] = True
        other.window_counts[:] = COUNTS
    policy.after_step(TrainContext(0, "Red", 10, 10, resets, loss=1.0))    # merge 1, 3 -> 5
    event = merges(policy)[0]
    assert event["cosine"] == pytest.approx(float(F.cosine_similarity(wa, wb, dim=0)))
    assert event["share_before"] == pytest.approx(1 / 79)
    assert event["loss_earlier"] == pytest.approx(3.5) and event["loss_before"] == pytest.approx(1.5)
    for step, loss in ((11, 0.5), (12, 0.25), (13, 9.0)):                  # only the first two count
        policy.after_step(TrainContext(0, "Red", step, step, resets, loss=loss))
    layer.task_counts += torch.tensor([0, 30, 0, 30, 0, 40])              # slot 5 got 40 of 100 selections
    assert "share_after" not in event
    policy.end_task(TrainContext(0, "Red", 50, 50, resets))               # freeze: top-2 of the task = 1, 3
    assert event["share_after"] == pytest.approx(0.4) and event["selections_after"] == 100
    assert event["loss_after"] == pytest.approx(0.375) and event["loss_after_steps"] == 2
    assert event["frozen_at_end"] is False


@pytest.mark.slow
def test_controls_run_from_the_cli_and_write_their_diagnostics(tiny_args, tmp_path):
    args = [*tiny_args, "--set=policy.name=merge", "--set=policy.merge.every=2", "--set=policy.merge.warmup=2",
            "--set=policy.merge.pair=random", "--set=policy.merge.combine=copy"]
    events = []
    for out in ("a", "b"):
        assert main(["run", *args, "--out", str(tmp_path / out)]) == 0
        events.append([json.loads(line) for line in (tmp_path / out / "events.jsonl").read_text().splitlines()])
    assert events[0] == events[1]                                          # seeded: the same draws
    done = [e for e in events[0] if e["action"] == "merge"]
    assert done and all(-1 <= e["cosine"] <= 1 and "share_after" in e and e["loss_before"] is not None
                        for e in done)
