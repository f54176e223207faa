"""Issue 26 as two tables through the CLI: what mtil cannot vouch for is refused (exit 2, one `mtil: error:` line
naming what differs, every file that existed before unchanged), and what it can handle is handled (exit 0, checked).

Kinds: provenance (resume, compare cell reuse), report validation and grouping, config files, prepared data,
images, the user's files (foreign --out, the lock), plasticity / RL inputs. The table harness is
tests/test_bad_inputs.py's (same Case, same assert_refused); the rows here need runs, which a module fixture makes once.
Beside the tables: a stale lock, a full disk, a failed permission and Ctrl-C during a checkpoint write.
"""
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES, make_stream
from PIL import Image
from test_bad_inputs import Case, _fake_run, assert_refused, tiny

from mtil import config, provenance
from mtil.cli import main
from mtil.data.prepared import save_prepared
from mtil.rundir.claim import LOCK_FILE, claim

RUN_ONE = ["--set=data.order=[Red]"]


# ---- runs made once ---------------------------------------------------------------------------------------------

class Made:
    """Two backbone files (random-init mtil-tiny weights of two seeds), a finished 1-task run of each seed 42 and 1
    on backbone A, a 1-cell compare grid on backbone A, and the data root they read."""


def _fake_run_of(path, cfg):
    """A finished fake run (test_bad_inputs._fake_run) whose results.json records the provenance of `cfg`."""
    run = _fake_run(path)
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({**results, "provenance": provenance.record(cfg)}))


def _weights(path: Path, seed: int) -> Path:
    from mtil.model import backbone
    torch.manual_seed(seed)
    torch.save(backbone.load("mtil-tiny", None).model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory, stream_root):
    m = Made()
    base = tmp_path_factory.mktemp("made")
    m.data = stream_root
    m.a, m.b = _weights(base / "a.pt", 0), _weights(base / "b.pt", 1)
    for name, seed in (("run", 42), ("run-seed1", 1)):
        assert main(["run", *tiny(stream_root, *RUN_ONE, f"--set=model.pretrained={m.a}", f"--set=seed={seed}",
                                  "--out", str(base / name))]) == 0
    m.run, m.run_seed1 = base / "run", base / "run-seed1"
    m.cmp = base / "cmp.yaml"
    m.cmp.write_text(f"data: {{root: '{stream_root}', order: [Red]}}\nmodel: {{pretrained: '{m.a}'}}\n")
    assert main(compare_argv(m, base / "grid")) == 0
    m.grid = base / "grid"
    return m


def compare_argv(m, out, *extra):
    return ["compare", str(m.cmp), "--policies", "none", "--seeds", "0", "--out", str(out),
            *[f"--set={o}" for o in TINY_OVERRIDES if not o.startswith("model.pretrained")], *extra]


def other_red(t) -> Path:
    """A copy of the data root whose Red/ holds other images (same names, classes and counts)."""
    root = t.tmp / "other-data"
    shutil.copytree(t.data, root)
    shutil.rmtree(root / "Red")
    make_stream(root, tasks=("Red",), seed=7)
    return root


def prepared(root: Path, name: str, classes=3, train=12, test=6, seed=0, names=None) -> Path:
    """A dataset written by mtil's own writer (so mtil.json records its fingerprint)."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 255, size=(train + test, 16, 16, 3)).astype(np.uint8)
    labels = [i % classes for i in range(train + test)]
    save_prepared(root, name, {"train": (imgs[:train], labels[:train]), "test": (imgs[train:], labels[train:])},
                  names or [f"{name.lower()} {c}" for c in range(classes)])
    return root / name


def rewrite_arrow(split_dir: Path, keep_rows: int) -> None:
    """Keep the first rows of a split's arrow file (a cut at a record-batch boundary: the file stays valid)."""
    import pyarrow as pa
    f = next(split_dir.glob("*.arrow"))
    with pa.OSFile(str(f), "rb") as src:    # read into memory: the file is rewritten below
        table = pa.ipc.open_stream(src).read_all()
    with pa.OSFile(str(f), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.slice(0, keep_rows))


def image_bytes(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def raw_dataset(root: Path, name: str, images: list[bytes], labels: list[int], classes: list[str]) -> None:
    """A prepared-format dataset written by hand (no mtil.json), holding exactly these encoded images."""
    import datasets
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
    split = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in images], "label": labels},
                                       features=feats)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(root / name))


# ---- refused: exit 2, one line, nothing changed ------------------------------------------------------------------
# each row: (t, made) -> (argv, substrings of the error line)

def resume_checkpoint_replaced_by_another_seeds(t, m):
    shutil.copytree(m.run, t.out)
    shutil.copy(m.run_seed1 / "checkpoints" / "last.pt", Path(t.out) / "checkpoints" / "last.pt")
    return ["run", "--out", t.out, "--resume"], ["cannot resume", "seed: 1 there, 42 now"]


