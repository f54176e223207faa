"""`mtil prepare` and the prepared on-disk format: round trips, atomic writes, skipped images, every load error,
sources (image folders, archives, a torchvision layout, offline torchvision / HF), `--list` and `--check`."""
import json
import os
import shutil
import struct
import zipfile

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from mtil.cli import main
from mtil.data import prepared, registry, sources
from mtil.data.prepared import encode, layout, load_info, load_split, save_prepared
from mtil.data.sources import network
from mtil.errors import MtilError


# ------------------------------------------------------------------------------------------------------ helpers
def make_images(folder, classes, per_class=3, size=(12, 8), fmt="png"):
    """folder/<class>/<i>.<fmt>; image i of class c has width size[0] + i and a colour set by the class."""
    for ci, c in enumerate(classes):
        d = folder / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (size[0] + i, size[1]), (40 * ci % 256, 10 * i, 0)).save(d / f"img{i}.{fmt}")


def labels_of(root, name, splits=("train", "test")):
    return [y for split in splits for y in load_split(root, name, split)["label"]]


def run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("mtil: error:")]
    assert len(lines) == 1, err
    return lines[0]


def check_error(capsys, argv, *needles):
    rc, out, err = run(argv, capsys)
    assert rc == 2, (out, err)
    line = one_line_error(err)
    for needle in needles:
        assert needle in line, line
    return line


