"""Helpers of the data-layer tests: image folders on disk, fake copies of official releases, and `mtil` runs that
must fail in one line."""
import json

from PIL import Image

from mtil.cli import main
from mtil.data.prepared import load_split


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


def planned(name, tmp_path, **kw):
    """The plan `mtil prepare NAME` would write (source, class names, (image, label) items per split). Tests of
    label mapping read it: a registered dataset given only some of its classes, as they give, is refused when
    written (classes without a training image)."""
    from mtil.data import sources
    work = tmp_path / "plan-work"
    work.mkdir(exist_ok=True)
    return sources.plan(name, tmp_path / "data", work, **kw)


def planned_labels(plan, split):
    return [y for _, y in plan.splits[split]]


# ----------------------------------------------------------------------------- fake copies of official releases
def _image(path, colour, width=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, 8), colour).save(path, format="JPEG")


def make_dtd(folder, classes=("banded", "blotchy", "braided"), per_split=2, drop_from_test=()):
    """DTD's official layout (what dtd-r1.0.1.tar.gz holds under dtd/): folder/images/<class>/<class>_000i.jpg and
    folder/labels/{train1,val1,test1}.txt listing `<class>/<file>` (per_split images of each class in each); a
    class in `drop_from_test` has no test1.txt line. Image width = 10 + index in the class (a row's identity)."""
    lines = {"train1": [], "val1": [], "test1": []}
    for ci, c in enumerate(classes):
        for k, split in enumerate(lines):
            for j in range(per_split):
                i = k * per_split + j
                _image(folder / "images" / c / f"{c}_{i:04d}.jpg", (40 * ci % 256, 0, 0), 10 + i)
                if not (split == "test1" and c in drop_from_test):
                    lines[split].append(f"{c}/{c}_{i:04d}.jpg")
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        (folder / "labels" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return folder


def make_food101(folder, classes=("apple_pie", "baby_back_ribs", "baklava"), per_split=2, drop_from_test=()):
    """Food-101's official layout (food-101.tar.gz: food-101/): folder/images/<class>/<id>.jpg and
    folder/meta/{train,test}.json ({class: ["<class>/<id>", ...]}); a class in `drop_from_test` is absent from
    test.json."""
    meta = {"train": {}, "test": {}}
    for ci, c in enumerate(classes):
        for k, split in enumerate(meta):
            ids = [f"{c}/{1000 * ci + k * per_split + j}" for j in range(per_split)]
            for j, rel in enumerate(ids):
                _image(folder / "images" / f"{rel}.jpg", (0, 40 * ci % 256, 0), 10 + k * per_split + j)
            if not (split == "test" and c in drop_from_test):
                meta[split][c] = ids
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    for split, rows in meta.items():
        (folder / "meta" / f"{split}.json").write_text(json.dumps(rows))
    return folder


def make_pets(folder, breeds=(("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 6)), per_split=2,
              drop_from_test=()):
    """The Oxford-IIIT Pet layout (images.tar.gz + annotations.tar.gz extracted side by side):
    folder/images/<breed>_<n>.jpg, folder/annotations/{trainval,test}.txt with `<breed>_<n> <class id> 1 1`."""
    rows = {"trainval": [], "test": []}
    for breed, cid in breeds:
        for k, split in enumerate(rows):
            for j in range(per_split):
                n = k * per_split + j + 1
                _image(folder / "images" / f"{breed}_{n}.jpg", (0, 0, 7 * cid % 256), 10 + n)
                if not (split == "test" and breed in drop_from_test):
                    rows[split].append(f"{breed}_{n} {cid} 1 1")
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        (folder / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def rows_of(root, name, split):
    """(image width, class name) of every row of a prepared split, sorted (the widths identify the images)."""
    ds = load_split(root, name, split)
    names = ds.features["label"].names
    return sorted((row["image"].size[0], names[row["label"]]) for row in ds)