def resume_with_another_backbone_file(t, m):
    shutil.copytree(m.run, t.out)
    return (["run", "--out", t.out, "--resume", f"--set=model.pretrained={m.b}"],
            ["cannot resume", "backbone (model.pretrained): file sha256", "there", "now"])


def resume_with_a_random_init_backbone(t, m):
    shutil.copytree(m.run, t.out)
    return ["run", "--out", t.out, "--resume", "--set=model.pretrained=null"], ["backbone", "random-init (gelu) now"]


def resume_with_other_images_under_the_same_name(t, m):
    shutil.copytree(m.run, t.out)
    return (["run", "--out", t.out, "--resume", f"--set=data.root={other_red(t)}"],
            ["cannot resume", "dataset Red", "content sha256"])


def resume_config_yaml_deleted_and_lr_changed(t, m):
    shutil.copytree(m.run, t.out)
    (Path(t.out) / "config.yaml").unlink()
    return (["run", *tiny(t.data, *RUN_ONE, f"--set=model.pretrained={m.a}", "--set=train.lr=0.05", "--out", t.out,
                          "--resume")], ["cannot resume", "train.lr: 0.01 there, 0.05 now"])


def resume_into_a_folder_being_written(t, m):
    shutil.copytree(m.run, t.out)
    held = claim(t.out, resume=True, command="test")      # another writer holds the lock (this process here)
    t.cleanup.append(held.release)
    return ["run", "--out", t.out, "--resume"], ["is being written by process", str(os.getpid()), "mtil test"]


def run_into_a_folder_being_written(t, m):
    Path(t.out).mkdir()
    held = claim(t.out, command="test")
    t.cleanup.append(held.release)
    return ["run", *tiny(t.data, *RUN_ONE, "--out", t.out)], ["is being written by process"]


def compare_cell_being_written(t, m):
    shutil.copytree(m.grid, t.out)
    held = claim(Path(t.out) / "none-seed0", resume=True, command="test")
    shutil.rmtree(Path(t.out) / "none-seed0" / "checkpoints")   # an interrupted cell: compare resumes it
    (Path(t.out) / "none-seed0" / "results.json").unlink()
    t.cleanup.append(held.release)
    return compare_argv(m, t.out), ["none-seed0", "is being written by process"]


def compare_reuse_after_backbone_changed(t, m):
    shutil.copytree(m.grid, t.out)
    return compare_argv(m, t.out, f"--set=model.pretrained={m.b}"), ["none-seed0", "backbone", "new --out"]


def compare_reuse_after_data_root_content_changed(t, m):
    shutil.copytree(m.grid, t.out)
    return (compare_argv(m, t.out, f"--set=model.pretrained={m.a}", f"--set=data.root={other_red(t)}"),
            ["none-seed0", "dataset Red", "content sha256"])


def compare_reuse_after_cell_config_deleted_and_lr_changed(t, m):
    shutil.copytree(m.grid, t.out)
    (Path(t.out) / "none-seed0" / "config.yaml").unlink()
    return (compare_argv(m, t.out, f"--set=model.pretrained={m.a}", "--set=train.lr=0.05"),
            ["none-seed0", "train.lr: 0.01 there, 0.05 now"])


def out_holds_the_users_files(t, m):
    out = Path(t.out)
    out.mkdir()
    (out / "config.yaml").write_text("my own notes: not an mtil config\n")
    (out / "notes.txt").write_text("mine")
    (out / "figures").mkdir()
    return ["run", *tiny(t.data, *RUN_ONE, "--out", t.out)], ["holds files mtil did not write", "config.yaml",
                                                              "notes.txt", "new or empty --out"]


def out_is_a_file(t, m):
    Path(t.out).write_text("a file")
    return ["run", *tiny(t.data, *RUN_ONE, "--out", t.out)], ["is a file, not a folder"]


def out_is_a_5000_character_path(t, m):
    return ["run", *tiny(t.data, *RUN_ONE, "--out", str(t.tmp / ("o" * 5000)))], ["cannot be used", "File name too long",
                                                                               "characters"]


def plasticity_out_is_a_file(t, m):
    Path(t.out).write_text("a file")
    return ["plasticity", "--out", t.out], ["--out", "is a file"]


def rl_out_is_a_file(t, m):
    pytest.importorskip("jax", reason="mtil rl needs the [rl] extra")
    Path(t.out).write_text("a file")
    return ["rl", "rl/minatar.yaml", "--out", t.out], ["--out", "is a file"]


def _fake_rl_run(t) -> Path:
    from mtil.rl import train
    out = Path(t.out)
    out.mkdir()
    (out / "config.yaml").write_text(config.dump(train.load_config("rl/minatar.yaml")))
    np.savez(out / "checkpoint.npz", meta=np.array("{}"))
    return out


