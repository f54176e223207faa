"""The prepared on-disk format through `mtil prepare` and `save_prepared`: skipped images, --max-per-class,
atomic writes, every load error, `--list` and `--check`."""
import os
import shutil

import datasets
import numpy as np
import pytest
from PIL import Image
from prepare_helpers import check_error, labels_of, make_images, run

from mtil.cli import main
from mtil.data import prepared
from mtil.data.prepared import encode, layout, load_info, load_split, save_prepared
from mtil.errors import MtilError


# ------------------------------------------------------------------------------- writing: skipped images, caps
def test_corrupt_images_are_skipped_and_counted(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    make_images(src / "train", ["a", "b"], per_class=3)
    make_images(src / "test", ["a", "b"], per_class=2)
    (src / "train" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = (src / "test" / "b" / "img0.png").read_bytes()
    (src / "test" / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "train" / "a" / "notes.txt").write_text("not an image file: not counted")
    rc, out, err = run(["prepare", "Letters", "--root", str(root), "--from", str(src)], capsys)
    assert rc == 0
    assert "train 6, test 4 images" in out
    assert "skipped undecodable images: 2 (train 1, test 1)" in out
    assert "broken.png" in out and "truncated.png" in out
    assert prepared.read_meta(root, "Letters")["skipped"] == {"train": 1, "test": 1}


def test_max_per_class(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    make_images(src / "train", ["a", "b"], per_class=4)
    make_images(src / "test", ["a", "b"], per_class=3)
    rc, out, _ = run(["prepare", "Few", "--root", str(root), "--from", str(src), "--max-per-class", "2"], capsys)
    assert rc == 0 and "train 4, test 4 images" in out and "left out train 4, test 2 images" in out
    assert list(load_split(root, "Few", "train")["label"]) == [0, 0, 1, 1]



# --------------------------------------------------------------------------------------- atomic / no overwrite
def test_no_overwrite_and_overwrite(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    make_images(src / "train", ["x", "y"], per_class=2)
    make_images(src / "test", ["x", "y"], per_class=1)
    assert run(["prepare", "XY", "--root", str(root), "--from", str(src)], capsys)[0] == 0
    before = sorted(p.name for p in (root / "XY" / "train").iterdir())
    check_error(capsys, ["prepare", "XY", "--root", str(root), "--from", str(src)],
                f"'{root / 'XY'}' already exists", "--overwrite")
    assert len(load_split(root, "XY", "train")) == 4
    assert sorted(p.name for p in (root / "XY" / "train").iterdir()) == before
    make_images(src / "train", ["z"], per_class=2)
    make_images(src / "test", ["z"], per_class=1)
    assert run(["prepare", "XY", "--root", str(root), "--from", str(src), "--overwrite"], capsys)[0] == 0
    assert load_info(root, "XY").classnames == ["x", "y", "z"]
    assert sorted(os.listdir(root)) == ["XY"]


def test_failure_midway_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    src, root = tmp_path / "src", tmp_path / "data"
    make_images(src / "train", ["x", "y"], per_class=3)
    make_images(src / "test", ["x", "y"], per_class=2)
    assert run(["prepare", "XY", "--root", str(root), "--from", str(src)], capsys)[0] == 0
    calls = {"n": 0}
    real = encode.check_decodes

    def flaky(data):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the test split
        return real(data)

    monkeypatch.setattr(encode, "check_decodes", flaky)
    make_images(src / "train", ["z"], per_class=2)
    assert main(["prepare", "XY", "--root", str(root), "--from", str(src), "--overwrite"]) == 130
    assert sorted(os.listdir(root)) == ["XY"]               # no .XY.tmp / .XY.work / lock left
    assert load_info(root, "XY").classnames == ["x", "y"]   # the old dataset is intact
    assert len(load_split(root, "XY", "train")) == 6

    monkeypatch.setattr(encode, "check_decodes", real)
    new_root = tmp_path / "fresh"
    empty = tmp_path / "empty"
    make_images(empty / "train", ["x"], per_class=1)
    (empty / "test" / "x").mkdir(parents=True)
    (empty / "test" / "x" / "bad.png").write_bytes(b"junk")
    check_error(capsys, ["prepare", "E", "--root", str(new_root), "--from", str(empty)],
                "split 'test' has no images (1 undecodable images skipped)")
    assert not new_root.exists()


def test_concurrent_writers_are_refused(tmp_path):
    with prepared.staging(tmp_path, "Locked"):
        with pytest.raises(MtilError, match="another process is writing"):
            with prepared.staging(tmp_path, "Locked"):
                pass


# ------------------------------------------------------------------------------------------------ load errors
@pytest.fixture
def small(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (12, 6, 5, 3), dtype=np.uint8)
    save_prepared(root, "Small", {"train": (imgs[:8], [0, 1, 2, 0, 1, 2, 0, 1]), "test": (imgs[8:], [2, 1, 0, 2])},
                  ["red", "green", "blue"])
    return root


def test_load_errors_name_path_and_command(small, tmp_path, capsys):
    root = small
    missing_root = tmp_path / "nowhere"
    check_error(capsys, ["prepare", "DTD", "--check", "--root", str(missing_root)],
                       f"data root '{missing_root}' does not exist", "data.root=", "mtil prepare")
    with pytest.raises(MtilError, match="data root"):
        load_split(missing_root, "Small", "train")
    check_error(capsys, ["prepare", "DTD", "--check", "--root", str(root)],
                f"dataset 'DTD' is not prepared under '{root}'", f"`mtil prepare DTD --root {root}`")
    check_error(capsys, ["prepare", "Cars", "--check", "--root", str(root)],
                f"`mtil prepare StanfordCars --root {root}`")
    check_error(capsys, ["prepare", "Other", "--check", "--root", str(root)],
                f"`mtil prepare Other --root {root} --from <image folder>`")
    assert run(["prepare", "Small", "--check", "--root", str(root)], capsys)[0] == 0

    def broken(mutate, *needles):
        dst = root / "Broken"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(root / "Small", dst)
        mutate(dst)
        return check_error(capsys, ["prepare", "Broken", "--check", "--root", str(root)], str(dst), *needles,
                           f"mtil prepare Broken --root {root}")

    broken(lambda d: (d / "dataset_dict.json").unlink(), "is not a prepared dataset")
    broken(lambda d: shutil.rmtree(d / "test"), "folder of split 'test'", "is missing")
    broken(lambda d: [f.write_bytes(b"garbage") for f in (d / "train").glob("*.arrow")], "cannot read")

    def wrong_columns(d):
        shutil.rmtree(d)
        datasets.DatasetDict({s: datasets.Dataset.from_dict({"img": [1], "y": [0]}) for s in ("train", "test")}
                             ).save_to_disk(str(d))
    broken(wrong_columns, "lacks the column(s) image and label")

    def empty_split(d):
        feats = layout._features(["a"])
        shutil.rmtree(d)
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": [], "label": []}, features=feats),
                              "test": datasets.Dataset.from_dict({"image": [], "label": []}, features=feats)}
                             ).save_to_disk(str(d))
    broken(empty_split, "split 'train'", "is empty")


def test_load_info_rules(small, tmp_path):
    root = small
    info = load_info(root, "Small")
    assert info.classnames == ["red", "green", "blue"] and info.templates == ["a photo of a {}."]
    (root / "Small" / "templates.json").write_text('["a {} thing."]')
    assert load_info(root, "Small").templates == ["a {} thing."]
    (root / "Small" / "templates.json").write_text('{"no": 1}')
    with pytest.raises(MtilError, match="templates.json"):
        load_info(root, "Small")
    # a registered name whose prepared copy has another class count
    shutil.copytree(root / "Small", root / "DTD")
    with pytest.raises(MtilError, match=r"has 3 classes but the registered DTD has 47"):
        load_info(root, "dtd")
    # registered and not prepared: the registry's lists
    assert load_info(root, "Cars").num_classes == 196


# -------------------------------------------------------------------------------------- save_prepared (library)
def test_save_prepared_inputs(tmp_path):
    root = tmp_path / "data"
    arr = np.zeros((4, 7, 9, 3), dtype=np.uint8)
    pil = [Image.new("L", (5, 6), 128) for _ in range(3)]
    res = save_prepared(root, "Mixed", {"train": (arr, np.array([0, 1, 0, 1])), "test": (pil, [1, 0, 1])},
                        ["zero", "one"], templates=["a {}."])
    assert res.rows == {"train": 4, "test": 3} and res.path == root / "Mixed"
    assert [im.size for im in load_split(root, "Mixed", "train")["image"]] == [(9, 7)] * 4
    assert load_split(root, "Mixed", "test")[0]["image"].mode == "L"
    ds = load_split(root, "Mixed", "train")
    save_prepared(root, "Copy", {"train": ds, "test": ds.select([0, 1])}, ["zero", "one"])
    assert list(load_split(root, "Copy", "test")["label"]) == [0, 1]
    save_prepared(root, "Copy2", {"train": ds, "test": (pil, [1, 1, 0])}, ["zero", "one"])  # mixed inputs
    assert labels_of(root, "Copy2") == [0, 1, 0, 1, 1, 1, 0]
    with pytest.raises(MtilError, match="already exists"):
        save_prepared(root, "Copy", {"train": ds, "test": ds}, ["zero", "one"])
    with pytest.raises(MtilError, match="DTD has 47 classes in the registry but 2"):
        save_prepared(root, "DTD", {"train": ds, "test": ds}, ["zero", "one"])
    with pytest.raises(MtilError, match="outside 0..1"):
        save_prepared(root, "Bad", {"train": (arr, [0, 1, 2, 0]), "test": (arr, [0, 0, 0, 0])}, ["a", "b"])
    with pytest.raises(MtilError, match="missing: test"):
        save_prepared(root, "Bad", {"train": (arr, [0, 1, 0, 1])}, ["a", "b"])
    assert sorted(os.listdir(root)) == ["Copy", "Copy2", "Mixed"]



# -------------------------------------------------------------------------------------------------------- --list
def test_list(small, capsys):
    rc, out, _ = run(["prepare", "--list", "--root", str(small)], capsys)
    assert rc == 0
    lines = out.splitlines()
    for name, count in (("Aircraft", 100), ("StanfordCars", 196), ("SUN397", 397), ("TinyImageNet", 200)):
        row = next(ln for ln in lines if ln.startswith(name + " "))
        assert f" {count} " in row and " no " in row
    small_row = next(ln for ln in lines if ln.startswith("Small "))
    assert " 3 " in small_row and "yes (train 8, test 4)" in small_row and "not registered" in small_row
    rc, out, _ = run(["prepare", "--list", "--root", str(small / "none")], capsys)
    assert rc == 0 and "does not exist yet" in out
