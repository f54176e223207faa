"""The reference's splits from the official files, labels mapped by class name in every split, one-line failures
(ZSCL's / MoE-Adapters' collections.py: torchvision's DTD train1/test1, Food101 meta/train|test.json,
OxfordIIITPet trainval/test, SUN397 random_split(seed 42) over torchvision's file order)."""
import struct
import tarfile

import numpy as np
import pytest
import torch

from mtil import config
from mtil.data import pipeline, registry
from mtil.data.fake import fake_prepared
from mtil.data.prepared import save_prepared
from prepare_helpers import check_error, make_dtd, make_food101, make_pets, planned, rows_of, run

DTD = registry.get("DTD").classnames
FOOD = [c.replace(" ", "_") for c in registry.get("Food101").classnames]
PETS = [(c.replace(" ", "_"), i + 1) for i, c in enumerate(registry.get("OxfordPet", "clip").classnames)]


def _prepare(capsys, name, root, src, *extra):
    rc, out, err = run(["prepare", name, "--root", str(root), "--from", str(src), *extra], capsys)
    assert rc == 0, err
    return out


def test_dtd_official_folder_archive_and_torchvision_layout_give_the_same_rows(tmp_path, capsys):
    make_dtd(tmp_path / "tv" / "dtd" / "dtd", DTD, per_split=1)            # torchvision's nesting
    official = make_dtd(tmp_path / "hand" / "dtd", DTD, per_split=1)         # dtd-r1.0.1.tar.gz, extracted by hand
    with tarfile.open(tmp_path / "dtd-r1.0.1.tar.gz", "w:gz") as t:
        t.add(official, arcname="dtd")
    rows = {}
    for key, src in (("tv", tmp_path / "tv"), ("hand", official), ("archive", tmp_path / "dtd-r1.0.1.tar.gz")):
        out = _prepare(capsys, "DTD", tmp_path / key / "data", src)
        assert "torchvision DTD" in out and "train 47, test 47 images" in out     # train1 / test1, not val1
        rows[key] = {s: rows_of(tmp_path / key / "data", "DTD", s) for s in ("train", "test")}
    assert rows["tv"] == rows["hand"] == rows["archive"]
    assert rows["hand"]["train"][:2] == [(10, "banded"), (10, "blotchy")]    # image 0 of each class: train1
    assert rows["hand"]["test"][:2] == [(12, "banded"), (12, "blotchy")]     # image 2: test1 (1: val1, left out)


@pytest.mark.parametrize("nesting", ["official", "torchvision"])
def test_dtd_test_split_without_a_class_keeps_every_label(tmp_path, capsys, nesting):
    """torchvision builds DTD's class list per split: a test1.txt without 'blotchy' shifted every later test row by
    one class when the training split's list was reused."""
    folder = tmp_path / "src" / "dtd" / ("dtd" if nesting == "torchvision" else "")
    make_dtd(folder, DTD, per_split=1, drop_from_test=("blotchy",))
    out = _prepare(capsys, "DTD", tmp_path / "data", tmp_path / "src")
    assert "train 47, test 46 images" in out
    assert rows_of(tmp_path / "data", "DTD", "test") == sorted((12, c) for c in DTD if c != "blotchy")


def test_food101_test_json_without_a_class_keeps_every_label(tmp_path, capsys):
    make_food101(tmp_path / "food-101", FOOD, per_split=1, drop_from_test=("apple_pie",))
    out = _prepare(capsys, "Food101", tmp_path / "data", tmp_path / "food-101")
    assert "train 101, test 100 images" in out
    names = registry.get("Food101").classnames
    assert rows_of(tmp_path / "data", "Food101", "test") == sorted((11, c) for c in names if c != "apple pie")
    assert rows_of(tmp_path / "data", "Food101", "train") == sorted((10, c) for c in names)


