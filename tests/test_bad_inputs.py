"""Bad input, as one table: every case gives exit code 2, exactly one `mtil: error: ...` line on stderr (no
traceback), and leaves every file that existed before byte-for-byte as it was.

Cases already covered in tests/test_run.py (not repeated here): missing data root, unprepared dataset, unknown
config key, wrong type in config, unknown model / policy / tower, missing pretrained file, class-count mismatch,
NaN loss, an existing run not overwritten, `--resume` with no checkpoint, resume with an incompatible config.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtil import config
from mtil.cli import main
from mtil.engine import checkpoint
from mtil.model import moe

HERE = Path(__file__).resolve().parent


# ---- data fixtures -----------------------------------------------------------------------------------------------

def _rewrite_split(root: Path, task: str, split: str, edit) -> None:
    """Rewrite one split of a prepared dataset: `edit(rows)` changes the dict of columns in place."""
    import datasets
    path = root / task
    dd = datasets.load_from_disk(str(path))
    ds = dd[split].cast_column("image", datasets.Image(decode=False))
    rows = ds.to_dict()
    edit(rows)
    features = datasets.Features({"image": datasets.Image(decode=False), "label": ds.features["label"]})
    new = datasets.Dataset.from_dict(rows, features=features).cast_column("image", datasets.Image())
    splits = {s: (new if s == split else dd[s]) for s in dd}
    tmp = root / f".{task}.new"
    datasets.DatasetDict(splits).save_to_disk(str(tmp))
    shutil.copy(path / "templates.json", tmp / "templates.json")
    shutil.rmtree(path)
    tmp.rename(path)


def corrupt_image(root: Path, task: str, split: str, index: int) -> None:
    """Replace image `index` of ROOT/task/split by bytes that are no image."""
    def edit(rows):
        rows["image"][index] = {"bytes": b"\x89PNG\r\n\x1a\n garbage, not an image", "path": None}
    _rewrite_split(root, task, split, edit)


def empty_split(root: Path, task: str, split: str) -> None:
    def edit(rows):
        for k in rows:
            rows[k] = []
    _rewrite_split(root, task, split, edit)


@pytest.fixture()
def data_copy(stream_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(stream_root, root)
    return root


def tiny(stream_root, *extra):
    from conftest import TINY_OVERRIDES
    return ([f"--set={o}" for o in TINY_OVERRIDES] + [f"--set=data.root={stream_root}", "--set=data.order=[Red,Green,Blue]"]
            + list(extra))


def tiny_config(stream_root, *extra):
    return config.load(None, [a[len("--set="):] for a in tiny(stream_root, *extra)])


# ---- the cases: each returns (argv after `run`, substrings the error line must contain) ----------------------------

def case_corrupt_image_fail_train(t):
    corrupt_image(t.data, "Red", "train", 3)
    return tiny(t.data, "--set=data.bad_images=fail", "--out", t.out), ["image 3 of Red/train", "bad_images=skip"]


def case_corrupt_image_fail_test(t):
    corrupt_image(t.data, "Green", "test", 5)  # found by the first evaluation, after task 1 is trained and saved
    return tiny(t.data, "--out", t.out), ["image 5 of Green/test", "mtil prepare Green"]


def case_corrupt_image_fail_with_loader_workers(t):
    corrupt_image(t.data, "Red", "train", 3)
    return tiny(t.data, "--set=data.num_workers=1", "--out", t.out), ["image 3 of Red/train"]


def case_empty_dataset(t):
    empty_split(t.data, "Red", "train")
    return tiny(t.data, "--out", t.out), ["empty", "Red"]


def case_malformed_dataset(t):
    (t.data / "Red" / "dataset_dict.json").unlink()
    return tiny(t.data, "--out", t.out), ["not a prepared dataset", "mtil prepare"]


def case_out_dir_under_a_file(t):
    blocker = t.tmp / "not-a-dir"
    blocker.write_text("a regular file")
    return tiny(t.data, "--out", str(blocker / "run")), ["not writable", "--out"]


def case_out_dir_read_only(t):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 0o500 does not stop root from writing (case_out_dir_under_a_file "
                    "covers an unwritable --out)")
    ro = t.tmp / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    t.cleanup.append(lambda: ro.chmod(0o700))
    return tiny(t.data, "--out", str(ro / "run")), ["not writable"]


def _run_dir_with_config(t, cfg):
    out = Path(t.out)
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.yaml").write_text(config.dump(cfg))
    return out


def case_checkpoint_unreadable(t):
    out = _run_dir_with_config(t, tiny_config(t.data))
    (out / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    return tiny(t.data, "--out", t.out, "--resume"), ["cannot read", "last.pt"]


def case_checkpoint_from_another_moe_config(t):
    """A checkpoint written by a run with 4 experts, its config.yaml gone: the checkpoint's provenance record tells."""
    from mtil import provenance
    other = tiny_config(t.data, "--set=moe.num_experts=4")
    out = Path(t.out)
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"format": checkpoint.FORMAT, "provenance": provenance.record(other),
                "progress": {"task": 0, "phase": "train", "step": 2, "global_step": 2}, "rows": []},
               out / "checkpoints" / "last.pt")
    return tiny(t.data, "--out", t.out, "--resume"), ["cannot resume", "moe.num_experts: 4 there, 6 now"]