def rl_resume_with_another_lr_and_seed(t, m):
    pytest.importorskip("jax", reason="mtil rl needs the [rl] extra")
    out = _fake_rl_run(t)
    return (["rl", "rl/minatar.yaml", "--set=ppo.lr=1e-3", "--set=seed=3", "--out", str(out), "--resume"],
            ["cannot resume", "ppo.lr: 0.0005 there, 0.001 now", "seed: 0 there, 3 now"])


def rl_resume_without_its_config(t, m):
    pytest.importorskip("jax", reason="mtil rl needs the [rl] extra")
    out = _fake_rl_run(t)
    (out / "config.yaml").unlink()
    return ["rl", "rl/minatar.yaml", "--out", str(out), "--resume"], ["no config.yaml", "cannot be checked"]


def report_on_an_rl_run(t, m):
    out = Path(t.out)
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"kind": "rl", "curve": [], "complete": True}))
    return ["report", t.out], ["is an `mtil rl` run", f"mtil rl --compare {t.out}"]


def report_on_a_plasticity_study(t, m):
    out = Path(t.out)
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"methods": [], "seeds": [], "summary": {}, "runs": {}}))
    return ["report", t.out], ["mtil plasticity", "table.md"]


def _report_row(t, value):
    run = _fake_run(t.tmp / "fake" / "a")
    results = json.loads((run / "results.json").read_text())
    results["matrix"][1][0] = value
    (run / "results.json").write_text(json.dumps(results))
    return run


def report_accuracy_above_100(t, m):
    return ["report", str(_report_row(t, 150.0))], ["results.json is malformed", "is 150.0", "[0, 100]"]


def report_accuracy_below_0(t, m):
    return ["report", str(_report_row(t, -20.0))], ["is -20.0", "[0, 100]"]


def report_nan_accuracy(t, m):
    return ["report", str(_report_row(t, float("nan")))], ["is nan", "[0, 100]"]


def _config_file(t, text) -> str:
    path = t.tmp / "cfg.yaml"
    path.write_text(text)
    return str(path)


def config_key_given_twice(t, m):
    return ([_config_file(t, "train:\n  lr: 0.1\n  iterations: 3\n  lr: 0.2\n"), *tiny(t.data, "--out", t.out)],
            ["cfg.yaml gives the key 'lr' twice", "line 2 and line 4"])


def config_section_given_twice(t, m):
    return ([_config_file(t, "train:\n  lr: 0.1\nmoe:\n  hidden: 8\ntrain:\n  iterations: 3\n"),
             *tiny(t.data, "--out", t.out)], ["the key 'train' twice", "line 1 and line 5"])


def config_inherit_is_a_list(t, m):
    return ([_config_file(t, "inherit: [demo.yaml, compare.yaml]\n"), *tiny(t.data, "--out", t.out)],
            ["'inherit' must name one config file", "list"])


def config_inherit_is_an_integer(t, m):
    return [_config_file(t, "inherit: 3\n"), *tiny(t.data, "--out", t.out)], ["'inherit' must name one", "int 3"]


def config_inherit_resolves_beside_the_packaged_file(t, m):
    """demo_taskfree.yaml inherits the packaged demo.yaml, not the user's demo.yaml in the current folder (whose
    top_k 9 would give another message): the error is the one of the packaged values."""
    (t.tmp / "demo.yaml").write_text("moe: {top_k: 9}\n")
    return (["run", "demo_taskfree.yaml", "--set=moe.num_experts=1", "--out", t.out],
            ["'moe.top_k' = 2", "moe.num_experts = 1"])


def config_null_section_in_a_file(t, m):
    return [_config_file(t, "demo: null\n"), *tiny(t.data, "--out", t.out)], ["'demo' is a section", "not null"]


def config_null_section_by_set(t, m):
    return tiny(t.data, "--set=moe=null", "--out", t.out), ["'moe' is a section", "not null"]


def config_section_given_a_number(t, m):
    return tiny(t.data, "--set=train=5", "--out", t.out), ["'train' is a section", "not int 5"]


def config_exponent_float_for_a_null_default_key(t, m):
    """`train.grad_clip=1e-3` (default null) is read as the float 0.001 like `train.lr=1e-2`: the line is about
    the next bad key, not grad_clip."""
    return tiny(t.data, "--set=train.grad_clip=1e-3", "--set=train.lr=1e-2", "--set=moe.top_k=99", "--out", t.out), \
        ["'moe.top_k' = 99"]


def config_path_of_5000_characters(t, m):
    return [str(t.tmp / ("c" * 5000)), *tiny(t.data, "--out", t.out)], ["not found", "characters"]