def test_food101_renamed_official_folder_is_read_through_torchvision(tmp_path, capsys):
    make_food101(tmp_path / "my-food", FOOD, per_split=1)
    out = _prepare(capsys, "Food101", tmp_path / "data", tmp_path / "my-food")
    assert "torchvision Food101 (the official files in" in out and "my-food" in out


def test_pets_label_outside_the_class_ids_maps_by_breed(tmp_path, capsys):
    """OxfordIIITPet's labels are class ids; a row whose id lies outside the listed breeds ended in an IndexError.
    Breeds are read from the file names (as torchvision names them), so the row lands on its breed."""
    folder = make_pets(tmp_path / "oxford-iiit-pet", PETS, per_split=1)
    test = folder / "annotations" / "test.txt"
    test.write_text(test.read_text().replace("Abyssinian_2 1 1 1", "Abyssinian_2 40 1 1"))
    _prepare(capsys, "OxfordPet", tmp_path / "data", tmp_path)
    assert (12, "Abyssinian") in rows_of(tmp_path / "data", "OxfordPet", "test")


def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
                + array.tobytes())


def test_mnist_label_outside_its_classes_is_one_line(tmp_path, capsys):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte", np.zeros((10, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(10))
    _write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", [3, 12])
    root = tmp_path / "data"
    check_error(capsys, ["prepare", "MNIST", "--root", str(root), "--from", str(tmp_path)],
                "MNIST split 'test': label 12 lies outside the 10 classes", "re-extract")
    assert not root.exists()


def test_partial_official_copy_is_refused_naming_what_is_missing(tmp_path, capsys):
    folder = make_dtd(tmp_path / "dtd", DTD[:3])
    (folder / "labels" / "test1.txt").unlink()
    check_error(capsys, ["prepare", "DTD", "--root", str(tmp_path / "data"), "--from", str(folder)],
                "holds part of DTD's files", "not labels/test1.txt", "images, labels/train1.txt, labels/test1.txt")


def test_torchvision_not_found_is_rephrased_without_its_download_option(tmp_path, capsys):
    (tmp_path / "food-101" / "meta").mkdir(parents=True)       # torchvision's marker, but no images/
    line = check_error(capsys, ["prepare", "Food101", "--root", str(tmp_path / "data"), "--from", str(tmp_path)],
                       "torchvision finds no complete Food101", "--from DIR", "meta/train.json")
    assert "download=True" not in line


def test_check_catches_a_class_list_out_of_the_registry_order(tmp_path, capsys):
    swapped = [DTD[1], DTD[0], *DTD[2:]]
    images = np.zeros((47, 4, 4, 3), np.uint8)
    save_prepared(tmp_path, "DTD", {s: (images, list(range(47))) for s in ("train", "test")}, swapped)
    check_error(capsys, ["prepare", "DTD", "--root", str(tmp_path), "--check"],
                "calls label 0 'blotchy', which is DTD's label 1", "do not match DTD's class list", "--overwrite")
    fake_prepared(tmp_path / "ok", "SUN397", per_class=1)      # the reference names; CLIP's would pass too
    rc, out, _ = run(["prepare", "SUN397", "--root", str(tmp_path / "ok"), "--check"], capsys)
    assert rc == 0 and "-> ok" in out


def _sun397(root, per_class=6):
    folder = root / "SUN397"
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]
    (folder).mkdir(parents=True)
    (folder / "ClassName.txt").write_text("\n".join(classes) + "\n")
    for ci, c in enumerate(classes):
        for i in range(per_class):
            d = folder / c.lstrip("/")
            d.mkdir(parents=True, exist_ok=True)
            from PIL import Image
            Image.new("RGB", (10 + i, 8), (60 * ci, 0, 0)).save(d / f"sun_{(7 * i + 3 * ci) % 17:02d}x{ci}.jpg")
    return folder