def case_checkpoint_of_an_earlier_mtil(t):
    """A checkpoint without a provenance record (format 1) cannot be vouched for."""
    from mtil.model import backbone
    other = moe.attach(backbone.load("mtil-tiny", None).model, num_experts=6, top_k=2, hidden=8, num_routers=3)
    out = _run_dir_with_config(t, tiny_config(t.data))
    torch.save({"format": 1, "adapters": other.adapter_state_dict()}, out / "checkpoints" / "last.pt")
    return tiny(t.data, "--out", t.out, "--resume"), ["earlier mtil", "provenance", "new --out"]


def case_checkpoint_of_another_version(t):
    out = _run_dir_with_config(t, tiny_config(t.data))
    torch.save({"format": 99}, out / "checkpoints" / "last.pt")
    return tiny(t.data, "--out", t.out, "--resume"), ["not an mtil checkpoint"]


def case_config_file_missing(t):
    return ["nowhere.yaml", *tiny(t.data, "--out", t.out)], ["nowhere.yaml", "not found"]


def case_config_invalid_yaml(t):
    bad = t.tmp / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    return [str(bad), *tiny(t.data, "--out", t.out)], ["not valid YAML"]


def case_config_not_a_mapping(t):
    bad = t.tmp / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    return [str(bad), *tiny(t.data, "--out", t.out)], ["mapping"]


def case_override_without_equals(t):
    return tiny(t.data, "--set=train.lr", "--out", t.out), ["train.lr", "key.path=value"]


def case_unknown_eval_mode(t):
    return tiny(t.data, "--set=eval.mode=bogus", "--out", t.out), ["eval.mode", "oracle"]


def case_task_free_with_per_task_routers(t):
    return tiny(t.data, "--set=eval.mode=task-free", "--set=moe.router=per_task", "--out", t.out), \
        ["eval.mode", "moe.router=shared"]


def case_unknown_precision(t):
    return tiny(t.data, "--set=model.precision=fp8", "--out", t.out), ["model.precision"]


def case_unknown_router_mode(t):
    return tiny(t.data, "--set=moe.router=global", "--out", t.out), ["moe.router"]


def case_unknown_gating(t):
    return tiny(t.data, "--set=moe.gating=soft", "--out", t.out), ["moe.gating"]


def case_top_k_above_experts(t):
    return tiny(t.data, "--set=moe.top_k=9", "--out", t.out), ["moe.top_k", "9"]


def case_blocks_out_of_range(t):
    return tiny(t.data, "--set=moe.blocks=[0,9]", "--out", t.out), ["moe.blocks"]


def case_empty_task_order(t):
    return tiny(t.data, "--set=data.order=[]", "--out", t.out), ["data.order"]


def case_unknown_pretrained_tag(t):
    return tiny(t.data, "--set=model.pretrained=notatag", "--out", t.out), ["notatag"]