# ------------------------------------------------------------------------------------------ folder round trips
def test_custom_folder_round_trip_with_templates(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    make_images(src / "train", ["golden_retriever", "tabby_cat"], per_class=3)
    make_images(src / "test", ["golden_retriever", "tabby_cat"], per_class=2)
    rc, out, _ = run(["prepare", "MyPets", "--root", str(root), "--from", str(src),
                      "--template", "a photo of my {}.", "--template", "a {}."], capsys)
    assert rc == 0
    assert "prepared MyPets: 2 classes, train 6, test 4 images" in out
    assert "skipped undecodable images: 0" in out
    assert sorted(os.listdir(root)) == ["MyPets"]          # nothing left beside it (no tmp, work or lock)
    dd = datasets.load_from_disk(str(root / "MyPets"))
    assert set(dd) == {"train", "test"}
    assert dd["train"].features["label"].names == ["golden retriever", "tabby cat"]
    assert isinstance(dd["train"].features["image"], datasets.Image)
    train = load_split(root, "MyPets", "train")
    assert list(train["label"]) == [0, 0, 0, 1, 1, 1]
    assert [im.size for im in train["image"]] == [(12, 8), (13, 8), (14, 8)] * 2
    info = load_info(root, "mypets")                        # case-insensitive folder look-up
    assert info.name == "MyPets" and info.classnames == ["golden retriever", "tabby cat"]
    assert info.templates == ["a photo of my {}.", "a {}."]
    meta = prepared.read_meta(root, "MyPets")
    assert meta["rows"] == {"train": 6, "test": 4} and meta["skipped"] == {"train": 0, "test": 0}


def test_registered_dataset_from_source_folder_names(tmp_path, capsys):
    """EuroSAT's own folder names (AnnualCrop, SeaLake) and CLIP's names land on the registry's labels."""
    src, root = tmp_path / "EuroSAT" / "2750", tmp_path / "data"
    make_images(src, ["AnnualCrop", "SeaLake", "forest"], per_class=5)
    rc, out, _ = run(["prepare", "eurosat", "--root", str(root), "--from", str(tmp_path / "EuroSAT")], capsys)
    assert rc == 0, out
    info = load_info(root, "EuroSAT")
    assert info.num_classes == 10
    train, test = load_split(root, "EuroSAT", "train"), load_split(root, "EuroSAT", "test")
    assert train.features["label"].names == registry.get("EuroSAT").classnames
    assert len(train) == 12 and len(test) == 3             # seeded 80/20 split of 15
    names = {info.classnames[y] for y in list(train["label"]) + list(test["label"])}
    assert names == {"annual crop land", "lake or sea", "forest"}


def test_seeded_split_is_zscl_random_split(tmp_path, capsys):
    n = 37
    train_idx, test_idx = sources.seeded_split(n)
    a, b = torch.utils.data.random_split(range(n), [int(0.8 * n), n - int(0.8 * n)],
                                         generator=torch.Generator().manual_seed(42))
    assert train_idx == list(a.indices) and test_idx == list(b.indices)


def test_tiny_imagenet_native_layout(tmp_path, capsys):
    """train/<wnid>/images/*.JPEG, val/images + val_annotations.txt; the unlabelled test/ is ignored."""
    src, root = tmp_path / "tiny-imagenet-200", tmp_path / "data"
    wnids = ["n01443537", "n12267677"]                      # goldfish, acorn
    for w in wnids:
        make_images(src / "train" / w, ["images"], per_class=2, fmt="JPEG")
    make_images(src / "val", ["images"], per_class=2, fmt="JPEG")
    (src / "val" / "val_annotations.txt").write_text(
        "img0.JPEG\tn12267677\t0\t0\t1\t1\nimg1.JPEG\tn01443537\t0\t0\t1\t1\n")
    make_images(src / "test", ["images"], per_class=2, fmt="JPEG")
    (src / "wnids.txt").write_text("\n".join(wnids))
    rc, out, _ = run(["prepare", "TinyImageNet", "--root", str(root), "--from", str(src)], capsys)
    assert rc == 0, out
    classes = registry.get("TinyImageNet").classnames
    train, test = load_split(root, "TinyImageNet", "train"), load_split(root, "TinyImageNet", "test")
    assert sorted({classes[y] for y in list(train["label"])}) == ["acorn", "goldfish"]
    pairs = sorted((row["image"].size[0], classes[row["label"]]) for row in test)
    assert pairs == [(12, "acorn"), (13, "goldfish")]      # img0 -> n12267677, img1 -> n01443537


def test_nested_sun397_layout_and_caltech_background(tmp_path, capsys):
    root = tmp_path / "data"
    sun = tmp_path / "SUN397"
    make_images(sun / "a", ["abbey", "apartment_building/outdoor"], per_class=5)
    assert run(["prepare", "SUN", "--root", str(root), "--from", str(sun)], capsys)[0] == 0
    classes = registry.get("SUN397").classnames
    labels = labels_of(root, "SUN397")
    assert sorted({classes[y] for y in labels}) == ["abbey", "apartment building outdoor"]

    cal = tmp_path / "caltech-101" / "101_ObjectCategories"  # (caltech101/101_ObjectCategories: torchvision's)
    make_images(cal, ["BACKGROUND_Google", "Faces_easy", "car_side"], per_class=5)
    rc, out, _ = run(["prepare", "Caltech101", "--root", str(root), "--from", str(cal)], capsys)
    assert rc == 0
    assert "BACKGROUND_Google" in out                       # reported as ignored
    classes = registry.get("Caltech101").classnames
    labels = labels_of(root, "Caltech101")
    assert len(labels) == 10 and sorted({classes[y] for y in labels}) == ["centered face", "side of a car"]


def test_numeric_folders_index_base_and_unknown_classes(tmp_path, capsys):
    root = tmp_path / "data"
    make_images(tmp_path / "flowers", ["1", "102"], per_class=5)
    check_error(capsys, ["prepare", "Flowers102", "--root", str(root), "--from", str(tmp_path / "flowers")],
                "'102' is label index 102", "--index-base 1")
    assert run(["prepare", "Flowers102", "--root", str(root), "--from", str(tmp_path / "flowers"),
                "--index-base", "1"], capsys)[0] == 0
    classes = registry.get("Flowers").classnames
    labels = set(labels_of(root, "Flowers102"))
    assert {classes[y] for y in labels} == {"pink primrose", "blackberry lily"}

    make_images(tmp_path / "bad", ["banded", "plaid", "tartan"])
    check_error(capsys, ["prepare", "DTD", "--root", str(root), "--from", str(tmp_path / "bad")],
                "2 class name(s) are not DTD classes", "'plaid'", "'tartan'")
    assert not (root / "DTD").exists()


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


def test_numbered_custom_classes_keep_numeric_order(tmp_path, capsys):
    make_images(tmp_path / "src", ["1", "2", "10"], per_class=5)
    assert run(["prepare", "Numbered", "--root", str(tmp_path / "data"), "--from", str(tmp_path / "src")],
               capsys)[0] == 0
    assert load_info(tmp_path / "data", "Numbered").classnames == ["1", "2", "10"]


def test_max_per_class(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    make_images(src / "train", ["a", "b"], per_class=4)
    make_images(src / "test", ["a", "b"], per_class=3)
    rc, out, _ = run(["prepare", "Few", "--root", str(root), "--from", str(src), "--max-per-class", "2"], capsys)
    assert rc == 0 and "train 4, test 4 images" in out and "left out train 4, test 2 images" in out
    assert list(load_split(root, "Few", "train")["label"]) == [0, 0, 1, 1]


def test_archive_source(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    make_images(src / "shapes" / "train", ["circle", "square"], per_class=2)
    make_images(src / "shapes" / "test", ["circle", "square"], per_class=1)
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(src.rglob("*.png")):
            z.write(p, p.relative_to(src))
    rc, out, _ = run(["prepare", "Shapes", "--root", str(root), "--from", str(archive)], capsys)
    assert rc == 0 and "train 4, test 2 images" in out
    assert sorted(os.listdir(root)) == ["Shapes"]           # the extracted copy is gone


def test_split_file(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    make_images(src, ["banded", "zigzagged"], per_class=4)
    spec = {"train": ["banded/img0.png", "banded/img1.png", ["zigzagged/img0.png", 46]],
            "val": ["banded/img2.png", "zigzagged/img3.png"]}
    (tmp_path / "split.json").write_text(json.dumps(spec))
    assert run(["prepare", "DTD", "--root", str(root), "--from", str(src), "--split-from",
                str(tmp_path / "split.json")], capsys)[0] == 0
    assert list(load_split(root, "DTD", "train")["label"]) == [0, 0, 46]
    assert list(load_split(root, "DTD", "test")["label"]) == [0, 46]


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
    line = check_error(capsys, ["prepare", "DTD", "--check", "--root", str(missing_root)],
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


# ------------------------------------------------------------------------------------- torchvision and the hub
def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    code = 0x0800 | array.ndim
    with open(path, "wb") as f:
        f.write(struct.pack(">I", code) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes())


def test_torchvision_layout_is_read_offline(tmp_path, capsys, monkeypatch):
    """A folder in torchvision's MNIST layout is read through torchvision (class names '0 - zero' mapped)."""
    monkeypatch.setattr(network, "network_available", lambda *a, **k: pytest.fail("no network use expected"))
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(20) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 255, (10, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(10)[::-1])
    root = tmp_path / "data"
    rc, out, _ = run(["prepare", "MNIST", "--root", str(root), "--from", str(tmp_path / "tv"),
                      "--max-per-class", "1"], capsys)
    assert rc == 0 and "torchvision MNIST" in out and "train 10, test 10 images" in out
    test = load_split(root, "MNIST", "test")
    assert list(test["label"]) == list(range(10))[::-1] and test[0]["image"].size == (28, 28)


@pytest.mark.parametrize("argv,needles", [
    (["prepare", "DTD"], ["no network", "download DTD yourself", "mtil prepare DTD --root"]),
    (["prepare", "Pets", "--source", "torchvision"], ["no network", "mtil prepare OxfordPet --root"]),
    (["prepare", "CIFAR100", "--source", "hf"], ["no network", "mtil prepare CIFAR100 --root"]),
    (["prepare", "TinyImageNet"], ["no network", "mtil prepare TinyImageNet --root"]),
    (["prepare", "Cars"], ["no network", "mtil prepare StanfordCars --root"]),
    (["prepare", "Cars", "--source", "torchvision"], ["cannot download StanfordCars"]),
])
def test_no_network_fails_in_one_line(tmp_path, capsys, monkeypatch, argv, needles):
    monkeypatch.setattr(network, "network_available", lambda *a, **k: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not try the hub"))
    root = tmp_path / "data"
    check_error(capsys, argv + ["--root", str(root)], *needles)
    assert not root.exists()


def test_hf_offline_cache_miss_is_one_line(tmp_path, capsys):
    """With HF_HUB_OFFLINE=1 (conftest) the hub source only looks in the cache, and says what to do."""
    check_error(capsys, ["prepare", "MNIST", "--source", "hf", "--root", str(tmp_path / "data"), "--cache-dir",
                         str(tmp_path / "hf-cache")], "no network", "HF_HUB_OFFLINE", "mtil prepare MNIST --root")


def test_hf_source_maps_labels_by_name(tmp_path, capsys, monkeypatch):
    """A hub dataset whose ClassLabel order differs from the registry's is remapped by class name."""
    feats = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(
        names=["oak_tree", "apple", "whale"])})
    imgs = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(3)]
    fake = datasets.DatasetDict({s: datasets.Dataset.from_dict({"img": imgs, "fine_label": [0, 1, 2]}, features=feats)
                                 for s in ("train", "test")})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: fake)
    root = tmp_path / "data"
    assert run(["prepare", "CIFAR100", "--source", "hf", "--root", str(root)], capsys)[0] == 0
    classes = registry.get("CIFAR100").classnames
    assert [classes[y] for y in list(load_split(root, "CIFAR100", "test")["label"])] == ["oak tree", "apple", "whale"]


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