def selector_neighbours_larger_than_the_data(t, m):
    return (tiny(t.data, *RUN_ONE, "--set=selector.neighbours=1000", "--out", t.out),
            ["'selector.neighbours' = 1000", "24 training images", "at most 23"])


def selector_components_larger_than_the_data(t, m):
    return (tiny(t.data, *RUN_ONE, "--set=selector.method=pca", "--set=selector.components=500",
                 "--set=selector.max_fit_samples=12", "--out", t.out),
            ["'selector.components' = 500", "at most 11"])


def pretrained_is_a_text_file(t, m):
    text = t.tmp / "weights.pt"
    text.write_text("these are not weights\n" * 20)
    return tiny(t.data, *RUN_ONE, f"--set=model.pretrained={text}", "--out", t.out), ["could not load weights",
                                                                                   "weights.pt"]


def pretrained_path_of_5000_characters(t, m):
    return tiny(t.data, *RUN_ONE, f"--set=model.pretrained={t.tmp / ('p' * 5000)}.pt", "--out", t.out), \
        ["model.pretrained file", "not found"]


def data_root_of_5000_characters(t, m):
    return tiny(t.data, *RUN_ONE, f"--set=data.root={t.tmp / ('d' * 5000)}", "--out", t.out), \
        ["data root", "does not exist"]


def dataset_twice_in_another_case(t, m):
    return tiny(t.data, "--set=data.order=[Red,red]", "--out", t.out), ["data.order", "repeated: Red = red"]


def dataset_name_that_is_a_path(t, m):
    return tiny(t.data, "--set=data.order=[../data/Red]", "--out", t.out), ["data.order", "no path"]


def two_folders_of_one_dataset(t, m):
    shutil.copytree(t.data / "Red", t.data / "red")
    return tiny(t.data, *RUN_ONE, "--out", t.out), ["holds 2 folders of dataset Red", "Red, red"]


def split_truncated_at_a_record_batch(t, m):
    prepared(t.data, "Cut", train=12, test=9)
    rewrite_arrow(t.data / "Cut" / "test", 6)
    return tiny(t.data, "--set=data.order=[Cut]", "--out", t.out), ["split 'test'", "has 6 rows but mtil prepare "
                                                                                     "wrote 9", "mtil prepare Cut"]


def check_finds_the_truncated_split(t, m):
    prepared(t.data, "Cut", train=12, test=9)
    rewrite_arrow(t.data / "Cut" / "test", 6)
    return ["prepare", "Cut", "--check", "--root", str(t.data)], ["has 6 rows but mtil prepare wrote 9"]


def check_finds_a_data_file_changed_in_place(t, m):
    path = prepared(t.data, "Flip", train=12, test=6)
    f = next((path / "train").glob("*.arrow"))
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF   # inside an image's bytes: same size, other content; only re-hashing finds it
    f.write_bytes(bytes(data))
    return ["prepare", "Flip", "--check", "--root", str(t.data)], ["split 'train'", "changed since mtil prepare"]


def data_file_of_another_size(t, m):
    path = prepared(t.data, "Grow", train=12, test=6)
    f = next((path / "train").glob("*.arrow"))
    f.write_bytes(f.read_bytes() + b"\0" * 64)
    return tiny(t.data, "--set=data.order=[Grow]", "--out", t.out), ["split 'train'", "not what mtil prepare wrote",
                                                                     "bytes"]


def splits_name_classes_in_another_order(t, m):
    info = t.data / "Green" / "test" / "dataset_info.json"
    data = json.loads(info.read_text())
    data["features"]["label"]["names"] = list(reversed(data["features"]["label"]["names"]))
    info.write_text(json.dumps(data))
    return tiny(t.data, "--out", t.out), ["'train' and 'test'", "name the classes differently", "label 0"]


def class_list_edited_after_prepare(t, m):
    prepared(t.data, "Named", classes=2, names=["cat", "dog"])
    for split in ("train", "test"):
        info = t.data / "Named" / split / "dataset_info.json"
        info.write_text(info.read_text().replace('"cat"', '"lion"'))
    return tiny(t.data, "--set=data.order=[Named]", "--out", t.out), ["class list", "not the one mtil prepare wrote"]


def float_image_with_no_known_range(t, m):
    img = (np.arange(64, dtype=np.float32).reshape(8, 8) * 100.0)
    raw_dataset(t.data, "Floaty", [image_bytes(img, "TIFF")] * 8, [0, 1] * 4, ["a", "b"])
    return tiny(t.data, "--set=data.order=[Floaty]", "--out", t.out), ["of Floaty/train cannot be decoded",
                                                                         "a float image with values in [0, 6300]"]