def case_grow_granularity_zero(t):
    return tiny(t.data, "--set=policy.name=grow", "--set=policy.grow.granularity=0", "--out", t.out), ["granularity"]


def case_grow_granularity_above_max_experts(t):
    return tiny(t.data, "--set=policy.name=grow", "--set=policy.grow.granularity=4", "--set=policy.grow.max_experts=2",
                "--out", t.out), ["policy.grow.granularity", "max_experts = 2"]


# values that once leaked a traceback or were accepted silently
def case_negative_lr(t):
    return tiny(t.data, "--set=train.lr=-1", "--set=train.iterations=1", "--out", t.out), ["train.lr"]


def case_eval_batch_size_zero(t):
    return tiny(t.data, "--set=eval.batch_size=0", "--set=train.iterations=1", "--out", t.out), ["eval.batch_size"]


def case_negative_num_workers(t):
    return tiny(t.data, "--set=data.num_workers=-1", "--out", t.out), ["data.num_workers"]


def case_no_towers(t):
    return tiny(t.data, "--set=moe.towers=[]", "--out", t.out), ["moe.towers"]


def case_unknown_bad_images_mode(t):
    return tiny(t.data, "--set=data.bad_images=maybe", "--set=train.iterations=1", "--out", t.out), ["bad_images"]


def case_train_batch_size_zero(t):
    return tiny(t.data, "--set=train.batch_size=0", "--out", t.out), ["train.batch_size"]


def case_negative_few_shot(t):
    return tiny(t.data, "--set=data.few_shot=-3", "--set=train.iterations=1", "--out", t.out), ["few_shot"]


def case_negative_threads(t):
    return tiny(t.data, "--set=threads=-1", "--out", t.out), ["threads"]


# ---- issue 15: values checked at load (before any model, data or demo asset), data consistency, other commands ----
def _set_names(root: Path, task: str, split: str, names: list[str]) -> None:
    """Rewrite the class names a split's ClassLabel stores (its labels stay as they are)."""
    info_file = root / task / split / "dataset_info.json"
    info = json.loads(info_file.read_text())
    info["features"]["label"]["names"] = names
    info_file.write_text(json.dumps(info))


def case_train_test_class_count_mismatch(t):
    _set_names(t.data, "Green", "test", ["green pattern 0", "green pattern 1"])
    return tiny(t.data, "--out", t.out), ["split 'test'", "Green", "2 classes", "has 3", "mtil prepare"]


def case_labels_beyond_class_count(t):
    for split in ("train", "test"):
        _set_names(t.data, "Blue", split, ["blue pattern 0", "blue pattern 1"])
    return tiny(t.data, "--out", t.out), ["Blue", "outside 0..1", "mtil prepare"]


def case_class_without_training_images(t):
    def edit(rows):
        keep = [i for i, y in enumerate(rows["label"]) if y != 2]
        for k in rows:
            rows[k] = [rows[k][i] for i in keep]
    _rewrite_split(t.data, "Red", "train", edit)
    return tiny(t.data, "--out", t.out), ["split 'train'", "Red", "no images of 1 class", "red pattern 2"]


def case_prepare_check_finds_class_count_mismatch(t):
    _set_names(t.data, "Green", "test", ["green pattern 0", "green pattern 1"])
    return ["prepare", "Green", "--check", "--root", str(t.data)], ["split 'test'", "2 classes"]


def case_deleted_test_folder(t):
    shutil.rmtree(t.data / "Red" / "test")
    return tiny(t.data, "--out", t.out), ["folder of split 'test'", "is missing", "mtil prepare Red"]


def case_prepare_nested_class_folder(t):
    src = t.tmp / "images"
    from PIL import Image
    for folder in ("cat", "dog", "cat/kitten"):
        (src / folder).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(src / folder / f"{i}.png")
    return (["prepare", "Pets2", "--from", str(src), "--root", str(t.tmp / "prep")],
            ["cat/kitten", "sub-folder of the class folder", "cat"])


