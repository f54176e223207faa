"""Run directory reading, the run figures, `mtil plot`, and `plots.compare_policies`.

Real tiny runs (merge on both towers with figures written by `mtil run`, grow on the image tower only) check the
figures against what `mtil run` actually writes; small hand-built run directories cover the edge cases (partial
runs, no events, no usage.npz, malformed files).
"""
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml
from PIL import Image

from mtil import plots
from mtil.cli import main
from mtil.errors import MtilError
from mtil.rundir.read import find_runs, load_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- run directories ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, stream_root):
    """merge (both towers, figures written by `mtil run`) and grow (image tower only, no figures)."""
    from conftest import TINY_OVERRIDES
    base = tmp_path_factory.mktemp("plot-runs")
    args = [f"--set={o}" for o in TINY_OVERRIDES] + [f"--set=data.root={stream_root}", "--set=data.order=[Red,Green,Blue]"]
    assert main(["run", *args, "--set=policy.name=merge", "--set=output.plots=true", "--out", str(base / "merge")]) == 0
    assert main(["run", *args, "--set=policy.name=grow", "--set=moe.towers=[image]", "--out", str(base / "grow")]) == 0
    return base


def fake_run(path, tasks=("A", "B", "C"), towers=("image", "text"), blocks=3, experts=4, iterations=10,
             snapshot_every=5, rows=None, events=True, usage=True, policy="freeze", seed=0):
    """A run directory in `mtil run`'s format with random content (`rows` < len(tasks): an unfinished run)."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = len(tasks)
    rows = n if rows is None else rows
    matrix = np.round(rng.uniform(20, 95, size=(rows, n)), 2)
    results = {"tasks": list(tasks), "matrix": matrix.tolist(), "complete": rows == n, "policy": policy,
               "eval_mode": "oracle", "seed": seed}
    if rows == n:
        results.update(transfer=float(np.mean([matrix[:j, j].mean() for j in range(1, n)])), avg=float(matrix.mean()),
                       last=float(matrix[-1].mean()), bwt=0.0)
    (path / "results.json").write_text(json.dumps(results))
    (path / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "policy": {"name": policy}, "moe": {"router": "shared"},
                                                      "train": {"iterations": iterations, "router_snapshot_every": snapshot_every}}))
    snapshots = rows * iterations // snapshot_every
    if usage:
        arrays = {"tasks": np.array(tasks[:rows]), "router_steps": np.arange(1, snapshots + 1) * snapshot_every}
        for tower in towers:
            arrays[f"{tower}_blocks"] = np.arange(blocks)
            arrays[f"{tower}_usage"] = rng.integers(0, 30, size=(rows, blocks, experts))
            arrays[f"{tower}_frozen"] = np.minimum(np.cumsum(np.ones((rows, blocks), dtype=int), axis=0), experts)
            arrays[f"{tower}_active"] = np.full((rows, blocks), experts)
            arrays[f"{tower}_router"] = rng.dirichlet(np.ones(experts), size=(snapshots, blocks)).astype(np.float32)
        np.savez(path / "usage.npz", **arrays)
    lines = []
    if events:
        for k in range(rows):
            for tower in towers:
                lines.append({"step": (k + 1) * iterations, "task": k, "task_name": tasks[k], "tower": tower,
                              "block": k % blocks, "action": "freeze", "experts": [k % experts], "counts": [9]})
    (path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return path


def panels(fig):
    return len(plots.panel_axes(fig))


def assert_png(path, min_size=(200, 100)):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_size[0] and im.size[1] >= min_size[1], im.size


def assert_svg(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")


# ---- real runs ----------------------------------------------------------------------------------------------------
def test_mtil_run_writes_every_figure_as_png_and_svg(real_runs):
    figures = real_runs / "merge" / "figures"
    for name in plots.FIGURES:
        assert_png(figures / f"{name}.png")
        assert_svg(figures / f"{name}.svg")
    assert sorted(p.name for p in figures.iterdir()) == sorted(f"{n}.{f}" for n in plots.FIGURES for f in ("png", "svg"))


def test_run_record_matches_what_mtil_run_wrote(real_runs):
    run = load_run(real_runs / "merge")
    assert run.tasks == ["Red", "Green", "Blue"] and run.complete and run.policy == "merge"
    assert run.towers == ["image", "text"] and run.layers()[0] == "image.0"
    assert run.iterations == 6 and run.task_boundaries() == [6, 12]
    assert {e["action"] for e in run.events} >= {"merge", "freeze"}
    assert run.usage["image_usage"].shape[0] == 3 and len(run.usage["router_steps"]) == run.usage["image_router"].shape[0]
    assert find_runs(real_runs) == [real_runs / "grow", real_runs / "merge"]


def test_panel_counts_on_a_real_run(real_runs):
    run = load_run(real_runs / "merge")
    assert panels(plots.fixed_expert_heatmap(run)) == 2                  # one per tower
    assert panels(plots.usage_heatmap(run, "image")) == 3                # one per task
    assert panels(plots.usage_heatmap(run, "text")) == 3
    assert panels(plots.accuracy_matrix(run)) == 1
    assert panels(plots.router_weights(run, "text.2")) == 1
    assert panels(plots.event_timeline(run)) == 1
    frozen = plots.fixed_expert_heatmap(run).axes[0]
    shown = sorted(int(t.get_text()) for t in frozen.texts)             # the annotated cell values
    assert shown == sorted(run.usage["image_frozen"].ravel().tolist())


def test_single_tower_run_skips_the_text_figures(real_runs, tmp_path):
    run = load_run(real_runs / "grow")
    assert run.towers == ["image"] and not (run.path / "figures").exists()
    assert panels(plots.fixed_expert_heatmap(run)) == 1
    assert panels(plots.fixed_expert_heatmap(run, value="active")) == 1
    with pytest.raises(plots.MissingData, match="no text-tower adapters"):
        plots.usage_heatmap(run, "text")
    written, skipped = plots.write_run_figures(run, tmp_path / "figs", formats=["png"])
    assert set(skipped) == {"usage_text"}
    assert sorted(p.name for p in written) == sorted(f"{n}.png" for n in plots.FIGURES if n != "usage_text")
    assert not list((tmp_path / "figs").glob(".*"))                      # no temp files left behind


def test_mtil_plot_writes_where_asked(real_runs, tmp_path, capsys):
    out = tmp_path / "elsewhere"
    assert main(["plot", str(real_runs / "grow"), "--out", str(out), "--formats", "png", "--layer", "image.2"]) == 0
    printed = capsys.readouterr().out
    assert f"to {out}" in printed and "skipped usage_text" in printed
    for name in plots.FIGURES:
        if name != "usage_text":
            assert str(out / f"{name}.png") in printed
            assert_png(out / f"{name}.png")
    assert not list(out.glob("*.svg"))


def test_mtil_plot_unknown_layer_is_one_line(real_runs, capsys):
    assert main(["plot", str(real_runs / "grow"), "--layer", "text.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no adapter layer 'text.0'" in err[0] and "image.0" in err[0]


# ---- bad input ----------------------------------------------------------------------------------------------------
def test_mtil_plot_on_a_non_run_dir_is_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "is not an mtil run directory (results.json missing)" in err[0] and "--out of a `mtil run`" in err[0]
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_folder_of_runs_names_one_of_them(tmp_path):
    fake_run(tmp_path / "grid" / "a-seed0")
    fake_run(tmp_path / "grid" / "b-seed0")
    with pytest.raises(MtilError, match="holds 2 run directories; give one of them"):
        load_run(tmp_path / "grid")
    assert find_runs(tmp_path) == [tmp_path / "grid" / "a-seed0", tmp_path / "grid" / "b-seed0"]
    assert find_runs(tmp_path / "grid" / "a-seed0") == [tmp_path / "grid" / "a-seed0"]


@pytest.mark.parametrize("file, content, message", [
    ("results.json", "{not json", "results.json is malformed (not JSON"),
    ("results.json", "[1, 2]", "expected an object"),
    ("results.json", '{"tasks": ["A"], "matrix": [[1, 2]]}', "matrix row 0 must hold 1 numbers"),
    ("events.jsonl", '{"step": 1, "action": "merge"}\nnope\n', "line 2 is not JSON"),
    ("usage.npz", "not a zip", "usage.npz is malformed (not a numpy .npz archive"),
    ("config.yaml", "a: [unclosed", "config.yaml is malformed"),
])
def test_malformed_files_are_one_clear_error(tmp_path, capsys, file, content, message):
    run = fake_run(tmp_path / "run")
    (run / file).write_text(content)
    with pytest.raises(MtilError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_run(run)
    assert main(["plot", str(run)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (run / "figures").exists()


def test_bad_formats_are_rejected_before_writing(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    assert main(["plot", str(run), "--formats", "png,bmpx"]) == 2
    assert "unknown figure format bmpx" in capsys.readouterr().err
    assert not (run / "figures").exists()


def test_unwritable_out_is_one_line_and_keeps_earlier_figures(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    plots.plot_run(run, formats=["png"])
    before = {p.name: p.read_bytes() for p in (run / "figures").iterdir()}
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["plot", str(run), "--out", str(blocker / "figs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "Not a directory" in err[0]
    assert {p.name: p.read_bytes() for p in (run / "figures").iterdir()} == before
    with pytest.raises(MtilError, match="is not a folder"):
        find_runs(blocker)


# ---- edge cases on hand-built runs --------------------------------------------------------------------------------
def test_partial_run_plots_what_it_has(tmp_path):
    run = load_run(fake_run(tmp_path / "run", tasks=("A", "B", "C", "D"), rows=2))
    assert not run.complete
    assert panels(plots.usage_heatmap(run, "image")) == 2
    fig = plots.accuracy_matrix(run)
    assert "partial run: 2 of 4" in fig.axes[0].get_title()
    assert panels(plots.router_weights(run)) == 1
    paths = plots.plot_run(run.path, formats=("png",))
    assert len(paths) == len(plots.FIGURES)


def test_complete_run_title_has_the_metrics(tmp_path):
    run = load_run(fake_run(tmp_path / "run"))
    title = plots.accuracy_matrix(run).axes[0].get_title()
    r = run.results
    assert f"Transfer {r['transfer']:.1f}" in title and f"Avg {r['avg']:.1f}" in title and f"Last {r['last']:.1f}" in title


def test_no_events_gives_an_empty_state_message(tmp_path):
    run = load_run(fake_run(tmp_path / "run", events=False, policy="none"))
    fig = plots.event_timeline(run)
    assert any("no merge / grow / freeze events" in t.get_text() for t in fig.axes[0].texts)


def test_without_usage_only_the_matrix_and_events_are_written(tmp_path):
    run = fake_run(tmp_path / "run", usage=False)
    written, skipped = plots.write_run_figures(run, formats="svg")
    assert sorted(p.name for p in written) == ["accuracy_matrix.svg", "events.svg"]
    assert set(skipped) == {"fixed_experts", "usage_image", "usage_text", "router_weights"}
    for path in written:
        assert_svg(path)


def test_text_only_run_defaults_to_its_first_layer(tmp_path):
    run = load_run(fake_run(tmp_path / "run", towers=("text",)))
    assert plots.default_layer(run) == "text.0"
    with pytest.raises(MtilError, match="no adapter layer 'image.0'"):
        plots.router_weights(run, "image.0")
    written, skipped = plots.write_run_figures(run, formats=["png"])
    assert set(skipped) == {"usage_image"} and len(written) == len(plots.FIGURES) - 1


def test_figures_do_not_touch_pyplot_state(tmp_path):
    import matplotlib.pyplot as plt
    before = plt.get_fignums()
    plots.plot_run(fake_run(tmp_path / "run"), formats=["png"])
    assert plt.get_fignums() == before


# ---- compare_policies ---------------------------------------------------------------------------------------------
def test_compare_policies_two_panels_mean_and_std(tmp_path):
    by_policy = {}
    for policy in ("freeze", "merge"):
        by_policy[policy] = [json.loads((fake_run(tmp_path / f"{policy}{s}", policy=policy, seed=s + len(policy))
                                         / "results.json").read_text()) for s in range(2)]
    unfinished = json.loads((fake_run(tmp_path / "x", rows=1) / "results.json").read_text())
    fig = plots.compare_policies({**by_policy, "grow": [unfinished]})   # a policy with no finished run is left out
    assert panels(fig) == 2
    per_dataset = plots.panel_axes(fig)[0]
    heights = [p.get_height() for p in per_dataset.patches]
    last_b = [r["matrix"][-1][1] for r in by_policy["freeze"]]
    assert heights[1] == pytest.approx(np.mean(last_b))                 # freeze, dataset B: mean over the seeds
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["freeze (n=2)", "merge (n=2)"]
    plots.save_figure(fig, tmp_path / "compare.png")
    assert_png(tmp_path / "compare.png")


def test_compare_policies_rejects_nothing_finished_or_mixed_sequences(tmp_path):
    unfinished = json.loads((fake_run(tmp_path / "x", rows=1) / "results.json").read_text())
    with pytest.raises(MtilError, match="no finished runs"):
        plots.compare_policies({"merge": [unfinished]})
    a = json.loads((fake_run(tmp_path / "a") / "results.json").read_text())
    b = json.loads((fake_run(tmp_path / "b", tasks=("A", "C", "B")) / "results.json").read_text())
    with pytest.raises(MtilError, match="different task sequences"):
        plots.compare_policies({"merge": [a], "grow": [b]})