def prepare_template_with_two_placeholders(t, m):
    src = t.tmp / "src"
    for c in ("cat", "dog"):
        (src / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(src / c / f"{i}.png")
    return (["prepare", "Twice", "--root", str(t.tmp / "prep"), "--from", str(src), "--template", "a {} of a {}."],
            ["exactly one '{}'", "a {} of a {}."])


def prepare_class_without_a_training_image(t, m):
    src = t.tmp / "src"
    for split, classes in (("train", ("cat", "dog")), ("test", ("cat", "dog", "emu"))):
        for c in classes:
            (src / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (90, 0, 0)).save(src / split / c / "0.png")
    return (["prepare", "Zoo", "--root", str(t.tmp / "prep"), "--from", str(src)],
            ["1 class(es) have no training image", "'emu'", "nothing was written"])


def net2wider_narrower_than_the_chunks(t, m):
    return ["plasticity", "--set=methods.net2wider.hidden=5", "--set=study.chunks=10", "--out", t.out], \
        ["'methods.net2wider.hidden' = 5", "study.chunks = 10"]


def plasticity_device_banana(t, m):
    return ["plasticity", "--set=train.device=banana", "--out", t.out], ["'train.device' = 'banana'",
                                                                         "auto | cpu | cuda | cuda:N"]


REFUSED = [resume_checkpoint_replaced_by_another_seeds, resume_with_another_backbone_file,
           resume_with_a_random_init_backbone, resume_with_other_images_under_the_same_name,
           resume_config_yaml_deleted_and_lr_changed, resume_into_a_folder_being_written,
           run_into_a_folder_being_written, compare_cell_being_written, compare_reuse_after_backbone_changed,
           compare_reuse_after_data_root_content_changed, compare_reuse_after_cell_config_deleted_and_lr_changed,
           out_holds_the_users_files, out_is_a_file, out_is_a_5000_character_path, plasticity_out_is_a_file,
           rl_out_is_a_file, rl_resume_with_another_lr_and_seed, rl_resume_without_its_config, report_on_an_rl_run,
           report_on_a_plasticity_study, report_accuracy_above_100, report_accuracy_below_0, report_nan_accuracy,
           config_key_given_twice, config_section_given_twice, config_inherit_is_a_list, config_inherit_is_an_integer,
           config_inherit_resolves_beside_the_packaged_file, config_null_section_in_a_file,
           config_null_section_by_set, config_section_given_a_number, config_exponent_float_for_a_null_default_key,
           config_path_of_5000_characters, selector_neighbours_larger_than_the_data,
           selector_components_larger_than_the_data, pretrained_is_a_text_file, pretrained_path_of_5000_characters,
           data_root_of_5000_characters, dataset_twice_in_another_case, dataset_name_that_is_a_path,
           two_folders_of_one_dataset, split_truncated_at_a_record_batch, check_finds_the_truncated_split,
           check_finds_a_data_file_changed_in_place, data_file_of_another_size, splits_name_classes_in_another_order,
           class_list_edited_after_prepare, float_image_with_no_known_range, prepare_template_with_two_placeholders,
           prepare_class_without_a_training_image, net2wider_narrower_than_the_chunks, plasticity_device_banana]


@pytest.fixture()
def data_copy(stream_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(stream_root, root)
    return root


@pytest.mark.parametrize("row", REFUSED, ids=lambda f: f.__name__)
def test_refused_in_one_line_nothing_changed(row, made, data_copy, tmp_path, capsys, monkeypatch):
    t = Case(tmp_path, data_copy)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MTIL_CACHE", str(tmp_path / "cache"))
    try:
        argv, expected = row(t, made)
        assert_refused(tmp_path, capsys, argv, expected)
    finally:
        for undo in t.cleanup:
            undo()


# ---- handled: exit 0, and what it does is checked ------------------------------------------------------------------
# each row: (t, made) -> (argv, check(stdout, stderr))

def resume_after_the_data_root_moved(t, m):
    """Provenance is content, not place: the run's data copied to another path resumes (a moved MTIL_CACHE too)."""
    shutil.copytree(m.run, t.out)
    moved = t.tmp / "elsewhere" / "data"
    shutil.copytree(m.data, moved)

    def check(out, err):
        assert json.loads((Path(t.out) / "results.json").read_text())["matrix"] == \
            json.loads((m.run / "results.json").read_text())["matrix"]
    return ["run", "--out", t.out, "--resume", f"--set=data.root={moved}"], check


def resume_after_repairing_data_nothing_read_yet(t, m):
    """A dataset no computed number has read (a task not started) may change before --resume: re-prepared data."""
    out = Path(t.out)
    assert main(["run", *tiny(t.data, "--set=data.order=[Red,Green]", "--set=eval.mode=oracle",
                              "--set=train.checkpoint_every=2", "--out", t.out)]) == 0
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    state["progress"], state["rows"] = {"task": 0, "phase": "trained", "step": 6, "global_step": 6}, []
    state["selector_accuracy"], state["params"] = [], state["params"][:1]
    torch.save(state, out / "checkpoints" / "last.pt")   # as if it stopped before the first evaluation
    shutil.rmtree(t.data / "Green")
    make_stream(t.data, tasks=("Green",), seed=11)

    def check(out_text, err):
        assert json.loads((out / "results.json").read_text())["complete"]
    return ["run", "--out", t.out, "--resume", "--set=data.order=[Red,Green]"], check


def compare_reuses_its_cell_without_config_yaml(t, m):
    shutil.copytree(m.grid, t.out)
    (Path(t.out) / "none-seed0" / "config.yaml").unlink()

    def check(out, err):
        assert "reused 1 finished cell(s)" in out
    return compare_argv(m, t.out, f"--set=model.pretrained={m.a}"), check


def run_records_its_provenance(t, m):
    def check(out, err):
        rec = json.loads((Path(t.out) / "results.json").read_text())["provenance"]
        assert rec["backbone"] == {"kind": "file", "sha256": provenance.file_sha256(m.a), "bytes": m.a.stat().st_size,
                                  "activation": "gelu"}
        assert set(rec["datasets"]) == {"Red"} and set(rec["datasets"]["Red"]["splits"]) == {"train", "test"}
        assert rec["datasets"]["Red"]["splits"]["test"]["rows"] == 12
        assert rec["config_sha256"] == provenance.sha256(provenance.identity(rec["config"]))
        state = torch.load(Path(t.out) / "checkpoints" / "last.pt", weights_only=False)
        assert state["provenance"] == rec
    return ["run", *tiny(t.data, *RUN_ONE, f"--set=model.pretrained={m.a}", "--out", t.out)], check


def run_into_an_empty_folder_and_a_stale_lock(t, m):
    """An empty --out is the user's to give; a lock file left by a process that is gone does not hold."""
    out = Path(t.out)
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": 999999, "command": "run"}))

    def check(out_text, err):
        assert json.loads((out / "results.json").read_text())["complete"]
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    return ["run", *tiny(t.data, *RUN_ONE, "--out", t.out)], check


def report_groups_by_record_not_folder_names(t, m):
    """Two seeds in folders named alike but run with other policies are two rows; two seeds in unrelated folders
    with one config are one row of 2 seeds."""
    grid = t.tmp / "grid"
    from test_bad_inputs import tiny_config
    for folder, policy, seed in (("merge-seed0", "freeze", 0), ("x", "freeze", 1), ("merge-seed1", "merge", 1)):
        cfg = tiny_config(t.data, f"--set=policy.name={policy}", f"--set=seed={seed}", "--set=data.order=[Red,Green]")
        _fake_run_of(grid / folder, cfg)

    def check(out, err):
        assert "| freeze | 2 |" in out and "| merge | 1 |" in out
    return ["report", str(grid)], check


def report_keeps_runs_of_other_backbones_apart(t, m):
    grid = t.tmp / "grid"
    from test_bad_inputs import tiny_config
    for folder, weights, seed in (("a0", m.a, 0), ("a1", m.a, 1), ("rand", None, 2)):
        cfg = tiny_config(t.data, f"--set=model.pretrained={'null' if weights is None else weights}",
                          f"--set=seed={seed}", "--set=data.order=[Red,Green]")
        _fake_run_of(grid / folder, cfg)

    def check(out, err):
        assert "| freeze (backbone=file sha256" in out and "| 2 |" in out
        assert "| freeze (backbone=random-init (gelu)) | 1 |" in out
    return ["report", str(grid)], check


def report_batch_selector_eval_batch_size_splits_groups(t, m):
    grid = t.tmp / "grid"
    from test_bad_inputs import tiny_config
    for folder, mode, bs in (("s16", "sample", 16), ("s64", "sample", 64), ("b16", "batch", 16), ("b64", "batch", 64)):
        cfg = tiny_config(t.data, f"--set=selector.mode={mode}", f"--set=eval.batch_size={bs}",
                          f"--set=seed={bs}", "--set=data.order=[Red,Green]")
        _fake_run_of(grid / folder, cfg)

    def check(out, err):
        assert "| freeze (selector.mode=sample) | 2 |" in out         # batch size changes no per-sample decision
        assert "eval.batch_size=16" in out and "eval.batch_size=64" in out
    return ["report", str(grid)], check


def report_moe_runs_ignore_the_baselines_settings(t, m):
    """The MoE adapters never read method.finetune.*: two seeds that differ in it are one row; two fine-tuning runs
    that differ in it are two."""
    grid = t.tmp / "grid"
    from test_bad_inputs import tiny_config
    for folder, method, lr in (("m1", "moe", 1e-4), ("m2", "moe", 5e-4), ("f1", "finetune", 1e-4),
                               ("f2", "finetune", 5e-4)):
        cfg = tiny_config(t.data, f"--set=method.name={method}", f"--set=method.finetune.lr={lr}",
                          f"--set=seed={folder[1]}", "--set=data.order=[Red,Green]")
        _fake_run_of(grid / folder, cfg)

    def check(out, err):
        assert "| freeze | 2 |" in out
        assert "method.finetune.lr=0.0001" in out and "method.finetune.lr=0.0005" in out
    return ["report", str(grid)], check


def report_runs_without_configs_are_not_averaged(t, m):
    """A merge and a freeze run with neither config.yaml nor record (an earlier mtil's, config deleted): each alone,
    and the report says why."""
    grid = t.tmp / "grid"
    _fake_run(grid / "merge-seed0")
    _fake_run(grid / "freeze-seed1")

    def check(out, err):
        assert "| merge-seed0 | 1 |" in out and "| freeze-seed1 | 1 |" in out
        assert out.count("records no config") == 2
    return ["report", str(grid)], check


def report_seed_repeated_counts_once(t, m):
    grid = t.tmp / "grid"
    from test_bad_inputs import tiny_config
    cfg = tiny_config(t.data, "--set=data.order=[Red,Green]")
    for folder in ("a", "b"):
        _fake_run_of(grid / folder, cfg)

    def check(out, err):
        data = json.loads(out)
        assert data["table"][0]["seeds"] == 1 and "repeats seed 42" in data["notes"][0]
    return ["report", str(grid), "--format", "json"], check


def prepare_scales_16_bit_and_float_images(t, m):
    src = t.tmp / "src"
    grey16 = np.full((8, 8), 32896, dtype=np.uint16)          # 32896 / 257 = 128
    float01 = np.full((8, 8), 0.25, dtype=np.float32)          # 0.25 x 255 = 63.75 -> 64
    for split in ("train", "test"):
        for c, (array, fmt) in {"grey": (grey16, "PNG"), "float": (float01, "TIFF")}.items():
            (src / split / c).mkdir(parents=True)
            (src / split / c / f"0.{fmt.lower()}").write_bytes(image_bytes(array, fmt))

    def check(out, err):
        from mtil.data import pipeline
        ds = pipeline.load_task(config.wrap({"root": str(t.tmp / "prep"), "few_shot": None, "class_names": None,
                                             "max_classes": None, "max_templates": None,
                                             "max_eval_per_dataset": None}), "Depth", 0).train
        pixels = {ds.features["label"].names[r["label"]]: np.asarray(pipeline.decode(r, "Depth", "train", i, "fail"))
                  for i, r in enumerate(ds)}
        assert (pixels["grey"] == 128).all() and (pixels["float"] == 64).all()
    return ["prepare", "Depth", "--root", str(t.tmp / "prep"), "--from", str(src)], check


def prepare_names_the_folders_it_left_out_and_follows_links(t, m):
    src, elsewhere = t.tmp / "src", t.tmp / "elsewhere" / "owl"
    for c in ("cat", "dog"):
        (src / c).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(src / c / f"{i}.png")
    (src / "empty").mkdir()
    (src / "docs").mkdir()
    (src / "docs" / "readme.txt").write_text("no images here")
    elsewhere.mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (8, 8), (0, 40 * i, 0)).save(elsewhere / f"{i}.png")
    (src / "owl").symlink_to(elsewhere, target_is_directory=True)

    def check(out, err):
        assert "prepared Pets3: 3 classes" in out
        assert "left out 2 folder(s)" in out and "empty (no images)" in out and "docs (no images; 1 other file(s))" in out
    return ["prepare", "Pets3", "--root", str(t.tmp / "prep"), "--from", str(src)], check


HANDLED = [resume_after_the_data_root_moved, resume_after_repairing_data_nothing_read_yet,
           compare_reuses_its_cell_without_config_yaml, run_records_its_provenance,
           run_into_an_empty_folder_and_a_stale_lock, report_groups_by_record_not_folder_names,
           report_keeps_runs_of_other_backbones_apart, report_batch_selector_eval_batch_size_splits_groups,
           report_moe_runs_ignore_the_baselines_settings, report_runs_without_configs_are_not_averaged, report_seed_repeated_counts_once,
           prepare_scales_16_bit_and_float_images, prepare_names_the_folders_it_left_out_and_follows_links]


@pytest.mark.parametrize("row", HANDLED, ids=lambda f: f.__name__)
def test_handled(row, made, data_copy, tmp_path, capsys, monkeypatch):
    t = Case(tmp_path, data_copy)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MTIL_CACHE", str(tmp_path / "cache"))
    argv, check = row(t, made)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    check(out, err)


# ---- writes that fail or are interrupted ---------------------------------------------------------------------------

def test_a_killed_writer_leaves_no_lock_in_the_way(tmp_path):
    """A process holding the run directory's lock is killed (-9): the kernel drops its lock, the next claim holds."""
    out = tmp_path / "out"
    code = f"from mtil.rundir.claim import claim; c = claim({str(out)!r}); c.keep(); print('held', flush=True); " \
           "import time; time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match=f"being written by process {child.pid}"):
            claim(out)
    finally:
        child.kill()
        child.wait()
    held = claim(out)      # the lock file is still there; its lock is not
    held.release()


def _fail_writes_of(monkeypatch, name: str, error: OSError, nth: int = 1):
    """The nth atomic write of files called `name` fails with `error` in the middle of writing (after some bytes)."""
    from mtil.rundir import files
    real, seen = files._Recording.write, {"n": 0}
    real_mkstemp = tempfile.mkstemp
    current = {}

    def mkstemp(*a, **k):
        fd, path = real_mkstemp(*a, **k)
        current["target"] = os.path.basename(path).startswith(f".{name}.")
        if current["target"]:
            seen["n"] += 1
        return fd, path

    def write(self, data):
        if current.get("target") and seen["n"] == nth and self.tell() > 1000:
            self.error = self.error or error
            raise error
        return real(self, data)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(files._Recording, "write", write)


def test_disk_full_during_a_checkpoint_is_one_line_and_the_last_checkpoint_resumes(stream_root, tmp_path, capsys,
                                                                                      monkeypatch):
    args = tiny(stream_root, "--set=data.order=[Red,Green]", "--set=train.checkpoint_every=2")
    assert main(["run", *args, "--out", str(tmp_path / "full")]) == 0
    out = tmp_path / "cut"
    # the 4th checkpoint (task 1 step 6 = its end) fails half-way with ENOSPC
    _fail_writes_of(monkeypatch, "last.pt", OSError(errno.ENOSPC, "No space left on device"), nth=4)
    capsys.readouterr()
    assert main(["run", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "last.pt (No space left on device)" in err[0], err
    assert "the previous file is kept" in err[0]
    monkeypatch.undo()
    assert not list(out.rglob(".*.tmp"))
    torch.load(out / "checkpoints" / "last.pt", weights_only=False)   # the last good checkpoint, whole
    assert main(["run", *args, "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["matrix"] == \
        json.loads((tmp_path / "full" / "results.json").read_text())["matrix"]


def test_permission_denied_on_checkpoints_is_one_line(stream_root, tmp_path, capsys, monkeypatch):
    _fail_writes_of(monkeypatch, "last.pt", PermissionError(errno.EACCES, "Permission denied"))
    code = main(["run", *tiny(stream_root, *RUN_ONE, "--out", str(tmp_path / "o"))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "last.pt (Permission denied); nothing was written" in err[0], err


SLOW_WRITE_HOOK = '''
import os, sys, time
_spec = os.environ.get("MTIL_TEST_SLOW_WRITE")
if _spec:
    import mtil.rundir.files as _files
    _real_write, _real_atomic = _files._Recording.write, _files.atomic_write
    _state = {"target": False, "slow": 4}
    def atomic_write(path, write, mode):
        _state["target"] = os.path.basename(str(path)) == _spec
        try:
            return _real_atomic(path, write, mode)
        finally:
            _state["target"] = False
    def write(self, data):
        if _state["target"] and _state["slow"] > 0:
            if _state["slow"] == 4:
                sys.stderr.write("TEST-IN-WRITE\\n")
                sys.stderr.flush()
            _state["slow"] -= 1
            time.sleep(0.5)
        return _real_write(self, data)
    _files._Recording.write = write
    _files.atomic_write = atomic_write
'''


def test_ctrl_c_during_a_checkpoint_write_exits_130_and_leaves_the_file_whole(stream_root, tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_WRITE_HOOK)
    out = tmp_path / "o"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MTIL_TEST_SLOW_WRITE": "last.pt", "PYTHONPATH": os.pathsep.join([str(hooks),
                                                                             str(Path(__file__).resolve().parents[1])])}
    # SIGINT back to its default in the child (a shell starts background jobs with it ignored; Python then keeps
    # ignoring it instead of raising KeyboardInterrupt)
    child = subprocess.Popen([sys.executable, "-m", "mtil", "run", *tiny(stream_root, *RUN_ONE, "--out", str(out))],
                             stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in child.stderr:
        if "TEST-IN-WRITE" in line:
            break
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    rest = child.stderr.read()
    assert child.wait(timeout=300) == 130, rest[-2000:]
    assert "Traceback" not in rest and "interrupted" in rest
    assert not list(out.rglob(".*.tmp"))
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)   # whole: the write finished
    assert state["progress"]["phase"] == "trained"