def case_duplicate_dataset_in_order(t):
    return tiny(t.data, "--set=data.order=[Red,Green,Red]", "--out", t.out), ["data.order", "repeated: Red"], 1


def case_duplicate_demo_domain(t):
    return (["demo", "--set=demo.domains=[MNIST,Gems,MNIST]", "--out", t.out], ["demo.domains", "repeated: MNIST"],
            "nothing created")


def case_lr_per_task_misspelled(t):
    return tiny(t.data, "--set=train.lr_per_task.Gren=1e-3", "--out", t.out), ["train.lr_per_task", "Gren",
                                                                               "Red, Green, Blue"]


def case_nan_in_task_one_has_nothing_to_resume(t):
    return (tiny(t.data, "--set=train.lr_per_task.Red=1e30", "--set=train.warmup_steps=0", "--out", t.out),
            ["loss became", "Red", "nothing to resume", "lower train.lr_per_task.Red"])


def case_config_not_utf8(t):
    bad = t.tmp / "latin1.yaml"
    bad.write_bytes("train: {lr: 0.001}  # caf\xe9\n".encode("latin-1"))
    return [str(bad), *tiny(t.data, "--out", t.out)], ["latin1.yaml", "not UTF-8"]


def case_config_yaml_error_has_line_and_column(t):
    bad = t.tmp / "bad.yaml"
    bad.write_text("train:\n  lr: 0.1\n  iterations: [1, 2\n")
    return [str(bad), *tiny(t.data, "--out", t.out)], ["not valid YAML", "line 4, column 1"]


def case_config_is_a_directory(t):
    (t.tmp / "cfgdir").mkdir()
    return [str(t.tmp / "cfgdir"), *tiny(t.data, "--out", t.out)], ["cfgdir", "is a directory"]


def case_num_experts_zero_names_num_experts(t):
    return tiny(t.data, "--set=moe.num_experts=0", "--out", t.out), ["'moe.num_experts' = 0", "[1, 1024]"]


def case_max_eval_zero(t):
    return tiny(t.data, "--set=data.max_eval_per_dataset=0", "--out", t.out), ["data.max_eval_per_dataset", "= 0"]


def case_run_with_nothing_to_run(t):
    return ["run"], ["give a config", "mtil demo"]


def case_demo_unknown_policy_before_assets(t):
    return ["demo", "--policy", "merg", "--out", t.out], ["'policy.name' = 'merg'", "merge"]


def _fake_run(path: Path, complete: bool = True, tasks=("Red", "Green")) -> Path:
    path.mkdir(parents=True)
    rows = [[50.0 + i, 40.0 + i] for i in range(len(tasks) if complete else 1)]
    (path / "results.json").write_text(json.dumps({"tasks": list(tasks), "matrix": rows, "complete": complete}))
    return path


def case_report_unfinished_run_given(t):
    run = _fake_run(t.tmp / "fake" / "a", complete=False)
    return ["report", str(_fake_run(t.tmp / "fake" / "b")), str(run)], ["unfinished run", "1 of 2", "--resume"]


def case_report_non_run_folder_given(t):
    (t.tmp / "empty").mkdir()
    return ["report", str(_fake_run(t.tmp / "fake" / "b")), str(t.tmp / "empty")], ["empty", "holds none"]


def case_report_truncated_results(t):
    run = _fake_run(t.tmp / "fake" / "a")
    (run / "results.json").write_text((run / "results.json").read_text()[:20])
    return ["report", str(run)], ["results.json is malformed", "not JSON"]


def case_report_results_is_a_list(t):
    run = _fake_run(t.tmp / "fake" / "a")
    (run / "results.json").write_text("[1, 2]")
    return ["report", str(run)], ["results.json is malformed", "a JSON list"]


