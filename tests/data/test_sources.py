"""`mtil prepare` from each source kind: image folders (layouts, class names, label indices, split files),
archives, a torchvision layout, offline torchvision / HF, labels mapped by name."""
import json
import os
import struct
import zipfile

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from prepare_helpers import check_error, make_images, planned, planned_labels, run

from mtil.data import prepared, registry, sources
from mtil.data.prepared import load_info, load_split
from mtil.data.sources import network


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
    folders = [n for n in registry.source_names("EuroSAT") if n != "Forest"] + ["forest"]   # one by CLIP's name
    make_images(src, folders, per_class=5)
    rc, out, _ = run(["prepare", "eurosat", "--root", str(root), "--from", str(tmp_path / "EuroSAT")], capsys)
    assert rc == 0, out
    info = load_info(root, "EuroSAT")
    assert info.num_classes == 10
    train, test = load_split(root, "EuroSAT", "train"), load_split(root, "EuroSAT", "test")
    assert train.features["label"].names == registry.get("EuroSAT").classnames
    assert len(train) == 40 and len(test) == 10            # seeded 80/20 split of 5 per class
    names = {info.classnames[y] for y in list(train["label"]) + list(test["label"])}
    assert names == set(registry.get("EuroSAT").classnames)


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
    plan = planned("TinyImageNet", tmp_path, src=src)
    classes = registry.get("TinyImageNet").classnames
    assert sorted({classes[y] for y in planned_labels(plan, "train")}) == ["acorn", "goldfish"]
    pairs = sorted((Image.open(p).size[0], classes[y]) for p, y in plan.splits["test"])
    assert pairs == [(12, "acorn"), (13, "goldfish")]      # img0 -> n12267677, img1 -> n01443537
    # 198 of the 200 classes have no training image: refused, nothing written
    check_error(capsys, ["prepare", "TinyImageNet", "--root", str(root), "--from", str(src)],
                "198 class(es) have no training image", "nothing was written")
    assert not root.exists()


def test_nested_sun397_layout_and_caltech_background(tmp_path):
    sun = tmp_path / "SUN397"
    make_images(sun / "a", ["abbey", "apartment_building/outdoor"], per_class=5)
    plan = planned("SUN", tmp_path, src=sun)
    classes = registry.get("SUN397").classnames
    labels = planned_labels(plan, "train") + planned_labels(plan, "test")
    assert sorted({classes[y] for y in labels}) == ["abbey", "apartment building/outdoor"]

    cal = tmp_path / "caltech-101" / "101_ObjectCategories"  # (caltech101/101_ObjectCategories: torchvision's)
    make_images(cal, ["BACKGROUND_Google", "Faces_easy", "car_side"], per_class=5)
    plan = planned("Caltech101", tmp_path, src=cal)
    assert any("BACKGROUND_Google" in note for note in plan.notes)   # reported as ignored
    classes = registry.get("Caltech101").classnames
    labels = planned_labels(plan, "train") + planned_labels(plan, "test")
    assert len(labels) == 10 and sorted({classes[y] for y in labels}) == ["centered face", "side of a car"]


def test_numeric_folders_index_base_and_unknown_classes(tmp_path, capsys):
    root = tmp_path / "data"
    make_images(tmp_path / "flowers", ["1", "102"], per_class=5)
    check_error(capsys, ["prepare", "Flowers102", "--root", str(root), "--from", str(tmp_path / "flowers")],
                "'102' is label index 102", "--index-base 1")
    plan = planned("Flowers102", tmp_path, src=tmp_path / "flowers", index_base=1)
    classes = registry.get("Flowers").classnames
    labels = set(planned_labels(plan, "train") + planned_labels(plan, "test"))
    assert {classes[y] for y in labels} == {"pink primrose", "blackberry lily"}

    make_images(tmp_path / "bad", ["banded", "plaid", "tartan"])
    check_error(capsys, ["prepare", "DTD", "--root", str(root), "--from", str(tmp_path / "bad")],
                "2 class name(s) are not DTD classes", "'plaid'", "'tartan'")
    assert not (root / "DTD").exists()


def test_numbered_custom_classes_keep_numeric_order(tmp_path, capsys):
    make_images(tmp_path / "src", ["1", "2", "10"], per_class=5)
    assert run(["prepare", "Numbered", "--root", str(tmp_path / "data"), "--from", str(tmp_path / "src")],
               capsys)[0] == 0
    assert load_info(tmp_path / "data", "Numbered").classnames == ["1", "2", "10"]


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


def test_split_file(tmp_path):
    src = tmp_path / "src"
    make_images(src, ["banded", "zigzagged"], per_class=4)
    spec = {"train": ["banded/img0.png", "banded/img1.png", ["zigzagged/img0.png", 46]],
            "val": ["banded/img2.png", "zigzagged/img3.png"]}
    (tmp_path / "split.json").write_text(json.dumps(spec))
    plan = planned("DTD", tmp_path, src=src, split_from=tmp_path / "split.json")
    assert planned_labels(plan, "train") == [0, 0, 46]
    assert planned_labels(plan, "test") == [0, 46]


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
    plan = planned("CIFAR100", tmp_path, source="hf")
    classes = registry.get("CIFAR100").classnames
    assert [classes[y] for y in planned_labels(plan, "test")] == ["oak tree", "apple", "whale"]
