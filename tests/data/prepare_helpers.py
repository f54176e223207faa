"""Helpers of the data-layer tests: image folders on disk and `mtil` runs that must fail in one line."""
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