def case_compare_refuses_a_cell_of_another_config(t):
    cfg = t.tmp / "cmp.yaml"
    cfg.write_text(f"data: {{root: '{t.data}', order: [Red, Green]}}\n")
    from conftest import TINY_OVERRIDES
    from mtil import provenance
    cell = _fake_run(Path(t.out) / "none-seed0")
    old = config.load(str(cfg), [*TINY_OVERRIDES, "policy.name=none", "seed=0", "output.plots=false"])
    (cell / "config.yaml").write_text(config.dump(old))
    results = json.loads((cell / "results.json").read_text())
    (cell / "results.json").write_text(json.dumps({**results, "provenance": provenance.record(old)}))
    return (["compare", str(cfg), "--policies", "none", "--seeds", "0", "--out", t.out,
             *[f"--set={o}" for o in TINY_OVERRIDES], "--set=train.lr=0.05"],
            ["none-seed0", "another config", "train.lr: 0.01 there, 0.05 now", "new --out"])


def case_compare_refuses_a_cell_without_provenance(t):
    cfg = t.tmp / "cmp.yaml"
    cfg.write_text(f"data: {{root: '{t.data}', order: [Red, Green]}}\n")
    from conftest import TINY_OVERRIDES
    _fake_run(Path(t.out) / "none-seed0")
    return (["compare", str(cfg), "--policies", "none", "--seeds", "0", "--out", t.out,
             *[f"--set={o}" for o in TINY_OVERRIDES]], ["none-seed0", "records no provenance", "new --out"])


CASES = [
    case_corrupt_image_fail_train,
    case_corrupt_image_fail_test,
    case_corrupt_image_fail_with_loader_workers,
    case_empty_dataset,
    case_malformed_dataset,
    case_out_dir_under_a_file,
    case_out_dir_read_only,
    case_checkpoint_unreadable,
    case_checkpoint_from_another_moe_config,
    case_checkpoint_of_an_earlier_mtil,
    case_checkpoint_of_another_version,
    case_config_file_missing,
    case_config_invalid_yaml,
    case_config_not_a_mapping,
    case_override_without_equals,
    case_unknown_eval_mode,
    case_task_free_with_per_task_routers,
    case_unknown_precision,
    case_unknown_router_mode,
    case_unknown_gating,
    case_top_k_above_experts,
    case_blocks_out_of_range,
    case_empty_task_order,
    case_unknown_pretrained_tag,
    case_grow_granularity_zero,
    case_grow_granularity_above_max_experts,
    pytest.param(case_negative_lr, id="negative_lr"),
    pytest.param(case_eval_batch_size_zero, id="eval_batch_size_zero"),
    pytest.param(case_negative_num_workers, id="negative_num_workers"),
    pytest.param(case_no_towers, id="no_towers"),
    pytest.param(case_unknown_bad_images_mode, id="unknown_bad_images_mode"),
    pytest.param(case_train_batch_size_zero, id="train_batch_size_zero"),
    pytest.param(case_negative_few_shot, id="negative_few_shot"),
    case_negative_threads,
    case_train_test_class_count_mismatch,
    case_labels_beyond_class_count,
    case_class_without_training_images,
    case_prepare_check_finds_class_count_mismatch,
    case_deleted_test_folder,
    case_prepare_nested_class_folder,
    case_duplicate_dataset_in_order,
    case_duplicate_demo_domain,
    case_lr_per_task_misspelled,
    case_nan_in_task_one_has_nothing_to_resume,
    case_config_not_utf8,
    case_config_yaml_error_has_line_and_column,
    case_config_is_a_directory,
    case_num_experts_zero_names_num_experts,
    case_max_eval_zero,
    case_run_with_nothing_to_run,
    case_demo_unknown_policy_before_assets,
    case_report_unfinished_run_given,
    case_report_non_run_folder_given,
    case_report_truncated_results,
    case_report_results_is_a_list,
    case_compare_refuses_a_cell_of_another_config,
    case_compare_refuses_a_cell_without_provenance,
]
# (issue 15 items 9, 10, 12, 13: every key with a bad value is one more row of the table, generated below)


class Case:
    def __init__(self, tmp, data):
        self.tmp, self.data, self.out, self.cleanup = tmp, data, str(tmp / "out"), []


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and os.access(p, os.R_OK)}


def _ids(case):
    return case.__name__[len("case_"):] if callable(case) else None