def test_sun397_split_is_zscls_random_split_over_sorted_or_listed_files(tmp_path):
    import torchvision

    _sun397(tmp_path)
    for order in ("sorted", "listing"):
        plan = planned("SUN397", tmp_path, src=tmp_path, file_order=order)
        listed = [str(p) for p in torchvision.datasets.SUN397(str(tmp_path))._image_files]
        files = sorted(listed) if order == "sorted" else listed
        perm = torch.randperm(18, generator=torch.Generator().manual_seed(42)).tolist()   # ZSCL's random_split
        assert [p for p, _ in plan.splits["train"]] == [files[i] for i in perm[:14]]
        assert [p for p, _ in plan.splits["test"]] == [files[i] for i in perm[14:]]
        names = registry.get("SUN397").classnames
        assert {names[y] for _, y in plan.splits["test"]} <= {"abbey", "apartment building/outdoor", "bakery/shop"}
        assert f"files {order}" in plan.description


def test_file_order_is_for_sun397_through_torchvision_only(tmp_path, capsys):
    make_dtd(tmp_path / "dtd", DTD[:2])
    check_error(capsys, ["prepare", "DTD", "--root", str(tmp_path / "d"), "--from", str(tmp_path / "dtd"),
                         "--file-order", "listing"], "--file-order applies to SUN397 only")
    (tmp_path / "sun" / "a" / "abbey").mkdir(parents=True)
    check_error(capsys, ["prepare", "SUN397", "--root", str(tmp_path / "d"), "--from", str(tmp_path / "sun"),
                         "--file-order", "listing"], "needs SUN397 in torchvision's layout", "ClassName.txt")


def test_data_class_names_chooses_the_name_set(tmp_path):
    fake_prepared(tmp_path, "MNIST")
    for name_set, first in (("reference", "0 - zero"), ("clip", "0")):
        cfg = config.load(None, [f"data.root={tmp_path}", f"data.class_names={name_set}"])
        task = pipeline.load_task(cfg.data, "MNIST", 0)
        assert task.classnames[0] == first and task.prompts(False)[0] == [f'a photo of the number: "{first}".']


def test_hf_splits_with_their_own_label_names_map_by_name(tmp_path, monkeypatch):
    import datasets
    from PIL import Image

    def split(names, labels):
        feats = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=names)})
        imgs = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(len(labels))]
        return datasets.Dataset.from_dict({"img": imgs, "fine_label": labels}, features=feats)
    fake = datasets.DatasetDict({"train": split(["apple", "oak_tree", "whale"], [0, 1, 2]),
                                 "test": split(["oak_tree", "whale"], [0, 1])})   # the test split lists 2 classes
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: fake)
    plan = planned("CIFAR100", tmp_path, source="hf")
    classes = registry.get("CIFAR100").classnames
    assert [classes[y] for _, y in plan.splits["test"]] == ["oak tree", "whale"]
    assert [classes[y] for _, y in plan.splits["train"]] == ["apple", "oak tree", "whale"]


def test_flowers_official_files_in_any_folder_are_read_through_torchvision(tmp_path, monkeypatch):
    from PIL import Image
    from scipy.io import savemat
    from torchvision.datasets import flowers102

    monkeypatch.setattr(flowers102, "check_integrity", lambda *a: True)   # the fake .mat files lack the md5 sums

    folder = tmp_path / "my-flowers"
    (folder / "jpg").mkdir(parents=True)
    for i in (1, 2, 3, 4, 5, 6):
        Image.new("RGB", (9 + i, 8)).save(folder / "jpg" / f"image_{i:05d}.jpg")
    savemat(folder / "imagelabels.mat", {"labels": np.array([[1, 5, 102, 60, 7, 8]])})
    savemat(folder / "setid.mat", {"trnid": np.array([[1, 4]]), "valid": np.array([[5, 6]]),
                                   "tstid": np.array([[2, 3]])})
    plan = planned("Flowers102", tmp_path, src=folder)
    assert "the official files in" in plan.description and "my-flowers" in plan.description
    assert [y for _, y in plan.splits["train"]] == [0, 59]
    assert [y for _, y in plan.splits["test"]] == [4, 101]     # 1-based labels of setid's tstid; valid unused