def bad_value(rule: str):
    """A value that breaks `rule` (the notation at the top of base.yaml), for every alternative at once."""
    alts = config._split_alternatives(rule)
    for alt in alts:
        m = config._INTERVAL.match(alt)
        if m:
            kind, left, lo, hi, right = m.groups()
            value = float(lo) - 1 if left == "[" else float(lo)
            if value == float("-inf"):
                value = float(hi) + 1 if right == "]" else float(hi)
            integral = kind == "int" or (kind is None and "." not in lo + hi)
            return int(value) if integral and value == int(value) else value
        if alt.startswith("list("):
            return [bad_value(alt[5:-1])]
        if alt.startswith("map("):
            return {"Red": bad_value(alt[4:-1])}
        if alt == "@block_range":
            return [3, 1]
        if alt == "@dataset_name":
            return "../Red"
        if alt == "@device":
            return "banana"
    if "str" in alts:
        return ""
    if "bool" in alts:
        return "maybe"
    return "bogus-choice"


SCHEMAS = ("base.yaml", "plasticity/base.yaml", "rl/base.yaml")


def key_cases():
    """One row per key of each schema: `mtil run` (or `mtil plasticity`) with a value the key's rule refuses."""
    import yaml
    out = []
    for schema in SCHEMAS:
        for key, rule in config.schema_rules(config.resolve_path(schema)).items():
            if rule is None:
                continue
            text = yaml.safe_dump(bad_value(rule), default_flow_style=True).strip().removesuffix("...").strip()

            def case(t, key=key, text=text, schema=schema):
                if schema == "base.yaml":
                    return tiny(t.data, f"--set={key}={text}", "--out", t.out), [f"'{key}'"], "nothing created"
                if schema == "rl/base.yaml":
                    pytest.importorskip("jax", reason="mtil rl needs the [rl] extra")
                    return (["rl", "rl/minatar.yaml", f"--set={key}={text}", "--out", t.out], [f"'{key}'"],
                            "nothing created")
                return ["plasticity", f"--set={key}={text}", "--out", t.out], [f"'{key}'"], "nothing created"
            out.append(pytest.param(case, id=f"{schema.split('/')[0].removesuffix('.yaml')}:{key}={text}"))
    return out


# the values issue 15 found accepted, or failing late with a traceback
ISSUE_VALUES = ["policy.merge.every=0", "selector.quantile=2.0", "moe.dropout=1.5", "train.label_smoothing=2.0",
                "policy.grow.every=-1", "policy.merge.every=-2", "policy.merge.window=-3", "train.checkpoint_every=-1",
                "train.warmup_steps=-5", "moe.hidden=0", "selector.components=0", "moe.top_k=0", "train.lr=.nan"]


def issue_cases():
    def make(override):
        def case(t):
            return tiny(t.data, f"--set={override}", "--out", t.out), [f"'{override.split('=')[0]}'", "allowed"], 1
        return pytest.param(case, id=f"issue:{override}")
    return [make(o) for o in ISSUE_VALUES]


COMMANDS = ("run", "report", "compare", "prepare", "demo", "plasticity", "rl")


@pytest.mark.parametrize("schema", SCHEMAS)
def test_every_key_has_a_rule_that_its_default_meets(schema):
    """The contract: a key added to a schema without an allowed-values rule (or with a default the rule refuses)
    fails here."""
    import yaml
    path = config.resolve_path(schema)
    rules = config.schema_rules(path)
    defaults = config.flatten(yaml.safe_load(path.read_text()))
    assert set(rules) == set(defaults)
    missing = sorted(k for k, r in rules.items() if r is None)
    assert not missing, f"keys without a `rule` in {schema}: {missing}"
    for key, rule in rules.items():
        assert config.matches(rule, defaults[key]), (key, rule, defaults[key])
        assert not config.matches(rule, bad_value(rule)), (key, rule)



def assert_refused(tmp_path, capsys, argv, expected):
    """`mtil ARGV` (a bare argv is `mtil run ARGV`) exits 2 with one `mtil: error:` line holding every text of
    `expected`, changes no file under tmp_path (an earlier file in the run directory included), and builds no
    cache or ./runs."""
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv if argv and argv[0] in COMMANDS else ["run", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mtil: error: "), (code, err)
    for text in expected:
        assert text in err[0], (text, err[0])
    after = snapshot(tmp_path)
    for path, content in before.items():
        assert after.get(path) == content, f"{path} changed or vanished"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", CASES + issue_cases() + key_cases(), ids=_ids)
def test_bad_input_one_line_exit_2_nothing_lost(case, data_copy, tmp_path, capsys, monkeypatch):
    t = Case(tmp_path, data_copy)
    monkeypatch.chdir(tmp_path)                          # `mtil run` with no --out would write ./runs
    monkeypatch.setenv("MTIL_CACHE", str(tmp_path / "cache"))   # demo assets are never built for a bad input
    try:
        argv, expected, *nothing_created = case(t)
        assert_refused(tmp_path, capsys, argv, expected)
        if nothing_created:   # a config value: refused at load, before the run directory or any model exists
            assert not Path(t.out).exists()
    finally:
        for undo in t.cleanup:
            undo()


def test_failure_after_a_task_keeps_its_row_and_checkpoint(data_copy, tmp_path, capsys):
    """A corrupt test image stops the run at the first evaluation; the trained task's checkpoint stays usable."""
    corrupt_image(data_copy, "Blue", "test", 0)
    out = tmp_path / "o"
    code = main(["run", *tiny(data_copy, "--out", str(out))])
    assert code == 2 and "Blue/test" in capsys.readouterr().err
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["progress"]["task"] == 0 and state["progress"]["phase"] == "trained"
    # repair the data and resume: the run finishes from the checkpoint
    _rewrite_split(data_copy, "Blue", "test", lambda rows: rows["image"].__setitem__(0, rows["image"][1]))
    assert main(["run", *tiny(data_copy, "--out", str(out), "--resume")]) == 0


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_images_skip_finishes_and_counts(data_copy, tmp_path, caplog, workers):
    corrupt_image(data_copy, "Red", "train", 3)
    corrupt_image(data_copy, "Green", "test", 2)
    out = tmp_path / "o"
    argv = ["run", *tiny(data_copy, "--set=data.bad_images=skip", "--set=train.iterations=12",
                         f"--set=data.num_workers={workers}", "--out", str(out))]
    if workers:
        # a fresh process: this one may have JAX loaded (the `mtil rl` rows), and forking loader workers beside
        # JAX's threads can deadlock
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "mtil", *argv], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        messages = proc.stderr.splitlines()
    else:
        with caplog.at_level("WARNING"):
            assert main(argv) == 0
        messages = [r.getMessage() for r in caplog.records]
    # images, not draws: 12 steps x 8 of 24 images draw image 3 of Red/train about four times, it counts once;
    # counted in the main process even when loader workers decode
    assert sum("image 3 of Red/train cannot be decoded" in m for m in messages) == 1
    assert sum("image 2 of Green/test cannot be decoded" in m for m in messages) == 1
    assert sum("Red: 1 undecodable training images skipped" in m for m in messages) == 1
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and len(results["matrix"]) == 3


@pytest.mark.slow
def test_cli_subprocess_gives_one_error_line_and_no_traceback(stream_root, tmp_path):
    """The installed entry point (python -m mtil), not main(): stderr holds log lines and exactly one error line."""
    data = tmp_path / "data"
    shutil.copytree(stream_root, data)
    corrupt_image(data, "Red", "train", 1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argvs = {"corrupt": tiny(data, "--out", str(tmp_path / "a")),
             "unwritable": tiny(data, "--out", str(blocker / "run")),
             "no-checkpoint": tiny(data, "--out", str(tmp_path / "c"), "--resume")}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    procs = {k: subprocess.Popen([sys.executable, "-m", "mtil", "run", *a], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) for k, a in argvs.items()}
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        errors = [line for line in err.splitlines() if line.startswith("mtil: error: ")]
        assert p.returncode == 2, (name, err[-2000:])
        assert len(errors) == 1 and "Traceback" not in err, (name, err[-2000:])
